"""`tracker demo`: the VOD simulator and the tracker on loopback, a handful of jobs watched live.

Everything runs in one process and one event loop: the simulator (`FakeVod`), the real app under
uvicorn (webhook, status API, dashboard, scheduler) on an embedded SQLite file in a fresh temp
directory, and a watcher that reads the status API over HTTP like any client would. Jobs go in
through `POST /jobs`, the real submit path; the simulator drops one callback (reconciliation must
find that job) and keeps one job running past the demo's stale threshold (the sweep must flag it).
With `--sts-ttl` the tracker signs with short-lived STS credentials from the simulator's
credentials URI, which it must renew before each expires, as with a RAM role in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from aiohttp import web
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from standardwebhooks import Webhook

from tracker.app import create_app
from tracker.config import Settings
from tracker.db import upgrade_async
from tracker.fakevod import FakeJob, FakeVod
from tracker.notify.signing import new_secret

log = logging.getLogger(__name__)

TYPES = ("AIVideoTag", "AIMediaDNA")
MEDIA = ("demo-video-1", "demo-video-2", "demo-video-3", "demo-video-4")
MNS_QUEUE = "tracker-demo-events"  # `--channel mns`: VOD writes its events here
DROPPED_MEDIA = "demo-video-2"  # its AIVideoTag callback is never sent
STUCK_MEDIA = "demo-video-3"  # its AIVideoTag job runs long enough to be flagged stale
FAILED_MEDIA = "demo-video-4"  # its AIMediaDNA job fails at VOD

# Demo-sized timing: jobs take 3 s; a job is stale after 6 s; the stuck one finishes after 12 s.
JOB_SECONDS = 3.0
STUCK_EXTRA = 9.0
STALE_AFTER = timedelta(seconds=6)
EVERY = timedelta(seconds=1)  # sweep, reconciliation and callback confirmation
GRACE = timedelta(seconds=4)  # reconciliation also asks about jobs this old that never heard back
SUBMIT_GAP = 0.5  # seconds between media, so the jobs finish one after another
POLL = 0.4  # seconds between status API reads
TRUTH = {"success": "succeeded", "fail": "failed"}
FINAL = ("succeeded", "failed", "lost", "submit_failed")
SHORT_TYPES = {"AIVideoTag": "tag", "AIMediaDNA": "dna"}
STYLES = {"succeeded": "green", "failed": "red", "stale": "yellow", "confirming": "cyan"}


CREDENTIAL_FIELDS = (
    "access_key_id",
    "access_key_secret",
    "security_token",
    "role_arn",
    "oidc_provider_arn",
    "oidc_token_file",
    "credentials_file",
    "profile",
    "ecs_metadata",
    "credentials_uri",
)


class DemoFailed(Exception):
    """The demo could not show what it promises; the message says what is missing."""


@dataclass
class Watched:
    """One job as the status API shows it, with the demo's reading of it."""

    job_id: str
    media_id: str
    type: str
    phase: str = "processing"
    note: str = "submitted; VOD is working on it"
    body: dict[str, Any] = field(default_factory=dict)  # its GET /jobs JSON
    events: list[dict[str, Any]] = field(default_factory=list)


