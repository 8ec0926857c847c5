"""Every way a publication leaves `sending` or ends without a request, each written once and used
by every path on every database (the take, into `sending`, is in taking.py).

Rows resting (queued, retrying, waiting) are guarded by their status alone; rows a run has taken
by the status and that run's token on the row, which the row loses when another run takes over its
integration's expired lease (guards.py, leases.py). So a late answer after a lost lease, a
duplicate message or a cancel racing a send can change nothing that happened meanwhile.
"""
import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import F, TextField, Value
from django.db.models.functions import Concat
from django.utils import timezone

from ..models import Publication, PublicationAttempt
from . import guards, outcomes

logger = logging.getLogger(__name__)

Status = Publication.Status
SUPERSEDED_REASON = "A newer publication of this integration was requested; it carries the newer catalogue."
IN_FLIGHT_CANCEL = " (its request was in flight and its answer is kept)"
PAUSED_REASON = "The integration was paused."
MOVED_REASON = "The integration moved to another Kombo integration id or region before this was sent."


def _rows(ids, *, token):
    """Resting rows (no token), or rows left sending whose integration this run now leases."""
    if token is None:
        return guards.guarded(ids, expect=Publication.RESTING_STATUSES)
    return guards.leased(ids, expect=[Status.SENDING], token=token)


def _stamp(token):
    return {} if token is None else {"lease_token": token}


def superseded(ids, *, token=None):
    """End older publications that a newer one of the same integration replaces."""
    done = guards.write(_rows(ids, token=token), ids, action="superseded", status=Status.SUPERSEDED,
                        finished_at=timezone.now(), next_attempt_at=None, failure_reason=SUPERSEDED_REASON,
                        **_stamp(token))
    if done:
        logger.info("%s publication(s) superseded by newer ones: %s", done, list(ids))
    return done


def failed(ids, *, reason, token=None):
    """End publications that cannot be sent (no API key, attempts spent) without a request."""
    done = guards.write(_rows(ids, token=token), ids, action="failed", status=Status.FAILED,
                        finished_at=timezone.now(), next_attempt_at=None, failure_reason=reason,
                        **_stamp(token))
    if done:
        logger.warning("Publication(s) %s failed: %s", list(ids), reason)
    return done


def cancelled(ids, *, reason=None, cancelled_by=None, token=None, explain=True):
    """End publications as cancelled. `reason` None keeps the one staff gave when they asked."""
    values = dict(status=Status.CANCELLED, finished_at=timezone.now(), next_attempt_at=None, **_stamp(token))
    if reason is not None:
        values |= dict(cancel_reason=reason, failure_reason=f"Cancelled: {reason}")
        if cancelled_by is not None:
            values["cancelled_by"] = cancelled_by
    done = guards.write(_rows(ids, token=token), ids, action="cancelled", explain=explain, **values)
    if done:
        logger.info("%s publication(s) cancelled: %s", done, list(ids))
    return done


def cancel(ids, *, reason, cancelled_by=None):
    """Staff's cancel: publications at rest end now; one in flight is marked so that it ends as
    cancelled when its request returns, keeping Kombo's answer. Returns (ended, marked)."""
    ids = list(ids)
    with transaction.atomic():
        # Staff may select publications in any state: those not at rest are no news here.
        ended = cancelled(ids, reason=reason, cancelled_by=cancelled_by, explain=False)
        marked = guards.guarded(ids, expect=[Status.SENDING]).filter(cancel_requested_at__isnull=True).update(
            **guards.fit(Publication, dict(cancel_requested_at=timezone.now(), cancelled_by=cancelled_by,
                                           cancel_reason=reason, failure_reason=f"Cancelled: {reason}")))
    return ended, marked


def _kept_cancel_reason():
    return Concat(F("failure_reason"), Value(IN_FLIGHT_CANCEL), output_field=TextField())


