"""Prometheus metrics of the process, defined in one place so every module counts the same way."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "tracker_http_requests_total",
    "HTTP requests by route and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "tracker_http_request_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

CALLBACKS_RECEIVED = Counter("tracker_callbacks_received_total", "Callback requests received")
CALLBACKS_REJECTED = Counter(
    "tracker_callbacks_rejected_total", "Callbacks refused before storage", ["reason"]
)
CALLBACKS_DUPLICATE = Counter("tracker_callbacks_duplicate_total", "Repeated deliveries")
CALLBACKS_APPLIED = Counter("tracker_callbacks_applied_total", "Callbacks applied to a job")
CALLBACKS_UNAPPLIED = Counter(
    "tracker_callbacks_unapplied_total", "Callbacks stored but not applied", ["reason"]
)

JOBS = Gauge("tracker_jobs", "Jobs by type and state", ["type", "state"])
STALE_JOBS = Gauge("tracker_stale_jobs", "Unfinished jobs flagged stale")
OLDEST_UNFINISHED_SECONDS = Gauge(
    "tracker_oldest_unfinished_job_seconds", "Age of the oldest unfinished job"
)

SUBMITTED_JOBS = Counter(
    "tracker_submitted_jobs_total",
    "Job types asked of the submitter, by what happened (submitted, skipped, failed, unknown)",
    ["type", "outcome"],
)

VOD_CALLS = Counter(
    "tracker_vod_calls_total", "Calls to VOD by action and outcome", ["action", "outcome"]
)
VOD_SECONDS = Histogram("tracker_vod_call_seconds", "VOD call latency by action", ["action"])

SCHEDULER_RUNS = Counter(
    "tracker_scheduler_runs_total", "Scheduled job runs by job and outcome", ["job", "outcome"]
)
SCHEDULER_LAST_RUN = Gauge(
    "tracker_scheduler_last_run_timestamp_seconds", "When each scheduled job last finished", ["job"]
)
SCHEDULER_SECONDS = Gauge(
    "tracker_scheduler_last_run_duration_seconds", "How long each scheduled job last took", ["job"]
)

WEBHOOK_ATTEMPTS = Counter(
    "tracker_webhook_attempts_total",
    "Webhook attempts by what became of the delivery (succeeded, pending: retried, failed)",
    ["result"],
)
SUBSCRIPTIONS_DISABLED = Gauge(
    "tracker_subscriptions_disabled",
    "Subscriptions disabled (410 Gone, failing too long, or by hand): nothing is sent to them",
)
MNS_MESSAGES = Counter(
    "tracker_mns_messages_total",
    "Messages received from the MNS queue, by outcome (stored, duplicate, malformed, not_stored)",
    ["outcome"],
)
MNS_DELETED = Counter("tracker_mns_deleted_total", "MNS messages deleted after their commit")
MNS_EXPIRED_HANDLES = Counter(
    "tracker_mns_expired_handles_total",
    "Stored MNS messages whose receipt handle expired before the delete (they come back)",
)
MNS_ERRORS = Counter(
    "tracker_mns_errors_total",
    "Failed MNS calls (unreachable, throttled, server_error, client_error, failed)",
    ["kind"],
)
MNS_STATE = Gauge("tracker_mns_consumer_state", "1 for the MNS consumer's current state", ["state"])

# Read from the database at each scrape (api/telemetry.py), so every replica reports the same
# figures whichever process runs the relay or the scheduler: aggregate them with max, not sum.
DELIVERIES_PENDING = Gauge(
    "tracker_deliveries_pending",
    "Deliveries to subscribers waiting for an attempt or being sent (the backlog)",
)
DELIVERIES_FAILED = Gauge(
    "tracker_deliveries_failed",
    "Deliveries that used every attempt (dead letters, replayable)",
)
SCHEDULER_STATE = Gauge(
    "tracker_scheduler_job_state",
    "1 for each scheduled job's state as /readyz judges it from every replica's heartbeats "
    "(ok, running, late, stuck, failing, never, off)",
    ["job", "state"],
)

# The spend guard (tracker/submit/budget.py). Minutes this process submitted (VOD accepted, or
# the outcome is unknown and VOD may have charged): sum them. Minutes left of each limited type's
# day, read from the database at each scrape like the gauges above: aggregate with max.
VIDEO_MINUTES_SUBMITTED = Counter(
    "tracker_video_minutes_submitted_total",
    "Minutes of video submitted by this process (VOD's durations), by job type and region",
    ["type", "region"],
)
BUDGET_MINUTES_LEFT = Gauge(
    "tracker_budget_minutes_left",
    "Minutes of video left of today's budget (UTC) per job type with a limit",
    ["type"],
)
