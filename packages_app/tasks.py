"""Thin Celery tasks: ids in, a publishing call, nothing else. Retries are scheduled by the engine,
which owns the publication's state (so a retry is never scheduled without being recorded)."""
import logging

from celery import shared_task
from django.conf import settings

from . import publishing, webhook_events
from .publishing import queueing

logger = logging.getLogger(__name__)


@shared_task(name=queueing.EXECUTE_ONE_TASK, acks_late=True, reject_on_worker_lost=True)
def publish_publication(publication_id):
    return publishing.publication_execute(publication_id=publication_id).status


@shared_task(name=queueing.EXECUTE_MANY_TASK, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=settings.KOMBO_BATCH_SOFT_TIME_LIMIT, time_limit=settings.KOMBO_BATCH_TIME_LIMIT)
def publish_publications(publication_ids):
    """Several publications queued together, sent one after another by this process."""
    results = publishing.publications_execute(
        publication_ids=publication_ids, time_limit=settings.KOMBO_BATCH_TIME_LIMIT)
    return [result.status for result in results]


@shared_task(name=queueing.ENQUEUE_TASK, acks_late=True, reject_on_worker_lost=True)
def enqueue_publications(publication_ids):
    """A large publish's publications, queued by a worker instead of staff's request."""
    return len(publishing.publications_enqueue(publication_ids=publication_ids))


@shared_task(name=queueing.SWEEP_TASK)
def sweep_publications():
    return len(publishing.publications_sweep())


@shared_task(name=webhook_events.PROCESS_TASK, acks_late=True, reject_on_worker_lost=True)
def process_webhook_event(event_pk):
    """One stored Kombo webhook event (POST /webhooks/kombo/ queued it after commit)."""
    return webhook_events.webhook_event_process(event_pk=event_pk)


@shared_task(name="packages_app.tasks.sweep_webhook_events")
def sweep_webhook_events():
    return len(webhook_events.webhook_events_sweep())


# Longer than the first prune of a large backlog usually takes (README, "Retention"), and shorter
# than the broker's visibility timeout. Each chunk commits on its own: a prune cut short keeps
# what it deleted, and the next day's run goes on from there.
PRUNE_SOFT_TIME_LIMIT = 1800


@shared_task(soft_time_limit=PRUNE_SOFT_TIME_LIMIT, time_limit=PRUNE_SOFT_TIME_LIMIT + 60)
def prune_publications():
    """Daily when KOMBO_RETENTION_DAYS > 0 (beat): delete the publications older than that."""
    if settings.KOMBO_RETENTION_DAYS < 1:
        return 0
    return publishing.publications_prune(older_than_days=settings.KOMBO_RETENTION_DAYS,
                                         log=logger.info).publications
