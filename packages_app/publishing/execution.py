"""Executing publications: take them (taking.py), send each when the shared pacing schedule gives
it a slot, record what Kombo answered (transitions.py), hand back what was not sent. A single
publication is a batch of one: there is one path, on every database.

A batch message's publications go one after another in this process, so concurrency against
Kombo stays one request per worker process. The requests go from a sender thread, so that the
previous answer is recorded while the next request is on its way; whether to send the next one is
decided on the previous answer first. No attempt starts after the batch's time budget, after Kombo
answers 429, after the task's soft time limit, or when no pacing slot is near: what is left is
handed back as it was and queued again. A pacing slot is reserved only for a request about to be
sent. No lease is released while a request of the batch is on its way.
"""
import logging
import os
import random
import threading
import time
import traceback
import uuid
from concurrent import futures
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils import timezone

from .. import kombo, pacing
from . import queueing, taking, transitions
from .client import integration_base_url_for, kombo_client, redact_key
from .leases import lease_seconds, leases_release

logger = logging.getLogger(__name__)

Status = transitions.Status
# When another publication of the same integration holds the lease, look again after this long.
LEASE_BUSY_RETRY_SECONDS = 1.0
# A batch that failed queues what it had not handled again after this long (not at once: the
# failure may well repeat).
RETRY_AFTER_BATCH_FAILURE_SECONDS = 30
PACED = "paced"
# The task's thread waits for the sender's answer in steps this long: Python runs a signal's
# handler (Celery's soft time limit) in that thread, at the latest when a step ends.
SIGNAL_CHECK_SECONDS = 0.1


@dataclass
class ExecuteResult:
    status: str
    retry_in: float | None = None   # the publication is queued again in this many seconds
    sent: bool = False              # a request reached (or tried to reach) Kombo this time


@dataclass
class _Clock:
    """A message's time: its budget for starting attempts and its hard time limit."""

    budget: float
    limit: float
    started: float = field(default_factory=time.monotonic)

    def spent(self):
        return time.monotonic() - self.started > self.budget

    def lease_seconds(self):
        return lease_seconds(self.limit - (time.monotonic() - self.started))


def publication_execute(*, publication_id):
    """Run one attempt of a publication if it is due, and record what happened.

    Safe to call any number of times, concurrently, for the same id: only the holder of the
    integration's lease sends, and a publication in a final state is left alone.
    """
    (result,) = publications_execute(publication_ids=[publication_id], time_budget=float("inf"),
                                     time_limit=settings.CELERY_TASK_TIME_LIMIT)
    return result


def publications_execute(*, publication_ids, time_budget=None, time_limit=None):
    """Execute a message's publications in order; an ExecuteResult per distinct id, in order.
    If something fails, what was not handled is queued again before the error goes on."""
    clock = _Clock(budget=settings.KOMBO_PUBLISH_BATCH_SECONDS if time_budget is None else time_budget,
                   limit=settings.KOMBO_BATCH_TIME_LIMIT if time_limit is None else time_limit)
    ids = list(dict.fromkeys(publication_ids))
    results = {}
    try:
        _run(ids, clock, results)
    except Exception:
        rest = [pk for pk in ids if pk not in results]
        logger.exception("Publishing failed; %s publication(s) not handled are queued again in %s s.",
                         len(rest), RETRY_AFTER_BATCH_FAILURE_SECONDS)
        if rest:
            queueing.publications_enqueue(publication_ids=rest, countdown=RETRY_AFTER_BATCH_FAILURE_SECONDS)
        raise
    return [results[pk] for pk in ids]


def _run(ids, clock, results):
    if clock.spent():
        # Redelivered late, say: take nothing, leave it all to a fresh message.
        queueing.publications_enqueue(publication_ids=ids)
        results |= {pk: ExecuteResult(Status.QUEUED, retry_in=0) for pk in ids}
        return
    token = uuid.uuid4().hex
    took = taking.take(ids, token=token, lease_seconds=clock.lease_seconds())
    busy = [pk for pk, why in took.untaken.items() if why == taking.BUSY]
    for pk, why in took.untaken.items():
        if why == taking.MISSING:
            logger.error("Publication %s does not exist; nothing to do.", pk)
        if why != taking.BUSY:
            results[pk] = ExecuteResult(why)
    if busy:
        # Another publication of the integration is in flight: look again shortly.
        wait = LEASE_BUSY_RETRY_SECONDS * (1 + random.random())
        queueing.publications_enqueue(publication_ids=busy, countdown=wait)
        results |= {pk: ExecuteResult(Status.QUEUED, retry_in=wait) for pk in busy}
    pending, requeue_in, paced = list(took.taken), None, False
    answered = None      # (Taken, outcome, when, its request): Kombo's last answer, not yet recorded
    request = None       # the last request sent
    sender = _sender()
    try:
        while pending:
            one = pending[0]
            if clock.spent():
                logger.info("Out of time after %s request(s); %s publication(s) queued again.",
                            len(took.taken) - len(pending), len(pending))
                break
            slot = pacing.reserve_slot(max_wait=settings.KOMBO_PACING_MAX_WAIT_SECONDS)
            if not slot.granted:
                requeue_in, paced = min(slot.wait + random.random(), queueing.MAX_COUNTDOWN_SECONDS), True
                break
            if slot.wait > 0:
                time.sleep(slot.wait)
            request = sender.submit(_send, one)
            pending.pop(0)
            if answered:
                # The previous answer is recorded while this request is on its way: the database
                # work costs the batch no time. Only answers that let the batch go on get here.
                _record(*answered, token=token, results=results)
            outcome, stop, when = _answer_of(request)
            answered = (one, outcome, when, request)
            if stop or (isinstance(outcome, kombo.KomboError) and outcome.http_status == 429):
                break  # decided before any further request (out of time; Kombo said slow down)
        if answered:
            wait = _record(*answered, token=token, results=results)
            if answered[1].http_status == 429:
                # Kombo asked everyone to slow down: the rest wait as long as this one.
                requeue_in = min(wait or 0, queueing.MAX_COUNTDOWN_SECONDS)
    finally:
        # Whatever happened above: what was not sent is handed back, and no lease of this run
        # outlives it, even if handing back failed; but none is released while a request of this
        # run is on its way (one request per integration in flight).
        try:
            _hand_back(pending, token, requeue_in, paced, results)
        finally:
            try:
                _wait_for(request)
            finally:
                leases_release({t.integration_id for t in took.taken}, token=token)


