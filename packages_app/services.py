"""Every state change of publishing: create publications, execute one, sweep stuck ones.

The admin, the management commands and the Celery tasks call these functions and nothing else
changes a Publication. The invariants they keep are DESIGN.md section 4: a row exists before
anything is queued; the task is queued after commit; one request per integration is in flight
(a lease on the Integration row); a publication is never sent after a newer one of the same
integration; a re-run sends the same bytes and ends in the same state.
"""
import logging
import math
import os
import random
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Now
from django.utils import timezone

from . import attempt_sql, kombo, pacing, payloads
from .models import Integration, Publication, PublicationAttempt
from .retrying import backoff_seconds

logger = logging.getLogger(__name__)

Status = Publication.Status

# Messages scheduled further ahead than this are not sent to the broker at all: the sweep
# enqueues the publication when it is due. It keeps long waits out of worker memory and well
# inside the broker's visibility timeout.
MAX_COUNTDOWN_SECONDS = 600
# When another publication of the same integration holds the lease, look again after this long.
LEASE_BUSY_RETRY_SECONDS = 1.0
# A message that arrives a little before its publication's next_attempt_at still runs.
EARLY_ARRIVAL_SLACK_SECONDS = 1.0
# A batch that failed queues what it had not handled again after this long (not at once: the
# failure may well repeat).
RETRY_AFTER_BATCH_FAILURE_SECONDS = 30


class CatalogueChanged(Exception):
    """The catalogue changed between the preview staff saw and their confirmation."""

    def __init__(self, integrations):
        self.integrations = integrations
        names = ", ".join(str(i) for i in integrations)
        super().__init__(f"The packages of {names} changed since the preview.")


class IntegrationPaused(Exception):
    def __init__(self, integrations):
        self.integrations = integrations
        names = ", ".join(str(i) for i in integrations)
        super().__init__(f"{names} is paused: activate it before publishing.")


# --- configuration ---------------------------------------------------------------------------

def integration_base_url(integration):
    return settings.KOMBO_API_URL or settings.KOMBO_REGION_URLS[integration.region]


def lease_seconds(task_time_limit=None):
    """Longer than what is left of the task's hard time limit: a live attempt never loses its
    lease, and a stuck one has been killed by Celery before anyone else may take over."""
    return (settings.CELERY_TASK_TIME_LIMIT if task_time_limit is None else task_time_limit) + 10.0


_client = None
_client_pid = None


