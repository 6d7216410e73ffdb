"""Simulator, callbacks: a finished job's event POSTed like VOD's, or written to the MNS queue.

Where it goes is the MessageCallback settings; how, VOD's HTTP callbacks (vod-reference.md 6.5) or
its MNS channel (6.7), with the delivery faults drawn for the job (dropped, late, duplicated).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp

from tracker.fakevod.faults import Faults
from tracker.fakevod.jobs import Delivery, FakeJob
from tracker.fakevod.mns import FakeMns
from tracker.vod import sign_callback

log = logging.getLogger(__name__)

APP_ID = "app-1000000"
QUEUE_ATTEMPTS = 3  # a failed queue write is retried twice (mns-reference.md 7.2)


class Callbacks:
    """Delivers events. `config` is GetMessageCallback's answer and what SetMessageCallback
    changes; `deliveries` records every attempt and `dropped` every event never acknowledged."""

    def __init__(
        self,
        faults: Faults,
        mns: FakeMns,
        *,
        callback_url: str | None,
        auth_key: str | None,
        extra_callback_urls: list[str] | None,
    ) -> None:
        self.faults = faults
        self.mns = mns
        self.config: dict[str, str] = {
            "AppId": APP_ID,
            "CallbackType": "HTTP",
            "CallbackURL": callback_url or "",
            "AuthSwitch": "on" if auth_key else "off",
            "AuthKey": auth_key or "",
            # As if the operator ticked "Video AI processing completed" (section 6.1).
            "EventTypeList": "AIComplete",
            "MnsEndpoint": "",
            "MnsQueueName": "",
        }
        # Replicas of the tracker, called in turn with the configured URL (not VOD's: a test aid).
        self.extra_urls = list(extra_callback_urls or [])
        self.deliveries: list[Delivery] = []
        self.dropped: list[str] = []  # job ids whose event was never acknowledged
        self._http: aiohttp.ClientSession | None = None
        self._round_robin = 0
        self._slots = asyncio.Semaphore(64)  # below aiohttp's pool of 100

    @property
    def auth_key(self) -> str | None:
        """The key events are signed with: none while AuthSwitch is off."""
        on = self.config["AuthSwitch"] == "on"
        return (self.config["AuthKey"] or None) if on else None

    @auth_key.setter
    def auth_key(self, value: str | None) -> None:
        self.config.update(AuthKey=value or "", AuthSwitch="on" if value else "off")

    def to_queue(self, queue: str) -> None:
        """As if SetMessageCallback had aimed events at the simulator's own queue (6.7)."""
        self.config.update(CallbackType="MNS", MnsEndpoint=self.mns.url, MnsQueueName=queue)

    async def open(self) -> None:
        self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def publish(self, job: FakeJob) -> None:
        """A finished job's event, with the delivery faults drawn when it was created."""
        if job.drop:
            self.dropped.append(job.job_id)
            return
        if job.late:
            await asyncio.sleep(self.faults.late_seconds)
        if await self.deliver(job) and job.duplicate:
            await asyncio.sleep(self.faults.callback_interval)
            await self.deliver(job)

    async def deliver(self, job: FakeJob) -> bool:
        """Up to `callback_attempts` POSTs, `callback_interval` apart; only 200 counts (6.5).
        With CallbackType MNS, the event is written to the queue instead (6.7)."""
        if self.config["CallbackType"].upper() == "MNS" and not job.callback_url:
            return await self._write_to_queue(job)
        targets = self._targets(job)
        if not targets or self._http is None:
            self.dropped.append(job.job_id)
            return False
        body = json.dumps(job.event()).encode()
        attempts = self.faults.callback_attempts
        for attempt in range(1, attempts + 1):
            url = targets[self._round_robin % len(targets)]
            self._round_robin += 1
            job.attempts += 1
            status = await self._post(job, url, attempt, body)
            if status == 200:
                job.acknowledged += 1
                return True
            if attempt < attempts:
                await asyncio.sleep(self.faults.callback_interval)
        log.info("callback for %s dropped after %d attempts", job.job_id, attempts)
        self.dropped.append(job.job_id)
        return False

    async def _post(self, job: FakeJob, url: str, attempt: int, body: bytes) -> int | None:
        """One attempt, recorded; the status, or None when no answer came."""
        assert self._http is not None
        headers = {"Content-Type": "application/json"}
        if (key := self.auth_key) is not None:
            stamp = int(time.time())
            headers["X-VOD-TIMESTAMP"] = str(stamp)
            headers["X-VOD-SIGNATURE"] = sign_callback(url, stamp, key)
        try:
            # The 5 s timeout is VOD's per request: waiting for a free slot does not count.
            async with (
                self._slots,
                self._http.post(
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.faults.callback_timeout),
                ) as response,
            ):
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.deliveries.append(Delivery(job.job_id, url, attempt, None, type(exc).__name__))
            return None
        self.deliveries.append(Delivery(job.job_id, url, attempt, status))
        return status

    def _subscribed(self, job: FakeJob) -> bool:
        events = {e.strip() for e in self.config["EventTypeList"].split(",")}
        return bool(events & {"ALL", "AIComplete", job.event_type})

    def _targets(self, job: FakeJob) -> list[str]:
        if self.config["CallbackType"].upper() != "HTTP" or not self._subscribed(job):
            return []
        if job.callback_url:
            return [job.callback_url]
        return [u for u in [self.config["CallbackURL"], *self.extra_urls] if u]

    async def _write_to_queue(self, job: FakeJob) -> bool:
        """VOD writes the event's JSON, raw, to the queue; a failed write is retried twice, 1 s
        apart, then the event is dropped (vod-reference.md 6.7, mns-reference.md 7.2). Only the
        simulator's own queue service is ever written to, whatever MnsEndpoint names."""
        queue = self.config["MnsQueueName"]
        if not queue or not self._subscribed(job):
            self.dropped.append(job.job_id)
            return False
        body = json.dumps(job.event())
        target = f"mns:{queue}"
        for attempt in range(1, QUEUE_ATTEMPTS + 1):
            job.attempts += 1
            if await self.mns.put(queue, [body]):
                self.deliveries.append(Delivery(job.job_id, target, attempt, 201))
                job.acknowledged += 1
                return True
            self.deliveries.append(Delivery(job.job_id, target, attempt, None, "QueueNotExist"))
            if attempt < QUEUE_ATTEMPTS:
                await asyncio.sleep(self.faults.callback_interval)
        log.info("MNS write for %s dropped: queue %r does not exist", job.job_id, queue)
        self.dropped.append(job.job_id)
        return False
