"""The Celery application; configuration comes from Django settings (CELERY_* names)."""
import logging
import os
import sys

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kombo_admin.settings")

app = Celery("kombo_admin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def close_old_database_connections(sender=None, **kwargs):
    """Treat each task as Django treats a request: drop connections that are too old or broken
    (CONN_MAX_AGE, CONN_HEALTH_CHECKS) and keep the rest (CELERY_DB_REUSE_MAX explains why)."""
    from django.db import close_old_connections

    if getattr(getattr(sender, "request", None), "is_eager", False):
        return  # run inside the caller's process and transaction, which own the connection
    close_old_connections()


@worker_init.connect
def refuse_to_pace_alone(sender=None, **kwargs):
    """A worker only (not the web process, not manage.py, not beat): with pacing on and no Redis to
    share the schedule in, each worker process would pace itself and N of them would send N times
    KOMBO_RATE_LIMIT_PER_SECOND. Refuse to start, in one line, unless DJANGO_DEBUG is on (the
    embedded development setup), where it is only a warning."""
    from django.conf import settings

    from packages_app import pacing

    broker_url = (sender.app if sender is not None else app).conf.broker_url or settings.CELERY_BROKER_URL
    rate = settings.KOMBO_RATE_LIMIT_PER_SECOND
    if rate and rate > 0 and not settings.KOMBO_PACING_REDIS_URL and settings.DEBUG:
        logging.getLogger(__name__).warning(
            "KOMBO_PACING_REDIS_URL is not set: each worker process paces itself at "
            "KOMBO_RATE_LIMIT_PER_SECOND=%g (allowed because DJANGO_DEBUG is on)", rate)
        return
    problem = pacing.unshared_pacing_problem(broker_url)
    if problem:
        print(f"ERROR: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(1)  # a BaseException: Celery's signal dispatch does not swallow it