def kombo_client():
    """One client (one requests.Session, one connection pool) per worker process."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = kombo.KomboClient(
            api_key=settings.KOMBO_API_KEY,
            connect_timeout=settings.KOMBO_CONNECT_TIMEOUT,
            read_timeout=settings.KOMBO_READ_TIMEOUT,
        )
        _client_pid = os.getpid()
    return _client


def api_key_status():
    """What the admin may show of the key: whether it is set, and its last four characters."""
    key = settings.KOMBO_API_KEY
    if not key:
        return "not configured"
    return f"configured, ending in …{key[-4:]}" if len(key) >= 12 else "configured"


# --- creating publications -------------------------------------------------------------------

@dataclass
class PlannedPublication:
    """What publishing one integration would send now."""

    integration: Integration
    body: dict
    body_bytes: bytes
    sha256: str


def publication_plan(*, integration):
    body = integration.current_body()
    data = payloads.canonical_bytes(body)
    return PlannedPublication(integration, body, data, payloads.body_sha256(data))


def publication_plans(*, integrations):
    """publication_plan for many integrations at once, from plain values: each package's entry
    and bytes are built once, however many of the integrations offer it."""
    offered, rows = Integration.objects.filter(pk__in=[i.pk for i in integrations]).offered_packages()
    entries = {pk: payloads.package_entry(row) for pk, row in rows.items()}
    parts = {pk: payloads.entry_bytes(entry) for pk, entry in entries.items()}
    plans = []
    for integration in integrations:
        package_pks = sorted(offered[integration.pk], key=lambda pk: entries[pk]["id"])
        body = {"packages": [entries[pk] for pk in package_pks]}
        data = payloads.join_entries([parts[pk] for pk in package_pks])
        plans.append(PlannedPublication(integration, body, data, payloads.body_sha256(data)))
    return plans


def publications_create(*, integrations, requested_by=None, expected_sha256=None):
    """Snapshot and queue one publication per integration, all or none.

    `expected_sha256` maps integration pk to the body hash staff confirmed; if the catalogue gives
    another body now, nothing is created and CatalogueChanged names the integrations concerned.
    The tasks are queued only after the transaction commits.
    """
    ids = sorted({i.pk for i in integrations})
    with transaction.atomic():
        # Locking the integrations serialises concurrent publishes of one integration, so the
        # order of publication ids is the order of the snapshots.
        locked = list(Integration.objects.select_for_update(of=("self",)).filter(pk__in=ids).order_by("pk"))
        paused = [i for i in locked if not i.is_active]
        if paused:
            raise IntegrationPaused(paused)
        plans = publication_plans(integrations=locked)
        if expected_sha256 is not None:
            changed = [p.integration for p in plans
                       if expected_sha256.get(p.integration.pk) != p.sha256]
            if changed:
                raise CatalogueChanged(changed)
        publications = Publication.objects.bulk_create([
            Publication(
                integration=plan.integration,
                requested_by=requested_by,
                # An expression, not a literal: Django's UNNEST bulk insert would quote the bodies
                # as array literals in Python, escaping every JSON quote (0.6 s for 500 bodies of
                # 50 packages); as plain parameters libpq escapes them in microseconds.
                body=Value(plan.body_bytes.decode("utf-8")),
                body_sha256=plan.sha256,
                package_count=len(plan.body["packages"]),
            )
            for plan in plans
        ])
        for publication, plan in zip(publications, plans):
            publication.body = plan.body_bytes.decode("utf-8")
            publication.enqueued = None  # set by the on-commit callback
        transaction.on_commit(lambda: _enqueue_all(publications))
    return publications


def _enqueue_all(publications):
    queued = set(publications_enqueue(publication_ids=[p.pk for p in publications]))
    for publication in publications:
        publication.enqueued = publication.pk in queued


# Rows whose enqueued_at is written in one UPDATE while a long list is being queued.
ENQUEUED_AT_CHUNK = 100


def publications_enqueue(*, publication_ids, countdown=None):
    """Hand publications to the broker, in order, over one connection; returns the ids queued.

    They travel up to KOMBO_PUBLISH_BATCH_SIZE to a message, fewer towards the end (see
    message_sizes; a single one goes as its own task). If the
    broker is unreachable the rows stay as they are and the periodic sweep sends them later:
    nothing is lost. After the first failure the rest are left to the sweep too, rather than
    make staff wait for every one to fail in turn.
    """
    from .tasks import publish_publication, publish_publications

    eta = timezone.now() + timedelta(seconds=countdown or 0)
    queued, unmarked, start = [], [], 0
    try:
        with publish_publication.app.producer_or_acquire() as producer:
            for size in message_sizes(len(publication_ids)):
                batch = list(publication_ids[start:start + size])
                start += size
                task, args = (publish_publication, batch) if len(batch) == 1 else (publish_publications, [batch])
                task.apply_async(
                    args=args, countdown=countdown, producer=producer, retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2},
                )
                queued += batch
                unmarked += batch
                if len(unmarked) >= ENQUEUED_AT_CHUNK:
                    _mark_enqueued(unmarked, eta)
                    unmarked = []
    except Exception as exc:  # any broker or transport failure
        logger.warning(
            "%s publication(s) are saved but could not be queued (%s: %s); the sweep will send them.",
            len(publication_ids) - len(queued), type(exc).__name__, exc,
        )
    if unmarked:
        _mark_enqueued(unmarked, eta)
    return queued


# Messages shrink as what is left to queue shrinks (guided self-scheduling): large ones while there
# is plenty, then smaller ones, so that the worker processes finish together instead of a few
# working through the last large messages while the others wait.
TAPER = 8


def message_sizes(count, largest=None):
    """How many publications each message carries, in order, for `count` queued together."""
    largest = largest or settings.KOMBO_PUBLISH_BATCH_SIZE
    sizes = []
    while count > 0:
        size = max(1, min(largest, math.ceil(count / TAPER)))
        sizes.append(size)
        count -= size
    return sizes


def _mark_enqueued(publication_ids, eta):
    """Note when the rows were queued, skipping any a worker is writing at this moment (it is
    executing them already): waiting for its locks while it waits for ours could deadlock. A
    database without SKIP LOCKED (SQLite) has one writer at a time: a plain UPDATE waits its turn."""
    rows = Publication.objects.filter(pk__in=publication_ids)
    if not connection.features.has_select_for_update_skip_locked:
        rows.update(enqueued_at=eta)
        return
    with transaction.atomic():
        free = rows.select_for_update(skip_locked=True).values_list("pk", flat=True)
        Publication.objects.filter(pk__in=list(free)).update(enqueued_at=eta)


def publication_enqueue(*, publication_id, countdown=None):
    """Queue one publication (see publications_enqueue); True if the broker took it."""
    return bool(publications_enqueue(publication_ids=[publication_id], countdown=countdown))


# --- executing one publication ---------------------------------------------------------------

@dataclass
class ExecuteResult:
    status: str
    retry_in: float | None = None   # the publication is queued again in this many seconds
    sent: bool = False              # a request reached (or tried to reach) Kombo this time


def _with_newer_flag(queryset):
    """Annotate `has_newer`: a later publication of the same integration exists."""
    return queryset.annotate(has_newer=Exists(
        Publication.objects.filter(integration_id=OuterRef("integration_id"), pk__gt=OuterRef("pk"))
    ))


def _supersede(publication, *, sending_too=False):
    """End an older publication that a newer one replaces. A row left `sending` by a dead
    worker is only superseded by the holder of the integration's lease (`sending_too`)."""
    statuses = [Status.QUEUED, Status.RETRYING, Status.WAITING]
    if sending_too:
        statuses.append(Status.SENDING)
    now = timezone.now()
    done = Publication.objects.filter(pk=publication.pk, status__in=statuses).update(
        status=Status.SUPERSEDED, finished_at=now, next_attempt_at=None,
        failure_reason="A newer publication of this integration was requested; it carries the newer catalogue.",
    )
    if done:
        logger.info("Publication %s superseded by a newer one.", publication.pk)
    return ExecuteResult(Publication.objects.values_list("status", flat=True).get(pk=publication.pk))


