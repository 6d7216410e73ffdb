"""Every metric and label the Grafana dashboard and the alert rules name is in the /metrics of a
real `tracker serve`, once it has seen a little of everything (submissions, callbacks good and
refused, an MNS message and an MNS outage, a webhook, scheduled runs).

A process of its own, so only what that tracker counted is there: this test process's metrics
registry has seen every other test."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.files import alert_rules, dashboard_targets, variable_queries
from tests.deploy.promql import Names, label_values_query, names
from tests.notify.receivers import Receiver
from tests.processes import TrackerProcess, free_port
from tracker.fakevod import FakeVod, Faults
from tracker.vod.signing import sign_callback

# Series Prometheus makes itself when it scrapes, not the tracker.
SCRAPE_SERIES = {"up"}
# Labels a scrape adds to every series; a metric's own label of the same name becomes
# `exported_<name>` (Prometheus' honor_labels: false, the default).
TARGET_LABELS = {"job", "instance"}
KEY_ID, KEY_SECRET = "LTAImonitoring", "monitoring-secret"
AUTH_KEY = "monitoring-auth-key"
QUEUE = "vod-events"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Named:
    """What one expression names, and where it was found (for the failure message)."""

    where: str
    names: Names
    legend: set[str] = field(default_factory=set)


def everything_named() -> list[Named]:
    found = []
    for title, target in dashboard_targets():
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        found.append(Named(f"panel {title!r}", names(target["expr"]), legend))
    for query in variable_queries():
        parsed = label_values_query(query)
        assert parsed is not None, query
        variable_names, label = parsed
        found.append(Named(f"variable {query!r}", variable_names, {label}))
    for rule in alert_rules():
        text = " ".join(rule["annotations"].values())
        labels = set(re.findall(r"\$labels\.(\w+)", text))
        found.append(Named(f"alert {rule['alert']}", names(rule["expr"]), labels))
    return found


def served(text: str) -> dict[str, set[str]]:
    """Each sample name in a /metrics text, with the label names of its samples."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def scraped_as(label: str) -> str | None:
    """The label of /metrics a label in a query stands for; None for a scrape's own label."""
    if label.startswith("exported_"):
        return label.removeprefix("exported_")
    return None if label in TARGET_LABELS else label


def missing(named: list[Named], metrics: dict[str, set[str]]) -> list[str]:
    problems = []
    for item in named:
        exposed = item.names.metrics - SCRAPE_SERIES
        for metric in sorted(exposed - metrics.keys()):
            problems.append(f"{item.where}: no {metric} in /metrics")
        for metric, labels in item.names.matched.items():
            for label in labels:
                own = scraped_as(label)
                if metric in metrics and own is not None and own not in metrics[metric]:
                    problems.append(f"{item.where}: {metric} has no label {label}")
        # Grouping and legend labels belong to some metric of the expression.
        known = set().union(*(metrics.get(metric, set()) for metric in exposed))
        for label in item.names.grouped | item.legend:
            own = scraped_as(label)
            if own is not None and own not in known:
                problems.append(f"{item.where}: groups or shows {label}, which none of its has")
    return problems


@asynccontextmanager
async def monitored_tracker(database_url: str) -> AsyncIterator[tuple[str, FakeVod]]:
    """`tracker serve` with everything on: VOD, MNS and webhooks on loopback, fast schedules."""
    port = free_port()
    callback_url = f"http://127.0.0.1:{port}/callbacks/vod"
    fake = FakeVod(
        access_key_id=KEY_ID,
        access_key_secret=KEY_SECRET,
        callback_url=callback_url,
        auth_key=AUTH_KEY,
        seed=3,
        faults=Faults(delay=0.3, duplicate_rate=1.0),
    )
    receiver = Receiver(secret=WEBHOOK_SECRET)
    await fake.start()
    await receiver.start()
    fake.mns.create_queue(QUEUE)
    env = {
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": fake.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": KEY_SECRET,
        "TRACKER_CALLBACK_URL": callback_url,
        "TRACKER_CALLBACK_AUTH_KEY": AUTH_KEY,
        "TRACKER_MNS_ENDPOINT": fake.mns.url,
        "TRACKER_MNS_QUEUE": QUEUE,
        "TRACKER_MNS_WAIT": "1",
        "TRACKER_NOTIFY_URL": receiver.url,
        "TRACKER_NOTIFY_SECRET": WEBHOOK_SECRET,
        "TRACKER_NOTIFY_ALLOW_PRIVATE": "on",
        "TRACKER_SWEEP_INTERVAL": "0.5s",
        "TRACKER_RECONCILE_INTERVAL": "1s",
        "TRACKER_CONFIRM_INTERVAL": "0.5s",
        "TRACKER_RECOVER_INTERVAL": "1s",
        "TRACKER_LEASE_TTL": "3s",
    }
    server = TrackerProcess("serve", env=env, port=port)
    try:
        await asyncio.to_thread(server.wait_ready)
        yield server.url, fake
    finally:
        await asyncio.to_thread(server.stop)
        await receiver.stop()
        await fake.stop()