def _end_taken(taken, *, token, action, values, if_cancelled):
    """The one write that ends a take: the row goes to `values`, or, if staff asked to cancel it
    meanwhile, to `values` overridden by `if_cancelled` (status cancelled). Two plain guarded
    UPDATEs, the second only when the first matched nothing (a cancel was asked, or this run no
    longer holds the row). Returns the status written, or None."""
    rows = guards.guarded([taken.publication_id], expect=[Status.SENDING], token=token)
    pk = [taken.publication_id]
    if guards.write(rows.filter(cancel_requested_at__isnull=True), pk, action=action, explain=False, **values):
        return values["status"]
    if guards.write(rows.filter(cancel_requested_at__isnull=False), pk, action=action,
                    **(values | if_cancelled | {"status": Status.CANCELLED})):
        return Status.CANCELLED
    return None


def _status_now(pk):
    return Publication.objects.filter(pk=pk).values_list("status", flat=True).first()


def record_success(taken, success, finished_at, *, token):
    """Store Kombo's successful answer for one attempt and close the attempt (the batch does it
    while its next request is on its way): succeeded, or cancelled (Kombo's answer kept) if staff
    asked meanwhile. Returns the status now."""
    with transaction.atomic():
        status = _end_taken(taken, token=token, action="recorded as succeeded", values=dict(
            status=Status.SUCCEEDED, http_status=success.http_status, response_body=success.body_text,
            warnings=success.warnings, rate_limit_headers=success.limit_headers, finished_at=finished_at,
            error_code="", error_title="", error_message="", error_log_url="", next_attempt_at=None,
            failure_reason=""), if_cancelled=dict(failure_reason=_kept_cancel_reason()))
        if status:
            PublicationAttempt.objects.filter(pk=taken.attempt_id, finished_at__isnull=True).update(
                finished_at=finished_at, http_status=success.http_status, outcome=outcomes.SUCCEEDED,
                message=outcomes.success_message(success))
    for warning in success.warnings:
        logger.warning("Kombo warning for %s (publication %s): %s",
                       taken.kombo_integration_id, taken.publication_id, warning)
    status = status or _status_now(taken.publication_id)
    logger.info("Publication %s %s (HTTP %s).", taken.publication_id, status, success.http_status)
    return status


def record_error(taken, error, *, token):
    """Store Kombo's error for one attempt and decide what follows (outcomes.after_error).
    Returns (status now, seconds until the next attempt or None)."""
    now = timezone.now()
    step = outcomes.after_error(error, spent=taken.spent, started_at=taken.started_at, now=now)
    next_at = now + timedelta(seconds=step.wait) if step.wait is not None else None
    with transaction.atomic():
        status = _end_taken(taken, token=token, action=f"recorded as {step.status}", values=dict(
            status=step.status, next_attempt_at=next_at,
            finished_at=now if step.status == Status.FAILED else None, failure_reason=step.reason,
            **outcomes.error_fields(error),
        ), if_cancelled=dict(next_attempt_at=None, finished_at=now, failure_reason=_kept_cancel_reason()))
        if status:
            PublicationAttempt.objects.filter(pk=taken.attempt_id, finished_at__isnull=True).update(**guards.fit(
                PublicationAttempt, dict(finished_at=now, http_status=error.http_status, error_code=str(error.code or ""),
                                         outcome=step.outcome, message=error.reason, wait_seconds=step.wait)))
    written = status is not None
    status = status or _status_now(taken.publication_id)
    log = logger.warning if status in Publication.INCOMPLETE_STATUSES else logger.info
    log("Publication %s attempt %s: %s -> %s", taken.publication_id, taken.number, error.reason, status)
    return status, (step.wait if written and status == step.status else None)


def hand_back(taken_list, *, token):
    """Undo the take of publications whose request was never made (the batch ran out of time,
    Kombo asked everyone to slow down, no pacing slot): each as it was before, its open attempt
    gone; ended as cancelled if staff asked meanwhile. Returns {id: status now} of those handed back."""
    back = {}
    for taken in taken_list:
        status, next_attempt_at, started_at = taken.previous
        with transaction.atomic():
            written = _end_taken(taken, token=token, action="handed back", values=dict(
                status=status, next_attempt_at=next_attempt_at, started_at=started_at,
                attempts=F("attempts") - 1, finished_at=None,
            ), if_cancelled=dict(next_attempt_at=None, finished_at=timezone.now()))
            if written:
                PublicationAttempt.objects.filter(pk=taken.attempt_id, finished_at__isnull=True).delete()
                back[taken.publication_id] = written
    return back