@dataclass
class Lease:
    """This run's claim on an integration: one request per integration in flight, all workers."""

    publication_id: int
    integration_id: int
    seconds: float
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    held: bool = False


def _lease_acquire(lease):
    # The database's clock, not the worker's: workers on skewed machines still agree.
    lease.held = Integration.objects.filter(pk=lease.integration_id).filter(
        Q(publish_lease_owner__isnull=True) | Q(publish_lease_until__lt=Now())
    ).update(
        publish_lease_owner=lease.publication_id,
        publish_lease_token=lease.token,
        publish_lease_until=Now() + timedelta(seconds=lease.seconds),
    ) == 1
    return lease.held


def _lease_release(lease):
    # By token: a run whose lease expired must not release the lease of the run after it.
    Integration.objects.filter(
        pk=lease.integration_id, publish_lease_token=lease.token
    ).update(publish_lease_owner=None, publish_lease_until=None, publish_lease_token="")
    lease.held = False


def publication_execute(*, publication_id):
    """Run one attempt of a publication if it is due, and record what happened.

    Safe to call any number of times, concurrently, for the same id: only the holder of the
    integration's lease sends, and a publication in a final state is left alone.
    """
    loaded = _load_for_execution([publication_id])
    return _execute(publication_id, loaded.get(publication_id), lease_seconds())


@dataclass
class _BatchClock:
    """A batch message's time: its budget for starting attempts and its hard time limit."""

    budget: float
    limit: float
    started: float = field(default_factory=time.monotonic)

    def spent(self):
        return time.monotonic() - self.started > self.budget

    def lease_seconds(self):
        return lease_seconds(self.limit - (time.monotonic() - self.started))


