"""The console's pages read as a person needs them: counts that link to their lists, filters in
the URL with cursor paging, a job's story and result, the subscriptions' buttons, escaped text."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from tests.console.conftest import csrf_of
from tests.factories import add_job, new_job
from tests.notify.receivers import Receiver
from tests.notify.test_delivery import notify_settings, settled
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Delivery, DeliveryAttempt, JobState, Subscription

EVIL = "<img src=x onerror=\"document.title='pwned'\">"
DNA_RESULT = {
    "VideoDNA": [
        {
            "Similarity": "0.99",
            "PrimaryKey": "matched-media-1",
            "Detail": [
                {
                    "Input": {"Start": "0.0", "Duration": "14.0"},
                    "Duplication": {"Start": "0.5", "Duration": "14.4"},
                }
            ],
        }
    ]
}
TAG_RESULT = {
    "Keyword": [{"Tag": "cushion", "Times": ["3260", "4000"]}],
    "Person": [{"Tag": EVIL, "Times": ["10760"], "FaceUrl": "javascript:alert(1)"}],
    "OrigASRData": {"Duration": "20.0"},
}


def text_of(html: str, element_id: str) -> str:
    """The visible text inside the element with this id (tags dropped)."""
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', html, re.S)
    assert found is not None, f"no element {element_id}"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


async def test_the_overview_counts_from_the_counters_and_links_each_count(
    signed_in: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    now = clock()
    async with database.write() as session:
        session.add_all(
            [
                new_job("p1", JobState.PROCESSING, at=now - timedelta(hours=3)),
                new_job("p2", JobState.PROCESSING, at=now - timedelta(minutes=5), stale=True),
                new_job("s1", JobState.SUCCEEDED, type="AIMediaDNA", region="ap-southeast-1"),
                new_job("f1", JobState.FAILED, at=now - timedelta(minutes=50)),
            ]
        )
    page = (await signed_in.get("/ui/")).text
    assert text_of(page, "count-total") == "4"
    assert text_of(page, "count-processing") == "2"
    assert text_of(page, "count-stale") == "1"
    assert text_of(page, "count-AIMediaDNA-succeeded") == "1"
    assert 'href="/ui/jobs?type=AIVideoTag&amp;state=failed"' in page
    assert 'href="/ui/jobs?region=ap-southeast-1"' in page
    assert 'href="/ui/jobs?stale=true"' in page
    assert "3 h 00 m" in text_of(page, "oldest-age")
    for chart in ("finished", "duration", "callbacks", "deliveries"):
        svg = page.split(f'id="chart-{chart}"')[1].split("</svg>")[0]
        assert 'role="img"' in svg
        assert "hour (UTC)" in svg
        assert f'aria-labelledby="chart-{chart}-title chart-{chart}-desc"' in svg


async def test_the_list_filters_by_the_url_and_pages_with_a_cursor(
    signed_in: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    now = clock()
    async with database.write() as session:
        session.add_all(
            new_job(
                f"j{i:03d}",
                JobState.FAILED if i % 2 else JobState.SUCCEEDED,
                at=now - timedelta(minutes=i),
                media_id=f"m{i % 5}",
                type=f"AIVideoTag{i}",  # one claim per media and type: a type of its own
            )
            for i in range(130)
        )
    first = await signed_in.get("/ui/jobs", params={"state": "failed"})
    rows = re.findall(r'<tr data-row="(\d+)">', first.text)
    assert len(rows) == 50
    assert "j001" in first.text
    assert "j000" not in first.text
    next_url = re.search(r'id="next-page" href="([^"]+)"', first.text)
    assert next_url is not None
    second = await signed_in.get(next_url.group(1).replace("&amp;", "&"))
    assert "j101" in second.text
    assert "j001" not in second.text
    assert "state=failed" in next_url.group(1)  # the filters ride along
    assert len(re.findall(r'<tr data-row="', second.text)) == 15
    assert 'id="next-page"' not in second.text
    # bookmarked filters: media, time range as the form sends it (UTC), search by JobId
    media = await signed_in.get("/ui/jobs", params={"media_id": "m3", "state": "failed"})
    assert set(re.findall(r"j\d{3}", media.text)) == {
        f"j{i:03d}" for i in range(130) if i % 10 == 3
    }
    since = (now - timedelta(minutes=3, seconds=30)).strftime("%Y-%m-%dT%H:%M:%S")
    recent = await signed_in.get("/ui/jobs", params={"from": since})
    assert set(re.findall(r"(j\d{3})</code>", recent.text)) == {"j000", "j001", "j002", "j003"}
    found = await signed_in.get("/ui/jobs", params={"q": "j042"})
    assert found.status_code == 303
    assert found.headers["location"] == "/ui/jobs/j042"
    bad = await signed_in.get("/ui/jobs", params={"state": "nonsense"})
    assert bad.status_code == 400
    assert "is not one of" in text_of(bad.text, "filter-error")
    forged = await signed_in.get("/ui/jobs", params={"cursor": "bm90IGEgY3Vyc29y"})
    assert forged.status_code == 400


async def test_a_failed_job_says_why_and_its_timeline_names_sources(
    signed_in: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    await add_job(database, "job-f", JobState.PROCESSING, at=clock() - timedelta(minutes=3))
    body = {
        "EventTime": "2026-01-02T03:04:00Z",
        "EventType": "AIVideoTagComplete",
        "JobId": "job-f",
        "MediaId": "media-job-f",
        "Status": "fail",
        "Code": "InternalError",
        "Message": f"the video could not be decoded {EVIL}",
    }
    for _ in range(2):  # VOD delivers it twice
        posted = await signed_in.post("/callbacks/vod", content=json.dumps(body))
        assert posted.status_code == 200
    for _ in range(100):
        page = (await signed_in.get("/ui/jobs/job-f")).text
        if 'id="why"' in page:
            break
        await asyncio.sleep(0.05)
    assert text_of(page, "why-code") == "InternalError"
    assert "the video could not be decoded &lt;img" in page
    assert "<img" not in page
    timeline = page.split('id="timeline"')[1].split("</ol>")[0]
    assert "callback received: fail" in timeline
    assert "delivered 2×" in timeline
    assert "VOD callback" in timeline
    assert "submitted" in timeline
    assert timeline.index("submitted") < timeline.index("callback received")


async def test_results_read_for_people(signed_in: httpx.AsyncClient, database: Database) -> None:
    await add_job(database, "tag-1", JobState.SUCCEEDED, result=TAG_RESULT, media_id=EVIL)
    await add_job(database, "dna-1", JobState.SUCCEEDED, type="AIMediaDNA", result=DNA_RESULT)
    await add_job(database, "dna-0", JobState.SUCCEEDED, type="AIMediaDNA", result={"VideoDNA": []})
    tags = (await signed_in.get("/ui/jobs/tag-1")).text
    keyword = tags.split('id="tags-Keyword"')[1].split("</ul>")[0]
    assert "cushion" in keyword
    assert "00:03.260, 00:04.000" in keyword
    assert 'x="161.0"' in keyword  # 3.26 s of a 20 s video, on a strip 1000 wide, centred mark
    person = tags.split('id="tags-Person"')[1].split("</ul>")[0]
    assert "&lt;img src=x" in person
    assert "<img" not in person
    assert 'href="javascript:' not in tags  # a face URL that is not http(s) is not linked
    assert "The video is 20 s long" in tags
    dna = (await signed_in.get("/ui/jobs/dna-1")).text
    matches = dna.split('id="matches"')[1].split("</table>")[0]
    assert 'href="/ui/media/matched-media-1"' in matches
    assert "99%" in matches
    assert "00:00.000–00:14.000" in matches
    assert "00:00.500–00:14.900" in matches
    none = (await signed_in.get("/ui/jobs/dna-0")).text
    assert "No match" in text_of(none, "no-matches")
    media = (await signed_in.get("/ui/media/" + EVIL)).text
    assert "tag-1" in media
    assert "<img" not in media


async def test_unknown_pages_and_jobs_are_404_pages(signed_in: httpx.AsyncClient) -> None:
    job = await signed_in.get("/ui/jobs/no-such-job")
    assert job.status_code == 404
    assert "no job &#39;no-such-job&#39;" in text_of(job.text, "error-message")
    assert (await signed_in.get("/ui/media/nothing")).status_code == 404
    assert (await signed_in.get("/ui/rows/999")).status_code == 404
    assert (await signed_in.get("/ui/subscriptions/77")).status_code == 404
    assert (await signed_in.get("/ui/nowhere")).status_code == 404


async def test_a_job_without_a_jobid_has_a_page_by_row(
    signed_in: httpx.AsyncClient, database: Database
) -> None:
    row = await add_job(database, None, JobState.SUBMIT_UNKNOWN)
    listing = (await signed_in.get("/ui/jobs")).text
    assert f'href="/ui/rows/{row}"' in listing
    page = await signed_in.get(f"/ui/rows/{row}")
    assert page.status_code == 200
    assert "no JobId yet" in page.text


async def test_the_scheduler_page_lists_recent_runs(
    signed_in: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    from tracker.scheduler.heartbeats import record_finish, record_start

    for i in range(3):
        started = clock() + timedelta(seconds=i)
        async with database.write() as session:
            await record_start(session, "sweep", "host-a", started)
        async with database.write() as session:
            await record_finish(
                session,
                "sweep",
                "host-a",
                started,
                started,
                duration=0.25,
                ok=True,
                summary=f"flagged {i} stale {EVIL}",
            )
    page = (await signed_in.get("/ui/scheduler")).text
    runs = page.split('id="runs-sweep"')[1].split("</section>")[0]
    assert runs.count("<tr>") == 1 + 3
    assert "flagged 2 stale &lt;img" in runs
    assert "250 ms" in runs


async def test_every_subscription_button_does_what_it_says(database_url: str) -> None:
    """Against a real receiver on loopback, the relay running: retry, replay (count first),
    test ping, disable and enable, rotate (the secret shown once)."""
    answers = iter([500, 500, 204, 204, 204, 204, 204])

    async def flaky(request: Any, n: int) -> Any:
        from aiohttp import web

        return web.Response(status=next(answers, 204))

    receiver = Receiver(behaviour=flaky)
    await receiver.start()
    app = create_app(
        notify_settings(database_url, notify_retry_schedule="0s", api_tokens="tok")  # one try
    )
    database = Database(database_url)
    try:
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                bearer = {"Authorization": "Bearer tok"}
                created = await http.post(
                    "/subscriptions", json={"url": receiver.url}, headers=bearer
                )
                sub = created.json()
                await add_job(database, "b1", JobState.PROCESSING, at=datetime.now(UTC))
                await settled(database, "failed")
                from tests.console.conftest import sign_in

                await sign_in(http, "tok")
                page = (await http.get(f"/ui/subscriptions/{sub['id']}")).text
                delivery_id = re.search(r'id="retry-(\d+)"', page).group(1)  # type: ignore[union-attr]
                csrf = csrf_of(page)
                # retry: one more attempt (the receiver says 500 again), then a replay succeeds
                retried = await http.post(
                    f"/ui/deliveries/{delivery_id}/retry", data={"csrf_token": csrf}
                )
                assert retried.status_code == 303
                for _ in range(100):
                    async with database.session() as session:
                        tries = await session.scalar(
                            select(func.count()).select_from(DeliveryAttempt)
                        )
                        status = (await session.get(Delivery, int(delivery_id))).status  # type: ignore[union-attr]
                    if tries == 2 and status == "failed":
                        break
                    await asyncio.sleep(0.05)
                assert tries == 2
                since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
                counted = await http.get(
                    f"/ui/subscriptions/{sub['id']}/replay", params={"since": since}
                )
                assert "1" in text_of(counted.text, "replay-count")
                empty = await http.get(
                    f"/ui/subscriptions/{sub['id']}/replay", params={"since": ""}
                )
                assert empty.status_code == 400  # never "replay everything" by omission
                replayed = await http.post(
                    f"/ui/subscriptions/{sub['id']}/replay",
                    data={"csrf_token": csrf, "since": since},
                )
                assert replayed.status_code == 303
                await settled(database, "succeeded")
                # test ping: the receiver's answer is shown
                tested = await http.post(
                    f"/ui/subscriptions/{sub['id']}/test", data={"csrf_token": csrf}
                )
                assert tested.status_code == 303
                shown = (await http.get(tested.headers["location"])).text
                assert "test ping answered HTTP 204" in shown
                assert receiver.received[-1].payload["type"] == "ping"
                # disable, enable
                await http.post(f"/ui/subscriptions/{sub['id']}/disable", data={"csrf_token": csrf})
                async with database.session() as session:
                    assert (await session.get(Subscription, sub["id"])).enabled is False  # type: ignore[union-attr]
                await http.post(f"/ui/subscriptions/{sub['id']}/enable", data={"csrf_token": csrf})
                async with database.session() as session:
                    assert (await session.get(Subscription, sub["id"])).enabled is True  # type: ignore[union-attr]
                # rotate: the new secret once, in the answer, and never again
                rotated = await http.post(
                    f"/ui/subscriptions/{sub['id']}/rotate", data={"csrf_token": csrf}
                )
                async with database.session() as session:
                    secret = (await session.get(Subscription, sub["id"])).secret  # type: ignore[union-attr]
                assert rotated.status_code == 200
                assert secret in rotated.text
                assert secret != sub["secret"]
                assert secret not in (await http.get(f"/ui/subscriptions/{sub['id']}")).text
                assert secret not in str(http.cookies)
    finally:
        await receiver.stop()
        await database.dispose()
