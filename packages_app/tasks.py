"""Thin Celery tasks: ids in, a service call, nothing else. Retries are scheduled by the service,
which owns the publication's state (so a retry is never scheduled without being recorded)."""
from celery import shared_task

from . import services


@shared_task(name="packages_app.tasks.publish_publication", acks_late=True, reject_on_worker_lost=True)
def publish_publication(publication_id):
    return services.publication_execute(publication_id=publication_id).status


@shared_task(name="packages_app.tasks.sweep_publications")
def sweep_publications():
    return len(services.publications_sweep())