def publications_execute(*, publication_ids, time_budget=None, time_limit=None):
    """Execute a batch message's publications in order, one request in flight at a time.

    On PostgreSQL the publications that are plainly due cost three statements for the whole
    batch (read, take, record the successes) instead of three each; the others, and every other
    database, go one by one through publication_execute's path. No attempt starts after
    `time_budget` seconds, nor after Kombo answers 429: the publications not sent then are
    handed back as they were and queued again. Leases last past what is left of the task's hard
    `time_limit`. If something fails, what the batch had not handled is queued again before the
    error goes on. Returns an ExecuteResult per distinct id, in order.
    """
    clock = _BatchClock(
        budget=settings.KOMBO_PUBLISH_BATCH_SECONDS if time_budget is None else time_budget,
        limit=settings.KOMBO_BATCH_TIME_LIMIT if time_limit is None else time_limit,
    )
    ids = list(dict.fromkeys(publication_ids))
    results = {}
    try:
        loaded = _load_for_execution(ids)
        hot = _hot_path()
        plain = [pk for pk in ids if hot and _plainly_due(loaded.get(pk))]
        others = [pk for pk in ids if pk not in set(plain)]
        for index, publication_id in enumerate(others):
            if clock.spent():
                rest = others[index:] + plain
                logger.info("Batch out of time after %s publication(s); %s queued again.", len(results), len(rest))
                publications_enqueue(publication_ids=rest)
                results |= {pk: ExecuteResult(Status.QUEUED, retry_in=0) for pk in rest}
                return [results[pk] for pk in ids]
            result = _execute(publication_id, loaded.get(publication_id), clock.lease_seconds())
            results[publication_id] = result
            if result.status == "paced":
                # No slot soon for this one, so none for the others either: they wait together.
                rest = others[index + 1:] + plain
                publications_enqueue(publication_ids=rest, countdown=result.retry_in)
                results |= {pk: ExecuteResult("paced", retry_in=result.retry_in) for pk in rest}
                return [results[pk] for pk in ids]
        if plain:
            _execute_plainly_due(plain, clock, results)
    except Exception:
        rest = [pk for pk in ids if pk not in results]
        logger.exception("Batch failed; %s publication(s) it had not handled are queued again in %s s.",
                         len(rest), RETRY_AFTER_BATCH_FAILURE_SECONDS)
        if rest:
            publications_enqueue(publication_ids=rest, countdown=RETRY_AFTER_BATCH_FAILURE_SECONDS)
        raise
    return [results[pk] for pk in ids if pk in results]


def _plainly_due(publication):
    """Queued, or due for its next attempt, and the newest of its integration: the common case."""
    return (publication is not None and publication.status in (Status.QUEUED, Status.RETRYING, Status.WAITING)
            and not _not_due(publication) and not publication.has_newer)


def _execute_plainly_due(publication_ids, clock, results):
    """The batch path on PostgreSQL: slots for all, one take, the requests one after another,
    one statement for all the successes (and one handing back what was not sent). Fills
    `results` as it goes, so that a failure half-way still tells what was handled."""
    if clock.spent():
        publications_enqueue(publication_ids=publication_ids)
        results |= {pk: ExecuteResult(Status.QUEUED, retry_in=0) for pk in publication_ids}
        return
    slots = pacing.reserve_slots(len(publication_ids), max_wait=settings.KOMBO_PACING_MAX_WAIT_SECONDS)
    reserved_at = time.monotonic()
    granted = publication_ids[:len(slots)] if slots[0].granted else []
    refused = publication_ids[len(granted):]
    if refused:
        retry_in = min(slots[-1].wait + random.random(), MAX_COUNTDOWN_SECONDS)
        publications_enqueue(publication_ids=refused, countdown=retry_in)
        results |= {pk: ExecuteResult("paced", retry_in=retry_in) for pk in refused}
    if not granted:
        return
    token = uuid.uuid4().hex
    taken = _take(granted, token=token, lease_seconds=clock.lease_seconds())
    start_at = dict(zip(granted, (reserved_at + slot.wait for slot in slots)))
    claimed = [taken[pk] for pk in granted if pk in taken and taken[pk].claimed]
    # Not claimed (gone, lease busy, or changed since the batch read it): after the sends.
    unclaimed = [pk for pk in granted if not (pk in taken and taken[pk].claimed)]
    pace = _Pace(pacing.interval())
    succeeded, sent, stopped, requeue_in, in_hand = [], 0, False, None, None
    try:
        for one in claimed:
            if clock.spent():
                stopped = True
                break
            pace.wait_until(start_at[one.publication_id])
            sent += 1
            in_hand = one
            publication, attempt = one.publication, one.attempt
            timed_out = False
            try:
                outcome = _send(publication, attempt)
            except SoftTimeLimitExceeded:
                outcome, timed_out = _timed_out(), True
            if isinstance(outcome, kombo.KomboError):
                results[one.publication_id] = _record_error(publication, attempt, outcome)
                _release(one, token)
                if outcome.http_status == 429:
                    # Kombo asked everyone to slow down: the rest wait as long as this one.
                    requeue_in = min(results[one.publication_id].retry_in or 0, MAX_COUNTDOWN_SECONDS)
                if outcome.http_status == 429 or timed_out:
                    stopped = True
                    break
            else:
                _log_warnings(publication, outcome)
                succeeded.append(attempt_sql.Succeeded(publication, attempt, outcome, _success_message(outcome),
                                                       timezone.now()))
                results[one.publication_id] = ExecuteResult(Status.SUCCEEDED, sent=True)
            in_hand = None
        while unclaimed:
            publication_id = unclaimed[0]
            one = taken.get(publication_id)
            if one is None:
                logger.error("Publication %s does not exist; nothing to do.", publication_id)
                results[publication_id] = ExecuteResult("missing")
            elif not one.leased:
                results[publication_id] = _lease_busy(publication_id)
            else:
                lease = Lease(publication_id, one.integration_id, seconds=clock.lease_seconds(), token=token,
                              held=True)
                try:
                    if stopped:
                        publications_enqueue(publication_ids=[publication_id], countdown=requeue_in)
                        results[publication_id] = ExecuteResult(Status.QUEUED, retry_in=requeue_in or 0)
                    else:
                        pace.wait_until(start_at[publication_id])
                        results[publication_id] = _execute_with_lease(publication_id, lease)
                finally:
                    if lease.held:
                        _lease_release(lease)
            unclaimed.pop(0)
    finally:
        # Whatever happened above: what was sent is recorded, what was not is handed back, and
        # no lease of this run outlives it. Each step runs even if the one before failed.
        try:
            attempt_sql.finish_succeeded(succeeded, token=token)
            for item in succeeded:
                _log_succeeded(item.publication, item.success)
        finally:
            try:
                unsent = claimed[sent:]
                if unsent:
                    attempt_sql.hand_back(unsent, token=token)
                    logger.info("Batch stopped after %s request(s); %s publication(s) queued again.",
                                sent, len(unsent))
                    publications_enqueue(publication_ids=[one.publication_id for one in unsent], countdown=requeue_in)
                    results |= {one.publication_id: ExecuteResult(one.previous[0], retry_in=requeue_in or 0)
                                for one in unsent}
            finally:
                # Left by an exception: the leases of what was not reached, and of the one whose
                # request had been made (it stays sending: its next run counts the attempt as
                # lost and sends again).
                for one in [taken.get(pk) for pk in unclaimed] + [in_hand]:
                    if one is not None and one.leased:
                        _release(one, token)


