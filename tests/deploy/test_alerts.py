"""deploy/prometheus: the rules pass `promtool check rules`, the configuration loads them, and
each alert fires on the series it is about (and stays quiet on healthy ones) under
`promtool test rules`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import yaml

from tests import programs
from tests.deploy.files import ALERTS, alert_rules

DEPLOY = ALERTS.parent
SCRAPED = {"job": "tracker"}  # what `max without (instance)` keeps of a scrape's labels


def promtool(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [programs.promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_checks_the_alert_rules() -> None:
    output = promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_the_example_configuration_scrapes_the_tracker_and_loads_the_rules(
    tmp_path: Path,
) -> None:
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(DEPLOY / name, tmp_path / name)
    (tmp_path / "tracker-metrics-token").write_text("a-metrics-token\n")
    output = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS: 1 rule files found" in output


def test_every_alert_says_how_long_how_bad_and_what_to_do() -> None:
    for rule in alert_rules():
        name = rule["alert"]
        assert name.startswith("Tracker"), name
        assert "for" in rule, name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert len(rule["annotations"]["summary"]) > 20, name
        # An operator can act on it: it names a route, a command or a setting to look at.
        description = rule["annotations"]["description"]
        assert any(word in description for word in ("GET ", "POST ", "`tracker", "TRACKER_")), name


class Case(NamedTuple):
    alert: str
    series: dict[str, str]  # series -> promtool's expanding notation, one value a minute
    at: int  # minutes
    fires: list[dict[str, str]]  # the alerts' labels (beside alertname and severity)


def series(name: str, instance: str = "a:8000", **labels: str) -> str:
    """A series as a scrape of one replica stores it."""
    pairs = {"job": "tracker", "instance": instance, **labels}
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


VOD = "tracker_vod_calls_total"
REJECTED = "tracker_callbacks_rejected_total"
MNS = "tracker_mns_consumer_state"
ATTEMPTS = "tracker_webhook_attempts_total"
SCHEDULER = "tracker_scheduler_job_state"
HTTP = "tracker_http_requests_total"

# One firing and one quiet case per alert (a test below sees that none is missing).
CASES = [
    Case("TrackerDown", {series("up"): "1 1 0x10"}, 10, [{"instance": "a:8000"}]),
    Case("TrackerDown", {series("up"): "1x15"}, 10, []),
    # Two replicas report the same database figure: one alert, not two.
    Case(
        "TrackerStaleJobs",
        {series("tracker_stale_jobs"): "3x40", series("tracker_stale_jobs", "b:8000"): "3x40"},
        35,
        [{}],
    ),
    Case("TrackerStaleJobs", {series("tracker_stale_jobs"): "3x20 0x20"}, 35, []),
    Case(
        "TrackerCallbacksRefused",
        {
            series("tracker_callbacks_received_total"): "0+10x40",
            series(REJECTED, reason="bad_signature"): "0+5x40",
        },
        35,
        [{"reason": "bad_signature"}],
    ),
    # A few malformed bodies are no alarm; 503s have an alert of their own.
    Case(
        "TrackerCallbacksRefused",
        {
            series("tracker_callbacks_received_total"): "0+10x40",
            series(REJECTED, reason="malformed"): "0+0.5x40",
            series(REJECTED, reason="unavailable"): "0+8x40",
        },
        35,
        [],
    ),
    Case(
        "TrackerCallbacksNotStored",
        {series(REJECTED, reason="unavailable"): "0 0 0 1 2 3 4 5"},
        6,
        [{"reason": "unavailable"}],
    ),
    Case("TrackerCallbacksNotStored", {series(REJECTED, reason="unavailable"): "5x10"}, 6, []),
    # Retries are not calls: counted in, 4 failures in 110 would stay under the threshold.
    Case(
        "TrackerVodCallsFailing",
        {
            series(VOD, action="SubmitAIJob", outcome="ok"): "0+6x40",
            series(VOD, action="SubmitAIJob", outcome="error"): "0+4x40",
            series(VOD, action="SubmitAIJob", outcome="retried"): "0+100x40",
            series(VOD, action="ListAIJob", outcome="ok"): "0+10x40",
        },
        35,
        [{"action": "SubmitAIJob"}],
    ),
    Case(
        "TrackerVodCallsFailing",
        {
            series(VOD, action="ListAIJob", outcome="ok"): "0+10x40",
            series(VOD, action="ListAIJob", outcome="unreachable"): "0+1x40",
        },
        35,
        [],
    ),
    Case(
        "TrackerVodThrottled",
        {series(VOD, action="ListAIJob", outcome="throttled"): "0+1x40"},
        35,
        [{"action": "ListAIJob"}],
    ),
    Case(
        "TrackerVodThrottled",
        {series(VOD, action="ListAIJob", outcome="throttled"): "5x40"},
        35,
        [],
    ),
    Case(
        "TrackerMnsConsumerFailed",
        {series(MNS, state="failed"): "0 0 1x10"},
        10,
        [{"instance": "a:8000", "state": "failed"}],
    ),
    Case("TrackerMnsConsumerFailed", {series(MNS, state="failed"): "0 1 1 0x10"}, 10, []),
    Case(
        "TrackerMnsConsumerBackingOff",
        {series(MNS, state="backing_off"): "1x15"},
        15,
        [{"instance": "a:8000", "state": "backing_off"}],
    ),
    Case("TrackerMnsConsumerBackingOff", {series(MNS, state="backing_off"): "1x5 0x10"}, 15, []),
    Case(
        "TrackerDeliveriesFailing",
        {
            series(ATTEMPTS, result="succeeded"): "0+1x40",
            series(ATTEMPTS, result="pending"): "0+3x40",
        },
        35,
        [{}],
    ),
    Case(
        "TrackerDeliveriesFailing",
        {
            series(ATTEMPTS, result="succeeded"): "0+1x40",
            series(ATTEMPTS, result="pending"): "0+0.5x40",
        },
        35,
        [],
    ),
    Case(
        "TrackerDeliveriesDeadLettered",
        {series("tracker_deliveries_failed"): "0x10 2x10"},
        15,
        [{}],
    ),
    Case("TrackerDeliveriesDeadLettered", {series("tracker_deliveries_failed"): "2x20"}, 15, []),
    Case(
        "TrackerDeliveryBacklogGrowing", {series("tracker_deliveries_pending"): "0+10x70"}, 65, [{}]
    ),
    # A large backlog that is being worked off is no alarm.
    Case(
        "TrackerDeliveryBacklogGrowing", {series("tracker_deliveries_pending"): "1000-5x70"}, 65, []
    ),
    Case(
        "TrackerSubscriptionDisabled",
        {series("tracker_subscriptions_disabled"): "0x10 1x10"},
        15,
        [{}],
    ),
    Case("TrackerSubscriptionDisabled", {series("tracker_subscriptions_disabled"): "1x20"}, 15, []),
    # The scheduler's own `job` label is kept by Prometheus as `exported_job`.
    Case(
        "TrackerSchedulerJobNotRunning",
        {
            series(SCHEDULER, exported_job="sweep", state="ok"): "1x5 0x20",
            series(SCHEDULER, exported_job="sweep", state="late"): "0x5 1x20",
            series(SCHEDULER, exported_job="reconcile", state="ok"): "1x25",
        },
        20,
        [{"exported_job": "sweep", "state": "late"}],
    ),
    # Late for a moment, and a job turned off (no VOD credentials): no alarm.
    Case(
        "TrackerSchedulerJobNotRunning",
        {
            series(SCHEDULER, exported_job="sweep", state="late"): "0x5 1x3 0x20",
            series(SCHEDULER, exported_job="recover", state="off"): "1x25",
        },
        20,
        [],
    ),
    Case(
        "TrackerSchedulerJobFailing",
        {series(SCHEDULER, exported_job="retention", state="failing"): "1x20"},
        20,
        [{"exported_job": "retention", "state": "failing"}],
    ),
    Case(
        "TrackerSchedulerJobFailing",
        {series(SCHEDULER, exported_job="retention", state="failing"): "1x10 0x10"},
        20,
        [],
    ),
    Case(
        "TrackerHttpServerErrors",
        {
            series(HTTP, route="/jobs", method="POST", status="201"): "0+10x30",
            series(HTTP, route="/jobs", method="POST", status="503"): "0+2x30",
        },
        25,
        [{}],
    ),
    Case(
        "TrackerHttpServerErrors",
        {
            series(HTTP, route="/jobs", method="POST", status="201"): "0+10x30",
            series(HTTP, route="/jobs", method="POST", status="500"): "0+0.2x30",
        },
        25,
        [],
    ),
]


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {case.alert for case in CASES if case.fires} == names
    assert {case.alert for case in CASES if not case.fires} == names


def test_each_alert_fires_on_its_series_and_not_on_healthy_ones(tmp_path: Path) -> None:
    # promtool compares annotations too; the rendered texts are not what these cases are about,
    # so they run against a copy without them (`check rules` above validates the templates).
    document = yaml.safe_load(ALERTS.read_text())
    severity = {}
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
            severity[rule["alert"]] = rule["labels"]["severity"]
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document))
    tests = [
        {
            "interval": "1m",
            "name": f"{case.alert} {'fires' if case.fires else 'stays quiet'} ({n})",
            "input_series": [
                {"series": series, "values": values} for series, values in case.series.items()
            ],
            "alert_rule_test": [
                {
                    "eval_time": f"{case.at}m",
                    "alertname": case.alert,
                    "exp_alerts": [
                        {"exp_labels": {**SCRAPED, **labels, "severity": severity[case.alert]}}
                        for labels in case.fires
                    ],
                }
            ],
        }
        for n, case in enumerate(CASES)
    ]
    unit = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(unit))
    output = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert "SUCCESS" in output


def test_the_scrape_job_the_rules_name_is_the_example_configuration_s() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    [job] = [scrape["job_name"] for scrape in config["scrape_configs"]]
    down = next(rule for rule in alert_rules() if rule["alert"] == "TrackerDown")
    assert f'job="{job}"' in down["expr"]