def _sender():
    """This thread's sender: one thread that makes this batch's requests, one at a time. Kept for
    the next message (a pool process runs one message at a time; a thread pool, one per thread)."""
    executor = getattr(_senders, "executor", None)
    if executor is None:
        executor = _senders.executor = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kombo-put")
    return executor


_senders = threading.local()
# A process forked from one that had a sender must not inherit its (threadless) executor.
os.register_at_fork(after_in_child=lambda: _senders.__dict__.pop("executor", None))


def _wait_for(request):
    """Until the request has ended. The task's time limit does not cut this short: if the request
    never ends, the hard limit ends the process with the leases still held, and they expire."""
    while request is not None:
        try:
            futures.wait([request])
            return
        except SoftTimeLimitExceeded:
            continue


def _answer_of(request):
    """(outcome, stop, when) of a request on its way. The task's soft time limit arrives in this
    thread, while it waits: the batch stops there, and the attempt counts as cut short unless its
    answer had just come."""
    try:
        while True:
            try:
                return request.result(timeout=SIGNAL_CHECK_SECONDS)
            except futures.TimeoutError:
                continue  # the kernel may hand the signal to another thread: look again shortly
    except SoftTimeLimitExceeded:
        if request.done():
            outcome, _, when = request.result()
            return outcome, True, when
        # Kombo may or may not get the list: sending it again is the way to know.
        return (kombo.KomboError(kombo.ErrorKind.TRANSIENT, "The attempt ran past the task's time limit."),
                True, timezone.now())


def _record(taken, outcome, when, request, *, token, results):
    """Record Kombo's answer to one attempt (transitions); an error also frees the integration's
    lease at once (unless its request is still on its way: cut short by the time limit) and queues
    the retry. Returns the seconds until the next attempt, or None."""
    if isinstance(outcome, kombo.KomboSuccess):
        status = transitions.record_success(taken, outcome, when, token=token)
        results[taken.publication_id] = ExecuteResult(status, sent=True)
        return None
    status, wait = transitions.record_error(taken, outcome, token=token)
    if request.done():
        leases_release([taken.integration_id], token=token)
    results[taken.publication_id] = ExecuteResult(status, retry_in=wait, sent=True)
    if wait is not None and queueing.countdown_within_cap(wait) is not None:
        queueing.publication_enqueue(publication_id=taken.publication_id, countdown=wait)
    return wait


def _hand_back(pending, token, requeue_in, paced, results):
    if not pending:
        return
    back = transitions.hand_back(pending, token=token)
    again = [t.publication_id for t in pending if back.get(t.publication_id) in taking.RESTING]
    if again:
        queueing.publications_enqueue(publication_ids=again, countdown=requeue_in)
    for taken in pending:
        status = back.get(taken.publication_id, Status.SENDING)
        results[taken.publication_id] = ExecuteResult(PACED if paced and status in taking.RESTING else status,
                                                      retry_in=requeue_in or 0)


def _send(taken):
    """PUT the body once (in the batch's sender thread): (Kombo's success or the KomboError to
    record, whether to stop the batch, when the answer came). A bug is an error too, never a
    loop."""
    try:
        outcome, stop = kombo_client().set_packages(
            base_url=integration_base_url_for(taken.region),
            integration_id=taken.kombo_integration_id,
            body=taken.body.encode("utf-8"),
        ), False
    except kombo.KomboError as error:
        pacing.observe(http_status=error.http_status, retry_after=error.retry_after)
        outcome, stop = error, False
    except Exception as exc:
        logger.error("Publication %s attempt %s raised:\n%s", taken.publication_id, taken.number,
                     redact_key(traceback.format_exc()))
        outcome, stop = kombo.KomboError(
            kombo.ErrorKind.PERMANENT,
            f"Unexpected error while sending ({type(exc).__name__}); the worker log has the details.",
        ), False
    return outcome, stop, timezone.now()