class _Pace:
    """Send at the reserved slot, and never two sends of one batch closer than the schedule's
    interval: a batch that fell behind its slots does not catch up in a burst."""

    def __init__(self, interval):
        self.interval = interval
        self.last = None

    def wait_until(self, slot_time):
        at = slot_time if self.last is None else max(slot_time, self.last + self.interval)
        wait = at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.last = time.monotonic()


def _load_for_execution(publication_ids):
    """{pk: Publication with only what deciding needs (no body) and `has_newer`}, one query."""
    queryset = _with_newer_flag(Publication.objects.only("status", "next_attempt_at", "integration_id"))
    return {p.pk: p for p in queryset.filter(pk__in=publication_ids)}


def _execute(publication_id, publication, lease_for):
    """One attempt of the publication read by _load_for_execution (None: it does not exist)."""
    if publication is None:
        logger.error("Publication %s does not exist; nothing to do.", publication_id)
        return ExecuteResult("missing")
    if publication.is_final or _not_due(publication):
        return ExecuteResult(publication.status)
    if publication.status != Status.SENDING and publication.has_newer:
        return _supersede(publication)
    # Take a place in the shared schedule before the lease, so the lease only covers the
    # request itself. A long wait (Kombo said 429 for a while) goes back to the queue.
    slot = pacing.reserve_slot(max_wait=settings.KOMBO_PACING_MAX_WAIT_SECONDS)
    if not slot.granted:
        retry_in = min(slot.wait + random.random(), MAX_COUNTDOWN_SECONDS)
        publication_enqueue(publication_id=publication.pk, countdown=retry_in)
        return ExecuteResult("paced", retry_in=retry_in)
    if slot.wait > 0:
        time.sleep(slot.wait)
    lease = Lease(publication_id=publication.pk, integration_id=publication.integration_id, seconds=lease_for)
    taken = None
    if _hot_path():
        taken = _take([publication.pk], token=lease.token, lease_seconds=lease.seconds).get(publication.pk)
        lease.held = taken is not None and taken.leased
    else:
        _lease_acquire(lease)
    if not lease.held:
        return _lease_busy(publication.pk, publication.status)
    try:
        if taken is not None and taken.claimed:
            return _attempt(taken.publication, taken.attempt, lease)
        return _execute_with_lease(publication_id, lease)
    finally:
        if lease.held:
            _lease_release(lease)


def _take(publication_ids, *, token, lease_seconds):
    """attempt_sql.take with this deployment's rules: due a little early, KOMBO_MAX_ATTEMPTS."""
    now = timezone.now()
    return attempt_sql.take(
        publication_ids=publication_ids, token=token, lease_seconds=lease_seconds, now=now,
        due_by=now + timedelta(seconds=EARLY_ARRIVAL_SLACK_SECONDS), max_attempts=settings.KOMBO_MAX_ATTEMPTS,
    )


