"""`tracker demo`: the VOD simulator and the tracker on loopback, a handful of jobs watched live.

Everything runs in one process and one event loop: the simulator (`FakeVod`), the real app under
uvicorn (webhook, status API, console, scheduler) on an embedded SQLite file in a fresh temp
directory, a webhook receiver (`webhooks.py`), and a watcher that reads the status API over HTTP
like any client would. Jobs go in through `POST /jobs`, the real submit path; the simulator drops
one callback (reconciliation must find that job) and keeps one job running past the demo's stale
threshold (the sweep must flag it). With `--sts-ttl` the tracker signs with short-lived STS
credentials from the simulator's credentials URI, which it must renew before each expires, as
with a RAM role in production. A root: it composes the app (`create_app`) and the simulator and
talks to the tracker only over HTTP; it runs no statement of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import uvicorn
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tracker.app import create_app
from tracker.cli.demo.scenario import (
    DROPPED_MEDIA,
    EVERY,
    FAILED_MEDIA,
    FINAL,
    JOB_SECONDS,
    MEDIA,
    MNS_QUEUE,
    POLL,
    STALE_AFTER,
    STUCK_EXTRA,
    STUCK_MEDIA,
    SUBMIT_GAP,
    TRUTH,
    TYPES,
    auth_key,
    demo_settings,
    free_socket,
)
from tracker.cli.demo.view import Watched, isatty, jobs_table, note_of, one_field_a_line, phase_of
from tracker.cli.demo.webhooks import WebhookReceiver, new_secret
from tracker.db import upgrade_async
from tracker.fakevod import FakeJob, FakeVod, Faults


class DemoFailed(Exception):
    """The demo could not show what it promises; the message says what is missing."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the demo owns Ctrl-C and stops it in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
        self.live = console.is_terminal and isatty(console)
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
            "auth_key": auth_key(),
            "api_token": secrets.token_urlsafe(24),
            "webhook_secret": new_secret(),
        }
        # A user's system receiving the job changes, verifying each with standardwebhooks.
        self.receiver = WebhookReceiver(self.keys["webhook_secret"], self.elapsed)

    # -- output --

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def say(self, text: str, style: str | None = None) -> None:
        # No markup: job notes and results hold VOD's text, which may contain [brackets].
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def table(self) -> Table:
        truth = {i: self.fake.jobs[i].status for i in self.watched if i in self.fake.jobs}
        return jobs_table(self.watched.values(), truth, self.receiver.delivered, self.elapsed())

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
        sock = free_socket()
        port = int(sock.getsockname()[1])
        self.fake = FakeVod(
            access_key_id=self.keys["access_key_id"],
            access_key_secret=self.keys["access_key_secret"],
            callback_url=f"http://127.0.0.1:{port}/callbacks/vod",
            auth_key=self.keys["auth_key"],
            seed=2026,
            sts_ttl=self.sts_ttl,
            # CallbackType MNS: completion events are written to the queue, not POSTed
            mns_queue=MNS_QUEUE if self.channel == "mns" else None,
            faults=Faults(delay=JOB_SECONDS, stuck_seconds=STUCK_EXTRA),
        )
        vod_url = await self.fake.start()
        uri = self.fake.credentials_uri if self.sts_ttl else None
        mns_url = self.fake.mns.url if self.channel == "mns" else None
        webhook_url = await self.receiver.start()
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
            await self.receiver.stop()
            sock.close()

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
            self.fake.faults.drop_next = 1  # the next job created: this media's AIVideoTag
        if media_id == STUCK_MEDIA:
            self.fake.faults.stuck_next = 1
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
            f"webhooks: {sum(j in self.receiver.delivered for j in final)} of {len(final)} "
            f"outcomes delivered and verified with standardwebhooks ({self.receiver.forged} "
            "refused)"
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