def _free_socket() -> socket.socket:
    """A loopback socket on a port the OS picks, handed to uvicorn (no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _auth_key() -> str:
    # VOD's AuthKey: at most 32 characters mixing upper case, lower case and digits (6.1).
    return "Demo" + secrets.token_hex(12) + "7K"


def demo_settings(
    database_url: str,
    port: int,
    vod_url: str,
    keys: dict[str, str],
    webhook_url: str | None = None,
    *,
    credentials_uri: str | None = None,
    mns_endpoint: str | None = None,
) -> Settings:
    """The tracker's settings, all given here so the user's TRACKER_* variables cannot change
    what the demo shows. With `credentials_uri` it signs with the STS credentials found there
    instead of the key pair; with `mns_endpoint`, it consumes the simulated queue MNS_QUEUE."""
    # Every credential source named, so that none of the user's ALIBABA_CLOUD_* variables can
    # send the demo's requests to the cloud (tracker/vod/credentials.py takes the first one set).
    sources: dict[str, Any] = dict.fromkeys(CREDENTIAL_FIELDS)
    if credentials_uri is None:
        sources |= {
            "access_key_id": keys["access_key_id"],
            "access_key_secret": keys["access_key_secret"],
        }
    else:
        sources["credentials_uri"] = credentials_uri
    return Settings(
        **sources,
        database_url=database_url,
        host="127.0.0.1",
        port=port,
        vod_endpoint=vod_url,
        vod_region="cn-shanghai",
        callback_url=f"http://127.0.0.1:{port}/callbacks/vod",
        callback_auth_key=[keys["auth_key"]],
        callback_auth="on",
        callback_confirm="on",  # the default with VOD credentials: ListAIJob confirms callbacks
        api_tokens=[keys["api_token"]],
        api_auth="on",
        stale_after=STALE_AFTER,
        stale_after_aivideotag=None,
        stale_after_aimediadna=None,
        sweep_interval=EVERY,
        reconcile_interval=EVERY,
        reconcile_grace=GRACE,
        confirm_interval=EVERY,
        scheduler="on",
        # Job changes are pushed to the demo's own receiver, on loopback.
        notify="on",
        notify_url=webhook_url,
        notify_secret=keys["webhook_secret"] if webhook_url else None,
        notify_allow_private="on",
        mns_endpoint=mns_endpoint,
        mns_queue=MNS_QUEUE if mns_endpoint else None,
        mns_wait=20,
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the demo owns Ctrl-C and stops it in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def phase_of(job: dict[str, Any]) -> str:
    if job["state"] in FINAL:
        return str(job["state"])
    if job["stale"]:
        return "stale"
    if job.get("pending_status"):
        return "confirming"
    return str(job["state"])


def note_of(job: Watched, event: str = "callback") -> str:
    """What happened to a job, in words; `event` names how VOD's events come (callback, queue
    event)."""
    body = job.body
    if job.phase == "confirming":
        return f"{event} says {body['pending_status']}; confirming (ListAIJob)"
    if job.phase == "stale":
        return f"no word for {STALE_AFTER.total_seconds():.0f}s: flagged stale"
    if job.phase not in FINAL:
        return "VOD is working on it"
    applied = [e for e in job.events if e.get("applied")]
    if applied:
        confirmed = any(e.get("reason") == "confirmed_by_vod" for e in applied)
        how = f"{event}, confirmed by ListAIJob" if confirmed else event
    elif job.events:
        how = f"reconciliation, before the {event}"
    else:
        how = f"{event} lost: found by reconciliation"
    if body["state"] == "failed":
        how += f" ({body.get('code')})"
    if body.get("stale_at"):
        how += "; was stale"
    return how


def _isatty(console: Console) -> bool:
    try:
        return bool(console.file.isatty())
    except (AttributeError, ValueError):
        return False


def one_field_a_line(body: dict[str, Any]) -> str:
    """JSON with one top-level field per line: readable, and still the API's exact answer."""
    fields = (f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in body.items())
    return "{\n" + ",\n".join(fields) + "\n}"