def _release(taken, token):
    """Release the lease `take` gave one publication of a batch."""
    _lease_release(Lease(taken.publication_id, taken.integration_id, seconds=0, token=token, held=True))


def _lease_busy(publication_id, status=Status.QUEUED):
    # Another publication of this integration is in flight: look again shortly.
    wait = LEASE_BUSY_RETRY_SECONDS * (1 + random.random())
    publication_enqueue(publication_id=publication_id, countdown=wait)
    return ExecuteResult(status, retry_in=wait)


def _hot_path():
    """Whether attempts are taken and recorded by attempt_sql's set-wise statements."""
    return attempt_sql.available() and bool(settings.KOMBO_API_KEY)


def _not_due(publication):
    if publication.status not in (Status.RETRYING, Status.WAITING) or not publication.next_attempt_at:
        return False
    early_by = (publication.next_attempt_at - timezone.now()).total_seconds()
    return early_by > EARLY_ARRIVAL_SLACK_SECONDS


def _spent_attempts(publication):
    """Attempts that count against KOMBO_MAX_ATTEMPTS: all but the waits for a first sync."""
    return PublicationAttempt.objects.filter(publication_id=publication.pk).exclude(outcome="sync_pending").count()


def _execute_with_lease(publication_id, lease):
    """The general path, under the integration's lease: every case, on every database."""
    now = timezone.now()
    with transaction.atomic():
        # One statement: the row locked, whether a newer publication exists, attempts spent.
        publication = (
            _with_newer_flag(Publication.objects.select_for_update(of=("self",)).select_related("integration"))
            .annotate(spent=Subquery(
                PublicationAttempt.objects.filter(publication=OuterRef("pk"))
                .exclude(outcome="sync_pending").values("publication")
                .annotate(n=Count("pk")).values("n")[:1]
            ))
            .get(pk=publication_id)
        )
        if publication.is_final or _not_due(publication):
            return ExecuteResult(publication.status)
        spent = publication.spent or 0
        if publication.status == Status.SENDING:
            # We hold the lease, so whoever was sending it is gone (a killed worker).
            # (That attempt is already counted in `spent`.)
            PublicationAttempt.objects.filter(
                publication=publication, number=publication.attempts, finished_at__isnull=True
            ).update(finished_at=now, outcome="lost",
                     message="The worker stopped during this attempt.")
        if publication.has_newer:
            return _supersede(publication, sending_too=True)
        if not settings.KOMBO_API_KEY:
            return _finish_failed(
                publication,
                reason="KOMBO_API_KEY is not set in the worker's environment. Set it, restart "
                       "the worker, and publish again.",
            )
        if spent >= settings.KOMBO_MAX_ATTEMPTS:
            # Lost attempts (killed workers, time limits) count too: a publication that kills
            # its worker every time must end, not loop.
            last = publication.failure_reason or "the worker stopped during the attempt"
            return _finish_failed(publication, reason=f"Gave up after {spent} attempts. Last error: {last}")
        publication.status = Status.SENDING
        publication.attempts += 1
        publication.started_at = publication.started_at or now
        publication.next_attempt_at = None
        publication.save(update_fields=["status", "attempts", "started_at", "next_attempt_at"])
        attempt = PublicationAttempt.objects.create(
            publication=publication, number=publication.attempts, started_at=now
        )
    return _attempt(publication, attempt, lease)


def _attempt(publication, attempt, lease):
    """Send the publication's body once, under the lease, and record the answer."""
    try:
        outcome = _send(publication, attempt)
    except SoftTimeLimitExceeded:
        outcome = _timed_out()
    if isinstance(outcome, kombo.KomboError):
        return _record_error(publication, attempt, outcome)
    return _record_success(publication, attempt, outcome, lease)


def _send(publication, attempt):
    """PUT the body once: Kombo's success, or the KomboError to record. A bug is an error too,
    never a loop; only the task's soft time limit is raised through."""
    integration = publication.integration
    try:
        return kombo_client().set_packages(
            base_url=integration_base_url(integration),
            integration_id=integration.kombo_integration_id,
            body=publication.body.encode("utf-8"),
        )
    except kombo.KomboError as error:
        pacing.observe(http_status=error.http_status, retry_after=error.retry_after)
        return error
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        logger.error("Publication %s attempt %s raised:\n%s", publication.pk, attempt.number,
                     redact_key(traceback.format_exc()))
        return kombo.KomboError(
            kombo.ErrorKind.PERMANENT,
            f"Unexpected error while sending ({type(exc).__name__}); the worker log has the details.",
        )


