"""Subscriptions and delivery: Standard Webhooks on the wire, verified by the official library;
retries, Retry-After, 410, redirects, timeouts, huge bodies; egress refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web
from asgi_lifespan import LifespanManager
from sqlalchemy import event, select
from standardwebhooks import Webhook

from tests.factories import T0, add_job, add_subscription
from tests.notify.receivers import Receiver
from tracker.app import create_app
from tracker.config import Settings
from tracker.db import Database
from tracker.models import Delivery, DeliveryAttempt, JobState
from tracker.notify import relay as relay_module
from tracker.notify.attempts import AttemptResult, record_attempts, retry_delay
from tracker.notify.claims import Claimed, claim, due_targets, next_due
from tracker.notify.signing import sign, webhook_headers
from tracker.transitions import Outcome, apply_outcome

FAST = [timedelta(0), timedelta(milliseconds=200), timedelta(milliseconds=200)]


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    wh = Webhook(secret)
    at = datetime.fromtimestamp(1614265330, UTC)
    assert wh.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", at, body.decode()) == expected


def test_rotation_signs_twice_and_either_secret_verifies() -> None:
    old, new = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
    )
    now = int(datetime.now(UTC).timestamp())
    headers = webhook_headers([new, old], "chg_1", now, b'{"type":"job.failed"}')
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(b'{"type":"job.failed"}', headers) == {"type": "job.failed"}


def test_retry_delays_follow_the_schedule_with_jitter_and_retry_after() -> None:
    schedule = [timedelta(0), timedelta(seconds=5), timedelta(minutes=5)]
    for _ in range(50):
        delay = retry_delay(schedule, 1, None)
        assert delay is not None
        assert timedelta(seconds=4) <= delay <= timedelta(seconds=6)
    assert retry_delay(schedule, 3, None) is None  # spent: the dead letter
    later = retry_delay(schedule, 1, timedelta(minutes=2))
    assert later == timedelta(minutes=2)


# --- through the app, to a receiver on loopback -------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    await rx.start()
    yield rx
    await rx.stop()


def notify_settings(database_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "scheduler": "off",
        "notify_allow_private": "on",  # the receiver is on loopback
        "notify_retry_schedule": FAST,
        "notify_timeout": timedelta(seconds=1),
        **extra,
    }
    return Settings(**values)


@asynccontextmanager
async def running(database_url: str, **extra: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its relay running on the real clock."""
    app = create_app(notify_settings(database_url, **extra))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield http


