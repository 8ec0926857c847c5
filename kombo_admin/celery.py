"""The Celery application; configuration comes from Django settings (CELERY_* names)."""
import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

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