def _timed_out():
    # Kombo may or may not have the list: sending it again is the way to know.
    return kombo.KomboError(kombo.ErrorKind.TRANSIENT, "The attempt ran past the task's time limit.")


def redact_key(text):
    """Text safe to log: the API key, if it appears, replaced."""
    key = settings.KOMBO_API_KEY
    return text.replace(key, "[KOMBO_API_KEY]") if key else text


def _success_message(success):
    return f"{len(success.warnings)} warning(s)" if success.warnings else ""


def _log_warnings(publication, success):
    for warning in success.warnings:
        logger.warning(
            "Kombo warning for %s (publication %s): %s",
            publication.integration.kombo_integration_id, publication.pk, warning,
        )


def _log_succeeded(publication, success):
    logger.info("Publication %s succeeded (HTTP %s).", publication.pk, success.http_status)


def _record_success(publication, attempt, success, lease):
    now = timezone.now()
    _log_warnings(publication, success)
    message = _success_message(success)
    if _hot_path():
        # One statement, the lease's release included.
        attempt_sql.finish_succeeded([attempt_sql.Succeeded(publication, attempt, success, message, now)],
                                     token=lease.token)
        lease.held = False
    else:
        with transaction.atomic():
            Publication.objects.filter(pk=publication.pk).update(
                status=Status.SUCCEEDED, http_status=success.http_status,
                response_body=success.body_text, warnings=success.warnings,
                rate_limit_headers=success.limit_headers, finished_at=now,
                error_code="", error_title="", error_message="", error_log_url="",
                failure_reason="",
            )
            PublicationAttempt.objects.filter(pk=attempt.pk).update(
                finished_at=now, http_status=success.http_status, outcome="succeeded", message=message,
            )
    _log_succeeded(publication, success)
    return ExecuteResult(Status.SUCCEEDED, sent=True)


def _error_fields(error):
    """Kombo's error as stored: cut to the columns, and a log link only if it is http(s)."""
    log_url = str(error.log_url or "")
    if not log_url.startswith(("https://", "http://")) or len(log_url) > 1000:
        log_url = ""
    return dict(
        http_status=error.http_status,
        response_body=error.body_text or "",
        error_code=str(error.code or "")[:100],
        error_title=str(error.title or "")[:500],
        error_message=str(error.message or ""),
        error_log_url=log_url,
        rate_limit_headers=error.limit_headers,
    )


def _record_error(publication, attempt, error):
    now = timezone.now()
    kind = error.kind
    status, wait, reason = Status.FAILED, None, error.reason

    if kind is kombo.ErrorKind.TRANSIENT:
        transient_attempts = _spent_attempts(publication)
        if transient_attempts >= settings.KOMBO_MAX_ATTEMPTS:
            reason = f"Gave up after {transient_attempts} attempts. Last error: {error.reason}"
        else:
            status = Status.RETRYING
            wait = backoff_seconds(
                attempt=transient_attempts, base=settings.KOMBO_RETRY_BASE_SECONDS,
                cap=settings.KOMBO_RETRY_MAX_WAIT_SECONDS, code=error.code,
                retry_after=error.retry_after, retry_after_cap=settings.KOMBO_RETRY_AFTER_MAX_SECONDS,
            )
    elif kind is kombo.ErrorKind.SYNC_PENDING:
        waited = (now - publication.started_at).total_seconds()
        if waited >= settings.KOMBO_SYNC_PENDING_MAX_SECONDS:
            reason = (f"The customer's first sync had not finished after {waited / 3600:.1f} h. "
                      f"Last error: {error.reason}")
        else:
            status = Status.WAITING
            wait = settings.KOMBO_SYNC_PENDING_RETRY_SECONDS
    elif kind is kombo.ErrorKind.NO_AUTO_RETRY:
        reason = (f"{error.reason} Kombo advises against retrying this automatically: "
                  "check the log, then publish again.")

    outcome = {Status.RETRYING: "transient", Status.WAITING: "sync_pending"}.get(status, kind.value)
    log = logger.warning if status == Status.FAILED else logger.info
    log("Publication %s attempt %s: %s -> %s", publication.pk, attempt.number, error.reason, status)

    with transaction.atomic():
        Publication.objects.filter(pk=publication.pk).update(
            status=status, failure_reason=reason,
            next_attempt_at=now + timedelta(seconds=wait) if wait is not None else None,
            finished_at=now if status == Status.FAILED else None,
            **_error_fields(error),
        )
        PublicationAttempt.objects.filter(pk=attempt.pk).update(
            finished_at=now, http_status=error.http_status, error_code=error.code or "",
            outcome=outcome, message=error.reason, wait_seconds=wait,
        )
    if wait is not None and wait <= MAX_COUNTDOWN_SECONDS:
        publication_enqueue(publication_id=publication.pk, countdown=wait)
    return ExecuteResult(status, retry_in=wait, sent=True)


