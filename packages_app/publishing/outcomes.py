"""Pure: what a publication becomes after Kombo's answer to one attempt, and how Kombo's error is
stored. No database here: transitions.record_error writes what these functions decide."""
from dataclasses import dataclass

from django.conf import settings

from .. import kombo
from ..models import Publication
from ..retrying import backoff_seconds

Status = Publication.Status

# PublicationAttempt.outcome values besides the error kinds (kombo.ErrorKind values).
SUCCEEDED = "succeeded"
TRANSIENT = "transient"
SYNC_PENDING = "sync_pending"      # waiting for the customer's first sync: not counted as an attempt
LOST = "lost"                      # the worker stopped during the attempt
CANCELLED = "cancelled"


@dataclass(frozen=True)
class NextStep:
    status: str          # RETRYING, WAITING or FAILED
    wait: float | None   # seconds until the next attempt (None: no next attempt)
    reason: str          # in plain words, for staff
    outcome: str         # the attempt's outcome


def after_error(error, *, spent, started_at, now):
    """The next step after `error` on an attempt; `spent` counts attempts, this one included."""
    kind = error.kind
    if kind is kombo.ErrorKind.TRANSIENT:
        if spent >= settings.KOMBO_MAX_ATTEMPTS:
            return NextStep(Status.FAILED, None, f"Gave up after {spent} attempts. Last error: {error.reason}",
                            kind.value)
        wait = backoff_seconds(
            attempt=spent, base=settings.KOMBO_RETRY_BASE_SECONDS, cap=settings.KOMBO_RETRY_MAX_WAIT_SECONDS,
            code=error.code, retry_after=error.retry_after, retry_after_cap=settings.KOMBO_RETRY_AFTER_MAX_SECONDS,
        )
        return NextStep(Status.RETRYING, wait, error.reason, TRANSIENT)
    if kind is kombo.ErrorKind.SYNC_PENDING:
        waited = (now - started_at).total_seconds()
        if waited >= settings.KOMBO_SYNC_PENDING_MAX_SECONDS:
            return NextStep(Status.FAILED, None, f"The customer's first sync had not finished after "
                            f"{waited / 3600:.1f} h. Last error: {error.reason}", kind.value)
        return NextStep(Status.WAITING, settings.KOMBO_SYNC_PENDING_RETRY_SECONDS, error.reason, SYNC_PENDING)
    if kind is kombo.ErrorKind.NO_AUTO_RETRY:
        return NextStep(Status.FAILED, None, f"{error.reason} Kombo advises against retrying this "
                        "automatically: check the log, then publish again.", kind.value)
    return NextStep(Status.FAILED, None, error.reason, kind.value)


def error_fields(error):
    """Kombo's error as stored on the publication; a log link only if it is safe and whole."""
    log_url = str(error.log_url or "")
    if not kombo.is_safe_url(log_url) or len(log_url) > 1000:
        log_url = ""
    return dict(
        http_status=error.http_status,
        response_body=error.body_text or "",
        error_code=str(error.code or ""),
        error_title=str(error.title or ""),
        error_message=str(error.message or ""),
        error_log_url=log_url,
        rate_limit_headers=error.limit_headers,
    )


def success_message(success):
    count = len(success.warnings)
    return f"{count} warning{'s' if count != 1 else ''}" if count else ""
