"""Thin Celery tasks: ids in, a publishing call, nothing else. Retries are scheduled by the engine,
which owns the publication's state (so a retry is never scheduled without being recorded)."""
from celery import shared_task
from django.conf import settings

from . import publishing
from .publishing import queueing


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


@shared_task(name=queueing.SWEEP_TASK)
def sweep_publications():
    return len(publishing.publications_sweep())
