"""Settings for the test suite: the project's settings on PostgreSQL and Redis by default.

Override with TEST_DATABASE_URL / TEST_CELERY_BROKER_URL. The services are required: a test
that needs one fails when it is missing, it never skips.
"""
import os

os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
os.environ["DATABASE_URL"] = os.environ.get(
    "TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kombo_admin"
)
os.environ["CELERY_BROKER_URL"] = os.environ.get(
    "TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"
)
os.environ.setdefault("KOMBO_API_KEY", "test-kombo-api-key-0123456789")
os.environ.setdefault("KOMBO_API_URL", "http://127.0.0.1:9/v1")  # each test points it at its own server
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
# Short timeouts and limits, set before the project's settings derive the task time limits and
# the lease from them, so a killed worker's publication is taken over within seconds.
os.environ.setdefault("KOMBO_CONNECT_TIMEOUT", "2")
os.environ.setdefault("KOMBO_READ_TIMEOUT", "2")
os.environ.setdefault("KOMBO_PACING_MAX_WAIT_SECONDS", "5")
os.environ.setdefault("KOMBO_TASK_MARGIN_SECONDS", "3")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
# Close connections after each task and request: the in-process worker (celery.contrib.testing
# runs it in a thread) would otherwise keep one open past the test, and the test database could
# not be dropped. The benchmarks run with the default (persistent connections).
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")

from kombo_admin.settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
KOMBO_RETRY_BASE_SECONDS = 0.05
KOMBO_RETRY_MAX_WAIT_SECONDS = 0.5
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
STORAGES = {**STORAGES,  # noqa: F405
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
WHITENOISE_USE_FINDERS = True
# Pacing is tested on its own (tests/test_pacing.py); elsewhere it would only slow tests down.
KOMBO_RATE_LIMIT_PER_SECOND = float(os.environ.get("TEST_KOMBO_RATE_LIMIT_PER_SECOND", "0"))