def _finish_failed(publication, *, reason):
    Publication.objects.filter(pk=publication.pk).update(
        status=Status.FAILED, failure_reason=reason, finished_at=timezone.now(), next_attempt_at=None
    )
    logger.warning("Publication %s failed: %s", publication.pk, reason)
    return ExecuteResult(Status.FAILED)


# --- the sweep -------------------------------------------------------------------------------

def publications_sweep(*, now=None):
    """Queue again every publication that should be moving and is not: never queued (the broker
    was down), queued long ago (the message was lost), due for a retry with no message on the
    way, or marked sending by a worker that no longer holds the integration's lease."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.KOMBO_STUCK_QUEUED_SECONDS)
    # A row created in the last seconds may still be on its way to the broker (on_commit).
    fresh = now - timedelta(seconds=5)
    not_recently_queued = Q(enqueued_at__isnull=True, requested_at__lt=fresh) | Q(enqueued_at__lt=stale)
    due = Q(status__in=[Status.QUEUED, Status.RETRYING, Status.WAITING]) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    orphaned = Q(status=Status.SENDING) & (
        Q(integration__publish_lease_owner__isnull=True)
        | Q(integration__publish_lease_until__lt=Now())
        | ~Q(integration__publish_lease_owner=F("pk"))
    )
    candidates = Publication.objects.filter((due | orphaned) & not_recently_queued)
    ids = list(candidates.order_by("pk").values_list("pk", flat=True)[:1000])
    queued = publications_enqueue(publication_ids=ids) if ids else []
    if ids:
        logger.info("Sweep: %s publication(s) needed queuing, %s queued.", len(ids), len(queued))
    return queued



# --- drift check -----------------------------------------------------------------------------

@dataclass
class DriftRow:
    package_id: str
    kombo: dict | None       # what Kombo has now (type/updated_at may be null)
    published: dict | None   # what we last published successfully
    catalogue: dict | None   # what the catalogue says now

    def _same(self, a, b):
        if a is None or b is None:
            return a is None and b is None
        return all((a.get(f) or None) == (b.get(f) or None) for f in ("type", "name", "description")
                   if not (f == "type" and (a.get(f) is None or b.get(f) is None)))

    @property
    def kombo_matches_published(self):
        return self._same(self.kombo, self.published)

    @property
    def catalogue_matches_published(self):
        return self._same(self.catalogue, self.published)

    @property
    def all_agree(self):
        return self.kombo_matches_published and self.catalogue_matches_published

    @property
    def cells(self):
        """(value, differs from last published) for the three columns, in display order."""
        return [
            (self.kombo, not self.kombo_matches_published),
            (self.published, False),
            (self.catalogue, not self.catalogue_matches_published),
        ]


@dataclass
class DriftReport:
    integration: Integration
    rows: list
    last_publication: Publication | None

    @property
    def kombo_drifted(self):
        return any(not r.kombo_matches_published for r in self.rows)

    @property
    def catalogue_changed(self):
        return any(not r.catalogue_matches_published for r in self.rows)


def integration_drift(*, integration):
    """Kombo's current list (GET), our last succeeded body and the catalogue, side by side.
    Raises KomboError when Kombo cannot be read."""
    kombo_packages = kombo_client().get_packages(
        base_url=integration_base_url(integration),
        integration_id=integration.kombo_integration_id,
    )
    last = integration.publications.filter(status=Publication.Status.SUCCEEDED).order_by("-pk").first()
    published = {p["id"]: p for p in (last.body_dict()["packages"] if last else [])}
    catalogue = {p["id"]: p for p in integration.current_body()["packages"]}
    at_kombo = {str(p.get("id")): p for p in kombo_packages}
    rows = [
        DriftRow(pid, at_kombo.get(pid), published.get(pid), catalogue.get(pid))
        for pid in sorted(set(at_kombo) | set(published) | set(catalogue))
    ]
    return DriftReport(integration, rows, last)