@pytest.fixture(params=["off", "on"], ids=["in-process", "courier"])
async def live(
    database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    """The app; its requests made in its process, or by the courier's child process."""
    async with running(database_url, notify_courier=request.param) as http:
        yield http


async def subscribe(http: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    answer = await http.post("/subscriptions", json={"url": url, **body})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def finish(database: Database, job_id: str, status: str = "success") -> None:
    outcome = Outcome(job_id=job_id, type="AIVideoTag", status=status, media_id="m1")
    async with database.write() as session:
        await apply_outcome(session, outcome, datetime.now(UTC))


async def deliveries(database: Database) -> list[Delivery]:
    async with database.session() as session:
        return list(await session.scalars(select(Delivery).order_by(Delivery.id)))


async def attempts(database: Database) -> list[DeliveryAttempt]:
    async with database.session() as session:
        return list(await session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))


async def settled(database: Database, status: str, count: int = 1) -> None:
    for _ in range(200):
        if sum(d.status == status for d in await deliveries(database)) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {count} {status} deliveries: {await deliveries(database)}")


async def test_a_change_is_delivered_signed_and_verified_by_the_official_library(
    live: httpx.AsyncClient, receiver: Receiver, database: Database
) -> None:
    sub = await subscribe(live, receiver.url, description="pipeline")
    assert sub["secret"].startswith("whsec_")
    assert sub["enabled"] is True
    assert "job.succeeded" in sub["event_types"]
    receiver.secret = sub["secret"]
    await add_job(database, "j1", JobState.PROCESSING, media_id="m1")
    await finish(database, "j1")
    await receiver.wait_for(2)  # the job became known (submitted), then succeeded
    first, second = receiver.received[:2]
    assert first.verified
    assert second.verified
    assert [r.payload["type"] for r in receiver.received[:2]] == ["job.submitted", "job.succeeded"]
    shown = (await live.get("/jobs/j1")).json()
    data = second.payload["data"]
    assert data.pop("previous_state") == "processing"
    seq = data.pop("seq")
    assert data == shown
    assert second.headers["webhook-id"] == f"chg_{seq}"
    assert second.payload["timestamp"] == shown["updated_at"]
    await settled(database, "succeeded", 2)
    listed = (await live.get(f"/subscriptions/{sub['id']}/deliveries")).json()
    assert [item["status"] for item in listed["items"]] == ["succeeded", "succeeded"]
    assert listed["items"][0]["attempts"][0]["status_code"] == 204


@pytest.mark.parametrize("courier", ["off", "on"], ids=["in-process", "courier"])
async def test_a_cookie_a_receiver_sets_is_never_sent_back(
    database_url: str, receiver: Receiver, database: Database, courier: str
) -> None:
    """Kept, it would go with every later request to that host: other subscriptions' too."""

    async def cookie(request: web.Request, n: int) -> web.StreamResponse:
        answer = web.Response(status=204)
        answer.set_cookie("session", f"tenant-{n}")
        return answer

    receiver.behaviour = cookie
    by_name = receiver.url.replace("127.0.0.1", "localhost")  # no jar keeps an address's cookies
    async with running(database_url, notify_courier=courier, notify_concurrency=1) as live:
        await subscribe(live, f"{by_name}/a")
        await subscribe(live, f"{by_name}/b")
        await add_job(database, "j1", JobState.PROCESSING)
        await finish(database, "j1")
        await receiver.wait_for(4)  # two changes, two subscriptions, one request at a time each
    assert [r.headers.get("cookie") for r in receiver.received] == [None] * 4


async def test_event_types_filter_on_the_producer_side(
    live: httpx.AsyncClient, receiver: Receiver, database: Database
) -> None:
    await subscribe(live, receiver.url, event_types=["job.failed"])
    await add_job(database, "j1", JobState.PROCESSING)
    await add_job(database, "j2", JobState.PROCESSING)
    await finish(database, "j1", "success")
    await finish(database, "j2", "fail")
    await receiver.wait_for(1)
    await asyncio.sleep(0.3)
    assert [r.payload["type"] for r in receiver.received] == ["job.failed"]


async def test_a_failing_receiver_is_retried_on_the_schedule_then_succeeds(
    live: httpx.AsyncClient, receiver: Receiver, database: Database
) -> None:
    async def flaky(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500 if n < 2 else 200, text="nope" if n < 2 else "ok")

    receiver.behaviour = flaky
    sub = await subscribe(live, receiver.url, event_types=["job.succeeded"])
    receiver.secret = sub["secret"]
    await add_job(database, "j1", JobState.PROCESSING)
    await finish(database, "j1")
    await receiver.wait_for(3)
    assert all(r.verified for r in receiver.received)
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # stable across retries
    await settled(database, "succeeded")
    tried = await attempts(database)
    assert [a.status_code for a in tried] == [500, 500, 200]
    assert tried[0].response_body == "nope"


async def test_the_last_failure_is_the_dead_letter_and_retry_sends_again(
    live: httpx.AsyncClient, receiver: Receiver, database: Database
) -> None:
    async def down(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503 if n < 3 else 200)

    receiver.behaviour = down
    sub = await subscribe(live, receiver.url, event_types=["job.succeeded"])
    await add_job(database, "j1", JobState.PROCESSING)
    await finish(database, "j1")
    await settled(database, "failed")
    (dead,) = await deliveries(database)
    assert dead.attempts == len(FAST)
    answer = await live.post(f"/deliveries/{dead.id}/retry")
    assert answer.status_code == 202
    await settled(database, "succeeded")
    listed = (await live.get(f"/subscriptions/{sub['id']}/deliveries")).json()
    assert [a["trigger"] for a in listed["items"][0]["attempts"]] == [
        "scheduled",
        "scheduled",
        "scheduled",
        "manual",
    ]


async def test_replay_requeues_failed_deliveries_since_a_time(
    live: httpx.AsyncClient, receiver: Receiver, database: Database
) -> None:
    async def down(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500 if n < 6 else 200)

    receiver.behaviour = down
    sub = await subscribe(live, receiver.url, event_types=["job.succeeded"])
    await add_job(database, "j1", JobState.PROCESSING)
    await add_job(database, "j2", JobState.PROCESSING)
    await finish(database, "j1")
    await finish(database, "j2")
    await settled(database, "failed", 2)
    answer = await live.post(
        f"/subscriptions/{sub['id']}/replay", json={"since": "2000-01-01T00:00:00Z"}
    )
    assert (answer.status_code, answer.json()) == (202, {"queued": 2})
    await settled(database, "succeeded", 2)


async def test_gone_disables_the_subscription_and_skips_what_is_pending(
    database_url: str, receiver: Receiver, database: Database
) -> None:
    release = asyncio.Event()

    async def gone(request: web.Request, n: int) -> web.StreamResponse:
        await release.wait()  # until the second change is pending
        return web.Response(status=410)

    receiver.behaviour = gone
    async with running(
        database_url, notify_concurrency=1, notify_timeout=timedelta(seconds=10)
    ) as live:
        sub = await subscribe(live, receiver.url, event_types=["job.succeeded"])
        await add_job(database, "j1", JobState.PROCESSING)
        await finish(database, "j1")
        await receiver.wait_for(1)
        await add_job(database, "j2", JobState.PROCESSING)
        await finish(database, "j2")
        for _ in range(200):  # fanned out; one request at a time: it waits
            if len(await deliveries(database)) == 2:
                break
            await asyncio.sleep(0.05)
        release.set()
        await settled(database, "failed")
        shown = (await live.get(f"/subscriptions/{sub['id']}")).json()
        assert shown["enabled"] is False
        assert "410" in shown["disabled_reason"]
        exposed = (await live.get("/metrics")).text
        assert "tracker_subscriptions_disabled 1.0" in exposed
        assert 'tracker_webhook_attempts_total{result="failed"}' in exposed
        await add_job(database, "j3", JobState.PROCESSING)
        await finish(database, "j3")
        await asyncio.sleep(0.5)
    assert len(receiver.received) == 1
    assert [d.status for d in await deliveries(database)] == ["failed", "skipped"]


async def test_a_delivery_whose_lease_runs_short_in_the_queue_is_given_back_unsent(
    database_url: str, receiver: Receiver, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A quick receiver gets deliveries claimed ahead; when it turns slow, those that waited
    for a slot until their lease could not cover a request go back to pending, unsent (no
    attempt), and are sent later: every attempt recorded is one request received."""

    async def slowing(request: web.Request, n: int) -> web.StreamResponse:
        if 6 <= n < 8:
            await asyncio.sleep(1.3)  # beyond the 1 s timeout
        return web.Response(status=204)

    receiver.behaviour = slowing
    caplog.set_level("INFO", logger="tracker.notify")
    async with running(database_url, notify_concurrency=1) as live:
        await subscribe(live, receiver.url, event_types=["job.succeeded"])
        for n in range(6):  # successes, turn after turn: the claims ahead grow
            await add_job(database, f"q{n}", JobState.PROCESSING)
            await finish(database, f"q{n}")
            await receiver.wait_for(n + 1)
        for n in range(6, 18):
            await add_job(database, f"q{n}", JobState.PROCESSING)
        async with database.write() as session:  # twelve changes in one commit
            for n in range(6, 18):
                outcome = Outcome(
                    job_id=f"q{n}", type="AIVideoTag", status="success", media_id="m1"
                )
                await apply_outcome(session, outcome, datetime.now(UTC))
        await settled(database, "succeeded", 18)
    assert "given back unsent" in caplog.text
    sent: dict[int, int] = {}
    for attempt in await attempts(database):
        sent[attempt.delivery_id] = sent.get(attempt.delivery_id, 0) + 1
    by_seq = {d.id: d.change_seq for d in await deliveries(database)}
    requests: dict[int, int] = {}
    for r in receiver.received:
        seq = int(r.headers["webhook-id"].removeprefix("chg_"))
        requests[seq] = requests.get(seq, 0) + 1
    assert {by_seq[i]: n for i, n in sent.items()} == requests


@pytest.mark.parametrize("stuck", [False, True])
async def test_the_relay_in_serve_gives_way_to_callbacks_at_capacity(
    database_url: str,
    receiver: Receiver,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    stuck: bool,
) -> None:
    """While the inbox records at capacity nothing is sent; once it is not, the delivery goes.
    Stuck at capacity, it still goes after GIVE_WAY_MAX per turn and request: never starved."""
    monkeypatch.setattr(relay_module, "GIVE_WAY_MAX", 0.3 if stuck else 30.0)
    app = create_app(notify_settings(database_url))
    async with LifespanManager(app):
        context = app.state.context
        assert context.relay.busy == context.inbox.busy
        busy = True
        context.relay.busy = lambda: busy
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            await subscribe(http, receiver.url, event_types=["job.succeeded"])
        await add_job(context.database, "busy1", JobState.PROCESSING, media_id="m1")
        await finish(context.database, "busy1")  # its commit wakes the relay at once
        if not stuck:
            await asyncio.sleep(1.0)
            assert receiver.received == []
            busy = False
        await receiver.wait_for(1)
    assert [r.payload["data"]["job_id"] for r in receiver.received] == ["busy1"]


async def test_an_idle_relay_takes_no_turn_per_commit_until_a_subscription_comes(
    database_url: str, receiver: Receiver, database: Database
) -> None:
    """With no enabled subscription the relay's turns find nothing: the commits that wake it
    start none until a poll; a subscription created in the process ends that at once."""
    app = create_app(notify_settings(database_url))
    async with LifespanManager(app):
        context = app.state.context
        relay = context.relay
        relay.poll_seconds = 60.0  # however slow the machine: no turn comes from the poll
        await add_job(context.database, "idle0", JobState.PROCESSING)  # a turn goes quiet
        await asyncio.sleep(0.3)
        turns = 0
        run_once = relay.run_once

        async def counted() -> float:
            nonlocal turns
            turns += 1
            return await run_once()

        relay.run_once = counted
        for n in range(20):  # each commit wakes the relay
            await add_job(context.database, f"idle{n + 1}", JobState.PROCESSING)
        await asyncio.sleep(0.3)
        assert turns == 0
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            await subscribe(http, receiver.url, event_types=["job.succeeded"])
        await finish(context.database, "idle1")
        await receiver.wait_for(1, within=5.0)
        assert turns > 0


async def test_retry_after_is_honoured(
    live: httpx.AsyncClient, receiver: Receiver, database: Database
) -> None:
    async def busy(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=429, headers={"Retry-After": "120"})

    receiver.behaviour = busy
    await subscribe(live, receiver.url, event_types=["job.succeeded"])
    await add_job(database, "j1", JobState.PROCESSING)
    await finish(database, "j1")
    await receiver.wait_for(1)
    for _ in range(100):
        (delivery,) = await deliveries(database)
        if delivery.attempts == 1:
            break
        await asyncio.sleep(0.05)
    assert delivery.status == "pending"
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at - datetime.now(UTC) > timedelta(seconds=100)


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("redirect", "HTTP 302"),
        ("hang", "timeout"),
        ("huge", "HTTP 500"),
        ("reset", "Error"),
    ],
)
async def test_misbehaving_receivers_are_classified(
    live: httpx.AsyncClient,
    receiver: Receiver,
    database: Database,
    behaviour: str,
    expected: str,
) -> None:
    target = Receiver()
    await target.start()

    async def misbehave(request: web.Request, n: int) -> web.StreamResponse:
        if behaviour == "redirect":
            return web.Response(status=302, headers={"Location": target.url})
        if behaviour == "hang":
            await asyncio.sleep(3)
            return web.Response(status=200)
        if behaviour == "huge":
            response = web.StreamResponse(status=500)
            await response.prepare(request)
            for _ in range(64):  # 64 MiB offered; the relay reads 64 KiB at most
                await response.write(b"x" * (1 << 20))
            return response
        assert request.transport is not None
        request.transport.close()  # reset mid-request
        return web.Response(status=200)

    receiver.behaviour = misbehave
    try:
        await subscribe(live, receiver.url, event_types=["job.succeeded"])
        await add_job(database, "j1", JobState.PROCESSING)
        await finish(database, "j1")
        await receiver.wait_for(1)
        for _ in range(100):
            tried = await attempts(database)
            if tried:
                break
            await asyncio.sleep(0.05)
        first = tried[0]
        assert expected in (first.error or f"HTTP {first.status_code}")
        if behaviour == "huge":
            assert first.response_body is not None
            assert len(first.response_body) <= 2048
        assert target.received == []  # the redirect was not followed
    finally:
        await target.stop()


# --- subscriptions API and egress -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.100.100.200/",
        "http://[::1]:8080/",
        "http://localhost:9/hook",
        "http://192.168.0.1/",
    ],
)
async def test_private_addresses_are_refused_without_the_flag(
    client: httpx.AsyncClient, url: str
) -> None:
    """Checked by resolution only: nothing is sent anywhere."""
    answer = await client.post("/subscriptions", json={"url": url})
    assert answer.status_code == 400
    assert answer.json()["error"] == "egress_refused"
    assert "TRACKER_NOTIFY_ALLOW_PRIVATE" in answer.json()["message"]
    assert (await client.get("/subscriptions")).json() == {"items": []}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": "ftp://example.com/x"},
        {"url": "http://user:pw@127.0.0.1/"},
        {"url": 5},
        {"url": "http://127.0.0.1/", "event_types": ["job.nope"]},
        {"url": "http://127.0.0.1/", "event_types": []},
        {"url": "http://127.0.0.1/", "color": "red"},
    ],
)
async def test_bad_subscriptions_are_a_clear_400(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    answer = await client.post("/subscriptions", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"]


async def test_subscription_lifecycle(database_url: str, receiver: Receiver) -> None:
    app = create_app(notify_settings(database_url, notify="off"))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            sub = await subscribe(http, receiver.url)
            path = f"/subscriptions/{sub['id']}"
            assert (await http.get(path)).json()["url"] == receiver.url
            assert "secret" not in (await http.get(path)).json()
            patched = await http.patch(path, json={"event_types": ["job.lost"]})
            assert patched.json()["event_types"] == ["job.lost"]
            rotated = (await http.post(f"{path}/rotate-secret")).json()
            assert rotated["secret"] != sub["secret"]
            ping = await http.post(f"{path}/test")
            assert ping.status_code == 202
            await receiver.wait_for(1)
            signature = receiver.received[0].headers["webhook-signature"]
            assert len(signature.split(" ")) == 2  # the old secret signs beside the new one
            for secret in (sub["secret"], rotated["secret"]):
                assert (
                    Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers)[
                        "type"
                    ]
                    == "ping"
                )
            assert len((await http.get("/subscriptions")).json()["items"]) == 1
            assert (await http.delete(path)).status_code == 204
            assert (await http.get(path)).status_code == 404
            assert (await http.post("/deliveries/999/retry")).status_code == 404


async def test_a_subscription_failing_for_too_long_is_disabled(
    database_url: str, receiver: Receiver, database: Database
) -> None:
    async def broken(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.behaviour = broken
    schedule = [timedelta(0)] + [timedelta(milliseconds=150)] * 8
    async with running(
        database_url, notify_retry_schedule=schedule, notify_disable_after=timedelta(seconds=0.4)
    ) as live:
        sub = await subscribe(live, receiver.url, event_types=["job.succeeded"])
        await add_job(database, "j1", JobState.PROCESSING)
        await finish(database, "j1")
        for _ in range(100):
            shown = (await live.get(f"/subscriptions/{sub['id']}")).json()
            if not shown["enabled"]:
                break
            await asyncio.sleep(0.05)
        assert shown["enabled"] is False
        assert "failing without a success" in shown["disabled_reason"]
        assert shown["failing_since"] is not None
    (delivery,) = await deliveries(database)
    assert delivery.status in ("failed", "skipped")
    assert 2 <= len(receiver.received) < len(schedule)


async def test_the_environment_declares_one_subscription_to_every_event(
    database_url: str, receiver: Receiver, database: Database
) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    receiver.secret = secret
    async with running(database_url, notify_url=receiver.url, notify_secret=secret) as live:
        (sub,) = (await live.get("/subscriptions")).json()["items"]
        assert (sub["source"], sub["url"]) == ("env", receiver.url)
        await add_job(database, "j1", JobState.PROCESSING)
        await finish(database, "j1", "fail")
        await receiver.wait_for(2)
    assert all(r.verified for r in receiver.received)
    assert [r.payload["type"] for r in receiver.received] == ["job.submitted", "job.failed"]
    async with running(database_url, notify_url=receiver.url, notify_secret=secret) as live:
        assert len((await live.get("/subscriptions")).json()["items"]) == 1  # declared once


def test_all_lanes_together_hold_at_most_max_held(database_url: str) -> None:
    """A hundred quick subscriptions each growing its claim-ahead to MAX_AHEAD held far more
    than one process sends within a lease: the claims of a turn stop at MAX_HELD in all."""
    from tracker.notify.claims import Target
    from tracker.notify.send import Lane

    relay = relay_module.Relay(notify_settings(database_url), Database(database_url))
    targets = [Target(sub, "http://127.0.0.1:9/hook", ("whsec_x",)) for sub in range(1, 101)]
    relay.ahead = {sub: relay_module.MAX_AHEAD for sub in range(1, 101)}
    assert sum(relay._wants(targets).values()) == relay_module.CLAIM_TOTAL
    relay.sender.lanes = {sub: Lane(held=40) for sub in range(1, 101)}  # 4,000 held
    wants = relay._wants(targets)
    assert sum(wants.values()) == relay_module.MAX_HELD - 4_000
    relay.sender.lanes[1].held += 96
    assert relay._wants(targets) == {}


async def test_recording_settles_only_what_its_claim_still_holds(database: Database) -> None:
    """One batch: a success, a failure to retry, a 410, and a result whose lease another
    process took over meanwhile (its attempt is kept, its delivery left to that process)."""
    sub = await add_subscription(database, deliveries=["pending"] * 4, url="http://127.0.0.1:9/")
    at = T0 + timedelta(minutes=1)
    async with database.write() as session:
        rows = (await session.scalars(select(Delivery).order_by(Delivery.id))).all()
        for row, claim_id in zip(rows, ["mine", "mine", "mine", "theirs"], strict=True):
            row.status, row.claim_id, row.lease_until = "sending", claim_id, at
    results = [
        AttemptResult(204, 1.0, body="ok"),
        AttemptResult(503, 2.0, body="busy", retry_after=timedelta(minutes=10)),
        AttemptResult(410, 3.0),
        AttemptResult(204, 4.0),
    ]
    finished = [
        (Claimed(row.id, sub, "mine", 1, "scheduled", "u", ("k",), 1, b"{}", at), result)
        for row, result in zip(rows, results, strict=True)
    ]
    schedule = [timedelta(0), timedelta(seconds=5), timedelta(minutes=5)]
    async with database.write() as session:
        recorded = await record_attempts(
            session, finished, at, schedule=schedule, disable_after=timedelta(days=1)
        )
    assert recorded.statuses == ["succeeded", "pending", "failed", "succeeded"]
    async with database.session() as session:
        after = (await session.scalars(select(Delivery).order_by(Delivery.id))).all()
        attempts = await session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id))
        kept = [(a.delivery_id, a.status_code, a.response_body) for a in attempts.all()]
    assert [(d.status, d.attempts, d.claim_id) for d in after] == [
        ("succeeded", 2, None),
        ("pending", 2, None),
        ("failed", 2, None),
        ("sending", 1, "theirs"),
    ]
    assert [d.last_error for d in after[:3]] == [None, "HTTP 503", "HTTP 410"]
    retry = after[1].next_attempt_at
    assert retry is not None
    # The receiver's Retry-After (10 min) over the schedule's 5 min.
    assert retry.replace(tzinfo=UTC) - at == timedelta(minutes=10)
    assert kept == [(r.id, res.status_code, res.body) for r, res in zip(rows, results, strict=True)]


async def test_due_deliveries_are_found_on_the_partial_index(database: Database) -> None:
    """Finding due deliveries (subscriptions with some, a claim, the next due time) reads the
    partial index `ix_deliveries_due`, a range of it per subscription: with the statuses bound
    as parameters SQLite could not use it, and a backlog of 200,000 cost each relay turn 223 ms;
    the minimum over all of it read the whole index. Checked on the statements as they ran, with
    their parameters."""
    if not database.is_sqlite:
        pytest.skip(
            "EXPLAIN of a bound statement shows PostgreSQL's custom plan, never a generic one"
        )
    sub = await add_subscription(database, deliveries=["pending", "sending", "succeeded"] * 50)
    ran: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "deliveries" in statement and not statement.startswith("EXPLAIN"):
            ran.append((statement, parameters))

    now = T0 + timedelta(hours=1)
    for engine in {database.engine, database.writer}:
        event.listen(engine.sync_engine, "before_cursor_execute", capture)
    async with database.write() as session:
        assert [t.id for t in await due_targets(session, now)] == [sub]
        assert len(await claim(session, {sub: 10}, now, timedelta(minutes=1), "c1")) == 10
        assert await next_due(session) is not None
    for engine in {database.engine, database.writer}:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    assert len(ran) == 3
    async with database.session() as session:
        conn = await session.connection()
        for statement, parameters in ran:
            found = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = [str(row[-1]) for row in found]
            on_index = [step for step in plan if "ix_deliveries_due" in step]
            # A range of it per subscription, never all of it (no constraint shown).
            assert on_index, plan
            assert all("(subscription_id=?" in step for step in on_index), plan
            assert not any("ix_deliveries_subscription_id_id" in step for step in plan), plan
