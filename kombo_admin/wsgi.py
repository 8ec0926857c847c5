"""WSGI entry point (gunicorn kombo_admin.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kombo_admin.settings")
application = get_wsgi_application()
