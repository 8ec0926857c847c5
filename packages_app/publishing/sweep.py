"""The sweep (Celery beat, every KOMBO_SWEEP_INTERVAL_SECONDS): queue again every publication that
should be moving and has no message on the way. It changes no status: the take decides."""
import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from ..models import Publication
from . import queueing

logger = logging.getLogger(__name__)

Status = Publication.Status
SWEEP_LIMIT = 1000


def publications_sweep(*, now=None):
    """Queue again, oldest first, what is stuck:

    - resting and due, but never queued (the broker was down) or queued long ago (the message
      was lost): after KOMBO_STUCK_QUEUED_SECONDS;
    - left `sending` by a worker that is gone: as soon as its integration's lease has expired or
      passed to another run (the lease outlives the task's hard time limit, so an expired lease
      proves the worker dead). Not again within two sweep intervals of its last queuing, so a
      backlog in the queue does not pile up duplicates.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.KOMBO_STUCK_QUEUED_SECONDS)
    # A row created in the last seconds may still be on its way to the broker (on_commit).
    fresh = now - timedelta(seconds=5)
    recently = now - timedelta(seconds=2 * settings.KOMBO_SWEEP_INTERVAL_SECONDS)
    due = (Q(status__in=Publication.RESTING_STATUSES)
           & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
           & (Q(enqueued_at__isnull=True, requested_at__lt=fresh) | Q(enqueued_at__lt=stale)))
    orphaned = (Q(status=Status.SENDING)
                & (Q(integration__publish_lease_until__isnull=True)
                   | Q(integration__publish_lease_until__lt=Now())
                   | ~Q(integration__publish_lease_token=F("lease_token")))
                & (Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=recently)))
    ids = list(Publication.objects.filter(due | orphaned).order_by("pk").values_list("pk", flat=True)[:SWEEP_LIMIT])
    queued = queueing.publications_enqueue(publication_ids=ids) if ids else []
    if ids:
        logger.info("Sweep: %s publication(s) needed queuing, %s queued.", len(ids), len(queued))
    return queued