class Demo:
    """Starts everything, submits, watches, checks against the simulator's truth, stops."""

    def __init__(
        self,
        console: Console,
        *,
        exit_when_done: bool,
        timeout: float,
        channel: str = "http",
        sts_ttl: float | None = None,
    ) -> None:
        self.console = console
        self.channel = channel  # how VOD's events reach the tracker: http, or mns (a queue)
        self.event = "queue event" if channel == "mns" else "callback"
        self.sts_ttl = sts_ttl  # seconds each STS credential lives; None: a fixed key pair
        # A live table only on a real terminal (not when FORCE_COLOR makes rich think so).
        self.live = console.is_terminal and _isatty(console)
        self.exit_when_done = exit_when_done
        self.timeout = timeout
        self.started = time.monotonic()
        self.stop = asyncio.Event()
        self.watched: dict[str, Watched] = {}
        self.dropped_id: str | None = None
        self.stuck_id: str | None = None
        self.directory = Path(tempfile.mkdtemp(prefix="tracker-demo-"))
        self.keys = {
            "access_key_id": "LTAIdemo" + secrets.token_hex(8),
            "access_key_secret": secrets.token_urlsafe(24),
            "auth_key": _auth_key(),
            "api_token": secrets.token_urlsafe(24),
            "webhook_secret": new_secret(),
        }
        self.delivered: dict[str, str] = {}  # JobId -> when its outcome's webhook arrived
        self.forged = 0

    # -- output --

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def say(self, text: str, style: str | None = None) -> None:
        # No markup: job notes and results hold VOD's text, which may contain [brackets].
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def table(self) -> Table:
        """Fits 80 columns: no vertical borders, only the notes wrap."""
        table = Table(
            title=f"tracker demo  {self.elapsed()}", title_justify="left", box=box.SIMPLE_HEAD
        )
        table.add_column("media", no_wrap=True)
        table.add_column("job", no_wrap=True)
        table.add_column("tracker", no_wrap=True)
        table.add_column("VOD", no_wrap=True)
        table.add_column("what happened")
        table.add_column("webhook", no_wrap=True)
        for job in self.watched.values():
            truth = self.fake.jobs[job.job_id].status if job.job_id in self.fake.jobs else "?"
            table.add_row(
                job.media_id,
                f"{SHORT_TYPES.get(job.type, job.type)} {job.job_id[:8]}",
                Text(job.phase, style=STYLES.get(job.phase, "")),
                truth,
                job.note,
                self.delivered.get(job.job_id, ""),
            )
        return table

    # -- run --

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        logging.basicConfig(
            filename=self.directory / "demo.log",
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            force=True,
        )
        keep = False  # the directory (database and log) stays only when the demo failed
        try:
            return await self._run()
        except BrokenPipeError:  # piped into `head`, say: nothing left to show
            return 1
        except (DemoFailed, aiohttp.ClientError, OSError) as exc:
            keep = True
            self.say(f"demo failed: {exc}", style="bold red")
            self.say(f"logs kept in {self.directory / 'demo.log'}")
            return 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            logging.shutdown()
            if not keep:
                shutil.rmtree(self.directory, ignore_errors=True)

    async def _run(self) -> int:
        database = self.directory / "demo.db"
        database_url = f"sqlite+aiosqlite:///{database}"
        await upgrade_async(database_url)
        sock = _free_socket()
        port = int(sock.getsockname()[1])
        self.fake = FakeVod(
            access_key_id=self.keys["access_key_id"],
            access_key_secret=self.keys["access_key_secret"],
            callback_url=f"http://127.0.0.1:{port}/callbacks/vod",
            auth_key=self.keys["auth_key"],
            delay=JOB_SECONDS,
            stuck_seconds=STUCK_EXTRA,
            seed=2026,
            sts_ttl=self.sts_ttl,
            # CallbackType MNS: completion events are written to the queue, not POSTed
            mns_queue=MNS_QUEUE if self.channel == "mns" else None,
        )
        vod_url = await self.fake.start()
        uri = self.fake.credentials_uri if self.sts_ttl else None
        mns_url = self.fake.mns.url if self.channel == "mns" else None
        receiver = await self._start_receiver()
        webhook_url = f"http://127.0.0.1:{receiver.addresses[0][1]}/webhooks"
        settings = demo_settings(
            database_url,
            port,
            vod_url,
            self.keys,
            webhook_url,
            credentials_uri=uri,
            mns_endpoint=mns_url,
        )
        self.url = f"http://127.0.0.1:{port}"
        server = _Server(uvicorn.Config(create_app(settings), log_config=None, access_log=False))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        headers = {"Authorization": f"Bearer {self.keys['api_token']}"}
        try:
            async with aiohttp.ClientSession(self.url, headers=headers) as http:
                await self._wait_ready(http, serving)
                self.say(
                    f"VOD simulator at {vod_url}; tracker at {self.url} "
                    f"(SQLite at {database}, removed at exit)"
                )
                if mns_url is not None:
                    self.say(
                        f"events channel: MNS: VOD writes its events to the simulated queue "
                        f"{MNS_QUEUE} at {mns_url}; the tracker consumes it (no callback URL)"
                    )
                self.say(
                    f"demo timing: jobs take {JOB_SECONDS:.0f}s, stale after "
                    f"{STALE_AFTER.total_seconds():.0f}s, sweep and reconciliation every "
                    f"{EVERY.total_seconds():.0f}s; the simulator drops 1 {self.event} and keeps "
                    "1 job running long"
                )
                if self.sts_ttl:
                    self.say(
                        f"credentials: STS from {self.fake.credentials_uri}, each accepted for "
                        f"{self.sts_ttl:g}s; the tracker renews them before they expire"
                    )
                done = await self._submit_and_watch(http)
                if done is None:  # Ctrl-C
                    return 130
                await self._show_result(http)
            if not self.exit_when_done:
                await self.stop.wait()
            return 0
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 15)
            await self.fake.stop()
            await receiver.cleanup()
            sock.close()

    async def _start_receiver(self) -> web.AppRunner:
        """A webhook receiver as a user's system would run one: every delivery verified with
        the official `standardwebhooks` library; the table shows when each outcome arrived."""
        hook = Webhook(self.keys["webhook_secret"])

        async def receive(request: web.Request) -> web.Response:
            try:
                event = hook.verify(await request.read(), dict(request.headers))
            except Exception:  # the library raises several kinds for a forged request
                self.forged += 1
                return web.Response(status=400)
            data = event.get("data", {})
            if data.get("state") in FINAL and data.get("job_id"):
                self.delivered.setdefault(data["job_id"], self.elapsed().strip())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/webhooks", receive)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    async def _wait_ready(self, http: aiohttp.ClientSession, serving: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if serving.done():
                raise DemoFailed("the tracker stopped while starting; see the log")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get("/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise DemoFailed("the tracker did not become ready in 20s")

    async def _submit(self, http: aiohttp.ClientSession, media_id: str) -> None:
        if media_id == DROPPED_MEDIA:
            self.fake.drop_next = 1  # the next job created: this media's AIVideoTag
        if media_id == STUCK_MEDIA:
            self.fake.stuck_next = 1
        body = {"media_id": media_id, "types": list(TYPES)}
        async with http.post("/jobs", json=body) as response:
            answer = await response.json()
            if response.status != 201:
                raise DemoFailed(f"POST /jobs for {media_id} answered {response.status}: {answer}")
        for job in answer["jobs"]:
            watched = Watched(job["job_id"], media_id, job["type"], body=job)
            self.watched[watched.job_id] = watched
            if media_id == FAILED_MEDIA and job["type"] == "AIMediaDNA":
                self.fake.jobs[watched.job_id].will_fail = True
            if media_id == DROPPED_MEDIA and job["type"] == "AIVideoTag":
                self.dropped_id = watched.job_id
            if media_id == STUCK_MEDIA and job["type"] == "AIVideoTag":
                self.stuck_id = watched.job_id
        ids = ", ".join(f"{j['type']} {j['job_id'][:8]}" for j in answer["jobs"])
        if not self.live:
            self.say(f"[{self.elapsed()}] POST /jobs {media_id}: {ids}")

    async def _submit_and_watch(self, http: aiohttp.ClientSession) -> bool | None:
        """True once every job is at VOD's final state; None on Ctrl-C; DemoFailed on timeout."""
        live = Live(self.table(), console=self.console, auto_refresh=False) if self.live else None
        with live or contextlib.nullcontext():
            for media_id in MEDIA:
                await self._submit(http, media_id)
                await self._refresh(http, live)
                if await self._sleep(SUBMIT_GAP):
                    return None
            deadline = time.monotonic() + self.timeout
            while True:
                await self._refresh(http, live)
                missing = self.missing()
                if not missing:
                    break
                if time.monotonic() > deadline:
                    raise DemoFailed(f"not done after {self.timeout:.0f}s: " + "; ".join(missing))
                if await self._sleep(POLL):
                    return None
        self.summarise()
        return True

    async def _sleep(self, seconds: float) -> bool:
        """Sleep; True if Ctrl-C came meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    async def _refresh(self, http: aiohttp.ClientSession, live: Live | None) -> None:
        async with http.get("/jobs", params={"limit": "100"}) as response:
            items = (await response.json())["items"]
        for body in items:
            job = self.watched.get(body["job_id"])
            if job is None:
                continue
            job.body = body
            phase = phase_of(body)
            if phase == job.phase:
                continue
            job.phase = phase
            if phase in FINAL:
                async with http.get(f"/jobs/{job.job_id}/events") as response:
                    job.events = (await response.json())["items"]
            job.note = note_of(job, self.event)
            if live is None:
                self.say(
                    f"[{self.elapsed()}] {job.media_id} {job.type:<10} {job.job_id[:8]}  "
                    f"{phase:<10}  {job.note}"
                )
        if live is not None:
            live.update(self.table(), refresh=True)

    # -- the truth --

    def missing(self) -> list[str]:
        """What still differs from the simulator's truth (empty: done)."""
        problems = []
        for job in self.watched.values():
            truth = self.fake.jobs[job.job_id]
            expected = TRUTH.get(truth.status)
            if expected is None:
                problems.append(f"{job.job_id[:8]} still {truth.status} at VOD")
            elif job.body["state"] != expected:
                problems.append(
                    f"{job.job_id[:8]} is {job.body['state']} in the tracker, {expected} at VOD"
                )
        stuck = self.watched.get(self.stuck_id or "")
        if stuck is not None and not stuck.body.get("stale_at"):
            problems.append(f"{stuck.job_id[:8]} (stuck at VOD) not flagged stale yet")
        return problems

    def summarise(self) -> None:
        states = [job.body["state"] for job in self.watched.values()]
        counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
        dropped = self._fake_job(self.dropped_id)
        recovered = (
            dropped is not None
            and dropped.job_id in self.fake.dropped
            and not self.watched[dropped.job_id].events
        )
        if not recovered:
            raise DemoFailed(f"the dropped {self.event}'s job was not recovered by reconciliation")
        self.say(
            f"all {len(states)} jobs match VOD's truth ({counts}); the {self.event} VOD dropped "
            f"was recovered by reconciliation; the stuck job was flagged stale, then finished"
        )
        final = [j for j in self.watched if self.watched[j].body["state"] in FINAL]
        self.say(
            f"webhooks: {sum(j in self.delivered for j in final)} of {len(final)} outcomes "
            f"delivered and verified with standardwebhooks ({self.forged} refused)"
        )
        if self.sts_ttl:
            gateway = self.fake.gateway
            expired = self.fake.refused.get("InvalidSecurityToken.Expired", 0)
            self.say(
                f"credentials: {gateway.sts_issued} STS credentials handed out, "
                f"{gateway.sts_accepted} requests signed with them, {expired} refused as expired"
            )
        if self.channel == "mns":
            self.say(
                f"{self.fake.mns.deleted} events came through the MNS queue {MNS_QUEUE}, each "
                f"deleted once stored; {self.fake.mns.depth(MNS_QUEUE)} left in it"
            )

    def _fake_job(self, job_id: str | None) -> FakeJob | None:
        return self.fake.jobs.get(job_id) if job_id else None

    async def _show_result(self, http: aiohttp.ClientSession) -> None:
        job_id = self.stuck_id or next(iter(self.watched))
        token = self.keys["api_token"]
        async with http.get(f"/jobs/{job_id}") as response:
            body = await response.json()
        self.say("")
        self.say(f'$ curl -H "Authorization: Bearer {token}" {self.url}/jobs/{job_id}')
        self.say(one_field_a_line(body))
        self.say("")
        self.say(f"console: {self.url}/ui/  (sign in with the API token {token})")
        if not self.exit_when_done:
            self.say(
                f"status API: {self.url}/jobs, /stats (Authorization: Bearer {token}); "
                f'submit more: curl -H "Authorization: Bearer {token}" -d '
                f'\'{{"media_id": "my-video", "types": ["AIVideoTag"]}}\' {self.url}/jobs'
            )
            self.say("serving until Ctrl-C")


def run_demo(
    *,
    exit_when_done: bool,
    timeout: float,
    console: Console | None = None,
    channel: str = "http",
    sts_ttl: float | None = None,
) -> int:
    """`tracker demo`: the exit code (0: every job reached its true final state)."""
    demo = Demo(
        console or Console(),
        exit_when_done=exit_when_done,
        timeout=timeout,
        channel=channel,
        sts_ttl=sts_ttl,
    )
    return asyncio.run(demo.run())
