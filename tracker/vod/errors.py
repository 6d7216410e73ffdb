"""VOD's errors: what a failed call raises, and which of VOD's answers are throttling.

No database here, and no calls: `client.py` makes them and raises these.
"""

from __future__ import annotations

from tracker.errors import TrackerError

# Throttling answers: VOD's codes, plus HTTP 429/503 whatever the code (section 1.5).
THROTTLE_STATUSES = frozenset({429, 503})
# Refusals of the key pair itself: nothing was done, so the call is sent again, once, with
# credentials fetched anew (STS credentials revoked or expired early; vod-reference.md 1.5).
CREDENTIAL_CODES = frozenset(
    {
        "InvalidSecurityToken.Expired",
        "InvalidSecurityToken.Malformed",
        "InvalidSecurityToken.MismatchWithAccessKey",
        "MissingSecurityToken",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
    }
)


# Each VOD error states the HTTP status the tracker answers with when it ends a request: the
# one place those statuses are decided (POST /jobs, and anything else that lets one through).


class VodError(TrackerError):
    """VOD answered with an error body; `message` is VOD's Message (secrets redacted)."""

    status_code = 502
    code = "vod_error"

    def __init__(
        self,
        message: str,
        *,
        vod_code: str,
        http_status: int,
        request_id: str | None = None,
        recommend: str | None = None,
    ) -> None:
        super().__init__(message, vod_code=vod_code, http_status=http_status, request_id=request_id)
        self.vod_code = vod_code
        self.http_status = http_status
        self.request_id = request_id
        self.recommend = recommend

    def __str__(self) -> str:
        return f"{self.vod_code} (HTTP {self.http_status}): {self.message}"


class VodThrottled(VodError):
    """Still throttled after the bounded retries."""

    status_code = 429
    code = "vod_throttled"


class VodOutcomeUnknown(TrackerError):
    """The request may have reached VOD; a SubmitAIJob must not be retried (-> submit_unknown)."""

    status_code = 504
    code = "vod_outcome_unknown"


class VodAnswerUnclear(VodOutcomeUnknown):
    """VOD answered SubmitAIJob with a success status but no usable JobId for a type (an empty
    or unreadable body, a job without its Type, an error Code): it may have created the job,
    so it is `submit_unknown` like a lost answer, but VOD did answer (502, not 504)."""

    status_code = 502
    code = "vod_answer_unclear"


class VodRequestInvalid(TrackerError):
    """The request could not be built as VOD takes it (tracker.vod.client.json_param): nothing
    was sent, so nothing was created (-> submit_failed)."""

    status_code = 400
    code = "vod_request_invalid"


class VodUnreachable(TrackerError):
    """The request never reached VOD (connect failures after retries): nothing was submitted."""

    status_code = 502
    code = "vod_unreachable"


def is_throttling(error: VodError) -> bool:
    return error.vod_code.startswith("Throttling") or (error.http_status in THROTTLE_STATUSES)


def as_throttled(error: VodError) -> VodThrottled:
    return VodThrottled(
        error.message,
        vod_code=error.vod_code,
        http_status=error.http_status,
        request_id=error.request_id,
        recommend=error.recommend,
    )
