"""The Django project of the Kombo package publisher: settings, URLs, the Celery app."""
from .celery import app as celery_app

__all__ = ("celery_app",)
