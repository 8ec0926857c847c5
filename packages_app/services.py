"""Every state change of publishing: create publications, execute one, sweep stuck ones.

The admin, the management commands and the Celery tasks call these functions and nothing else
changes a Publication. The invariants they keep are DESIGN.md section 4: a row exists before
anything is queued; the task is queued after commit; one request per integration is in flight
(a lease on the Integration row); a publication is never sent after a newer one of the same
integration; a re-run sends the same bytes and ends in the same state.
"""
import logging
import os
import random
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Now
from django.utils import timezone

from . import kombo, pacing, payloads
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


def lease_seconds():
    """Longer than the task's hard time limit: a live attempt never loses its lease, and a
    stuck one has been killed by Celery before anyone else may take over."""
    return settings.CELERY_TASK_TIME_LIMIT + 10.0


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
        locked = list(
            Integration.objects.select_for_update(of=("self",))
            .filter(pk__in=ids).prefetch_related("packages").order_by("pk")
        )
        paused = [i for i in locked if not i.is_active]
        if paused:
            raise IntegrationPaused(paused)
        plans = [publication_plan(integration=i) for i in locked]
        if expected_sha256 is not None:
            changed = [p.integration for p in plans
                       if expected_sha256.get(p.integration.pk) != p.sha256]
            if changed:
                raise CatalogueChanged(changed)
        publications = Publication.objects.bulk_create([
            Publication(
                integration=plan.integration,
                requested_by=requested_by,
                body=plan.body_bytes.decode("utf-8"),
                body_sha256=plan.sha256,
                package_count=len(plan.body["packages"]),
            )
            for plan in plans
        ])
        for publication in publications:
            publication.enqueued = None  # set by the on-commit callback
        transaction.on_commit(lambda: _enqueue_all(publications))
    return publications


def _enqueue_all(publications):
    """Queue each publication; once the broker has failed, leave the rest to the sweep rather
    than make staff wait for every one to fail in turn."""
    for index, publication in enumerate(publications):
        publication.enqueued = publication_enqueue(publication_id=publication.pk)
        if not publication.enqueued:
            for rest in publications[index + 1:]:
                rest.enqueued = False
            return


def publication_enqueue(*, publication_id, countdown=None):
    """Hand the publication to the broker. If the broker is unreachable the row stays as it is
    and the periodic sweep sends it later: nothing is lost, and the caller is told."""
    from .tasks import publish_publication

    eta = timezone.now() + timedelta(seconds=countdown or 0)
    try:
        publish_publication.apply_async(
            args=[publication_id], countdown=countdown, retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2},
        )
    except Exception as exc:  # any broker or transport failure
        logger.warning(
            "Publication %s is saved but could not be queued (%s: %s); the sweep will send it.",
            publication_id, type(exc).__name__, exc,
        )
        return False
    Publication.objects.filter(pk=publication_id).update(enqueued_at=eta)
    return True


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


def _lease_acquire(publication, token):
    # The database's clock, not the worker's: workers on skewed machines still agree.
    return Integration.objects.filter(pk=publication.integration_id).filter(
        Q(publish_lease_owner__isnull=True) | Q(publish_lease_until__lt=Now())
    ).update(
        publish_lease_owner=publication.pk,
        publish_lease_token=token,
        publish_lease_until=Now() + timedelta(seconds=lease_seconds()),
    ) == 1


def _lease_release(publication, token):
    # By token: a run whose lease expired must not release the lease of the run after it.
    Integration.objects.filter(
        pk=publication.integration_id, publish_lease_token=token
    ).update(publish_lease_owner=None, publish_lease_until=None, publish_lease_token="")


def publication_execute(*, publication_id):
    """Run one attempt of a publication if it is due, and record what happened.

    Safe to call any number of times, concurrently, for the same id: only the holder of the
    integration's lease sends, and a publication in a final state is left alone.
    """
    try:
        publication = _with_newer_flag(Publication.objects.select_related("integration")).get(pk=publication_id)
    except Publication.DoesNotExist:
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
    token = uuid.uuid4().hex
    if not _lease_acquire(publication, token):
        # Another publication of this integration is in flight: look again shortly.
        wait = LEASE_BUSY_RETRY_SECONDS * (1 + random.random())
        publication_enqueue(publication_id=publication.pk, countdown=wait)
        return ExecuteResult(publication.status, retry_in=wait)
    try:
        return _execute_with_lease(publication_id, token)
    finally:
        _lease_release(publication, token)


def _not_due(publication):
    if publication.status not in (Status.RETRYING, Status.WAITING) or not publication.next_attempt_at:
        return False
    early_by = (publication.next_attempt_at - timezone.now()).total_seconds()
    return early_by > EARLY_ARRIVAL_SLACK_SECONDS


def _spent_attempts(publication):
    """Attempts that count against KOMBO_MAX_ATTEMPTS: all but the waits for a first sync."""
    return publication.attempt_log.exclude(outcome="sync_pending").count()


def _execute_with_lease(publication_id, token):
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

    integration = publication.integration
    try:
        success = kombo_client().set_packages(
            base_url=integration_base_url(integration),
            integration_id=integration.kombo_integration_id,
            body=publication.body.encode("utf-8"),
        )
    except kombo.KomboError as error:
        pacing.observe(http_status=error.http_status, retry_after=error.retry_after)
        return _record_error(publication, attempt, error)
    except SoftTimeLimitExceeded:
        # Kombo may or may not have the list: sending it again is the way to know.
        return _record_error(publication, attempt, kombo.KomboError(
            kombo.ErrorKind.TRANSIENT, "The attempt ran past the task's time limit."))
    except Exception as exc:  # a bug, not an answer: end the publication, never loop on it
        logger.error("Publication %s attempt %s raised:\n%s", publication.pk, attempt.number,
                     redact_key(traceback.format_exc()))
        return _record_error(publication, attempt, kombo.KomboError(
            kombo.ErrorKind.PERMANENT,
            f"Unexpected error while sending ({type(exc).__name__}); the worker log has the details.",
        ))
    return _record_success(publication, attempt, success)


def redact_key(text):
    """Text safe to log: the API key, if it appears, replaced."""
    key = settings.KOMBO_API_KEY
    return text.replace(key, "[KOMBO_API_KEY]") if key else text


def _record_success(publication, attempt, success):
    now = timezone.now()
    for warning in success.warnings:
        logger.warning(
            "Kombo warning for %s (publication %s): %s",
            publication.integration.kombo_integration_id, publication.pk, warning,
        )
    with transaction.atomic():
        Publication.objects.filter(pk=publication.pk).update(
            status=Status.SUCCEEDED, http_status=success.http_status,
            response_body=success.body_text, warnings=success.warnings,
            rate_limit_headers=success.limit_headers, finished_at=now,
            error_code="", error_title="", error_message="", error_log_url="",
            failure_reason="",
        )
        PublicationAttempt.objects.filter(pk=attempt.pk).update(
            finished_at=now, http_status=success.http_status, outcome="succeeded",
            message=f"{len(success.warnings)} warning(s)" if success.warnings else "",
        )
    logger.info("Publication %s succeeded (HTTP %s).", publication.pk, success.http_status)
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
    queued = [pk for pk in ids if publication_enqueue(publication_id=pk)]
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