async def a_little_of_everything(http: httpx.AsyncClient, url: str, fake: FakeVod) -> None:
    submitted = await http.post(
        f"{url}/jobs", json={"media_id": "monitored-1", "types": ["AIVideoTag", "AIMediaDNA"]}
    )
    assert submitted.status_code == 201, submitted.text
    assert (await http.get(f"{url}/jobs/no-such-job")).status_code == 404
    callbacks = f"{url}/callbacks/vod"
    assert (await http.post(callbacks, content=b"{}")).status_code == 401  # unsigned
    stamp = int(time.time())
    signed = {
        "X-VOD-TIMESTAMP": str(stamp),
        "X-VOD-SIGNATURE": sign_callback(callbacks, stamp, AUTH_KEY),
    }
    upload = {
        "EventType": "FileUploadComplete",
        "EventTime": "2026-01-02T03:04:05Z",
        "VideoId": "v1",
    }
    assert (await http.post(callbacks, json=upload, headers=signed)).status_code == 200
    assert await fake.mns.put(QUEUE, [json.dumps({**upload, "VideoId": "v2"})])
    await asyncio.sleep(1)
    fake.mns.outage = True  # the consumer backs off and counts the errors
    await asyncio.sleep(2.5)
    fake.mns.outage = False


async def test_every_metric_the_dashboard_and_the_alerts_name_is_served(
    database_url: str,
) -> None:
    named = everything_named()
    wanted = set().union(*(item.names.metrics for item in named)) - SCRAPE_SERIES
    assert len(wanted) > 20  # the reader found the metrics, not nothing
    async with monitored_tracker(database_url) as (url, fake), httpx.AsyncClient() as http:
        await a_little_of_everything(http, url, fake)
        deadline = time.monotonic() + 30
        while True:  # until the scheduled runs, callbacks and webhooks have all been counted
            metrics = served((await http.get(f"{url}/metrics")).text)
            if wanted <= metrics.keys() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    assert missing(named, metrics) == []


def test_the_check_finds_a_metric_or_label_that_is_not_served() -> None:
    metrics = {"tracker_jobs": {"type", "state"}, "tracker_runs_total": {"job", "outcome"}}
    named = [
        Named("a", names('sum by (state) (tracker_jobs{job=~"$job"})'), {"state"}),
        Named("b", names('max by (exported_job) (tracker_runs_total{outcome="ok"})')),
        Named("c", names("tracker_jobz"), set()),
        Named("d", names('tracker_jobs{stat="processing"}')),
        Named("e", names("sum by (kind) (tracker_jobs)")),
        Named("f", names("max by (exported_job) (tracker_jobs)")),
        Named("g", names("up == 0"), {"instance"}),
    ]
    assert missing(named, metrics) == [
        "c: no tracker_jobz in /metrics",
        "d: tracker_jobs has no label stat",
        "e: groups or shows kind, which none of its has",
        "f: groups or shows exported_job, which none of its has",
    ]


@pytest.mark.parametrize("label", ["exported_job", "job", "instance", "state"])
def test_scrape_labels_are_told_apart(label: str) -> None:
    assert scraped_as(label) == {"exported_job": "job", "state": "state"}.get(label)
