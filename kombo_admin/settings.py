"""Settings of the Kombo package publisher, all from the environment (django-environ, 12-factor).

Every name read here is listed, with its default, in `.env.example` and in the README's table.
Defaults give a working machine with nothing installed: SQLite and Celery's filesystem broker under
`var/`. Production sets DATABASE_URL, CELERY_BROKER_URL, KOMBO_API_KEY and the DJANGO_* names.
"""
import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")
VAR_DIR = Path(env.str("APP_VAR_DIR", default=str(BASE_DIR / "var")))

# --- Django core -----------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
            "or set DJANGO_DEBUG=true for a local development run."
        )
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
ADMIN_URL = env.str("DJANGO_ADMIN_URL", default="admin/").strip("/") + "/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "packages_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "kombo_admin.urls"
WSGI_APPLICATION = "kombo_admin.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
# Persistent connections: a worker runs one short task per publication, and opening a PostgreSQL
# connection for each (a new server process) cost more than the task's own queries. The health
# check reconnects after a database restart instead of failing the next task.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and beat share one file: wait for a lock instead of failing.
    # IMMEDIATE: a transaction takes the write lock when it begins. A deferred one that reads and
    # then writes fails at once ("database is locked") when another process writes meanwhile;
    # only the wait for the write lock honours the timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("timeout", 20)
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # No JIT compilation: the admin's per-integration subqueries over a million publications
    # cost enough to trigger it, and compiling took longer than running them (137 ms against
    # 76 ms for the sync state of 5,000 integrations). DATABASE_PG_OPTIONS overrides it.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "options", env.str("DATABASE_PG_OPTIONS", default="-c jit=off"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# One date and time format wherever staff read one ("2026-12-01 08:19 UTC"), the admin's own
# columns included: kombo_admin/formats/en/formats.py. Python-built texts use
# packages_app.admin.display.when(), which reads the same format.
FORMAT_MODULE_PATH = ["kombo_admin.formats"]

STATIC_URL = "static/"
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Compressed, content-hashed files served by whitenoise; needs `manage.py collectstatic`.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage",
    },
}

# Without collectstatic (development, tests), serve straight from the apps' static folders.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=DEBUG)

# --- Logins: repeated failures lock that account from that address for a while (django-axes) ---
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"
# Behind a proxy, the client address is the first of X-Forwarded-For (set AXES_IPWARE_* if not).
AXES_IPWARE_PROXY_COUNT = env.int("DJANGO_PROXY_COUNT", default=0) or None

# --- Security (production defaults when DEBUG is off) ------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
# Preload is on in production so `check --deploy` is clean; a domain on the preload list must
# stay on HTTPS for good: set DJANGO_SECURE_HSTS_PRELOAD=false if that is not the plan.
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=not DEBUG)
# Load balancers probe the health endpoint over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
X_FRAME_OPTIONS = "DENY"

# --- Kombo -------------------------------------------------------------------------------------
KOMBO_REGION_URLS = {
    "EU": "https://api.kombo.dev/v1",
    "US": "https://api.us.kombo.dev/v1",
}
# The key is read from the environment only and never stored, logged or rendered.
KOMBO_API_KEY = env.str("KOMBO_API_KEY", default="")
if KOMBO_API_KEY and not re.fullmatch(r"[\x21-\x7e]+", KOMBO_API_KEY):
    # Said without the value: the key must never reach a log, even a start-up error.
    raise ImproperlyConfigured(
        "KOMBO_API_KEY contains spaces, line breaks or non-ASCII characters: paste the key "
        "exactly as Kombo's dashboard shows it."
    )
# Overrides the region's base URL for every integration (a sandbox, a test server).
KOMBO_API_URL = env.str("KOMBO_API_URL", default="").rstrip("/")
KOMBO_CONNECT_TIMEOUT = env.float("KOMBO_CONNECT_TIMEOUT", default=5.0)
KOMBO_READ_TIMEOUT = env.float("KOMBO_READ_TIMEOUT", default=30.0)
KOMBO_MAX_ATTEMPTS = env.int("KOMBO_MAX_ATTEMPTS", default=8)
KOMBO_RETRY_BASE_SECONDS = env.float("KOMBO_RETRY_BASE_SECONDS", default=2.0)
KOMBO_RETRY_MAX_WAIT_SECONDS = env.float("KOMBO_RETRY_MAX_WAIT_SECONDS", default=300.0)
KOMBO_SYNC_PENDING_RETRY_SECONDS = env.float("KOMBO_SYNC_PENDING_RETRY_SECONDS", default=900.0)
KOMBO_SYNC_PENDING_MAX_SECONDS = env.float("KOMBO_SYNC_PENDING_MAX_SECONDS", default=86400.0)
# Kombo's Retry-After is obeyed up to this long (longer waits are left to the sweep).
KOMBO_RETRY_AFTER_MAX_SECONDS = env.float("KOMBO_RETRY_AFTER_MAX_SECONDS", default=3600.0)
# A queued publication whose message has not run for this long is queued again (duplicates are
# harmless). Longer than a large backlog takes to drain at the paced rate.
KOMBO_STUCK_QUEUED_SECONDS = env.float("KOMBO_STUCK_QUEUED_SECONDS", default=900.0)
KOMBO_SWEEP_INTERVAL_SECONDS = env.float("KOMBO_SWEEP_INTERVAL_SECONDS", default=30.0)
# Requests to Kombo per second, shared by all workers (0 turns pacing off). Kombo's documented
# sample limit is 300 per window; 5 per second stays under it if the window is a minute.
KOMBO_RATE_LIMIT_PER_SECOND = env.float("KOMBO_RATE_LIMIT_PER_SECOND", default=5.0)
# A worker waits in place for its slot up to this long; a longer wait is re-queued instead.
KOMBO_PACING_MAX_WAIT_SECONDS = env.float("KOMBO_PACING_MAX_WAIT_SECONDS", default=30.0)
# Publications published together are queued in messages of up to this many (fewer towards the
# end: publishing.message_sizes); one worker process sends a message's publications one after
# another (still one request in flight per process). Larger messages spend less per publication
# on the queue; smaller ones spread a short publish over more processes. 1 gives one message per
# publication.
KOMBO_PUBLISH_BATCH_SIZE = env.int("KOMBO_PUBLISH_BATCH_SIZE", default=10)
# A publish of more publications than this queues this many itself (workers start at once) and
# hands the rest to a worker in one message, which queues them (publishing.queueing.publications_enqueue_new).
KOMBO_ENQUEUE_FAN_OUT_ABOVE = env.int("KOMBO_ENQUEUE_FAN_OUT_ABOVE", default=200)
if KOMBO_PUBLISH_BATCH_SIZE < 1:
    raise ImproperlyConfigured("KOMBO_PUBLISH_BATCH_SIZE must be 1 or more.")
# A message with several publications starts no attempt after this long and queues the rest
# again. Its time limit is this plus one attempt's, and so is the longest an integration stays
# leased by a worker that died in the middle of it.
KOMBO_PUBLISH_BATCH_SECONDS = env.float("KOMBO_PUBLISH_BATCH_SECONDS", default=30.0)
# Removing more packages than this in one publish needs an explicit tick (half or more always does).
KOMBO_REMOVAL_CONFIRMATION_THRESHOLD = env.int("KOMBO_REMOVAL_CONFIRMATION_THRESHOLD", default=10)
# Before a publish, Kombo's current list and open orders are read for up to this many
# integrations (more are compared with what we last published, and the page says so), each read
# timing out after KOMBO_READBACK_TIMEOUT_SECONDS, all within KOMBO_READBACK_BUDGET_SECONDS.
KOMBO_READBACK_MAX_INTEGRATIONS = env.int("KOMBO_READBACK_MAX_INTEGRATIONS", default=25)
KOMBO_READBACK_TIMEOUT_SECONDS = env.float("KOMBO_READBACK_TIMEOUT_SECONDS", default=5.0)
KOMBO_READBACK_BUDGET_SECONDS = env.float("KOMBO_READBACK_BUDGET_SECONDS", default=15.0)
# ATS tools (the part of a Kombo integration id before the colon) whose customers enter packages
# by hand: Kombo takes the list, the customer imports it. Such integrations read "Published:
# waiting for the customer's import", never "In sync", and the publication offers the CSV.
KOMBO_MANUAL_IMPORT_TOOLS = [t.strip().lower() for t in env.list(
    "KOMBO_MANUAL_IMPORT_TOOLS", default=["workday", "successfactors"]) if t.strip()]
# Retention: beat deletes publications requested more than this many days ago, daily (0: never;
# `manage.py prune_publications` does it by hand). Each integration's latest, latest accepted and
# active publications are always kept.
KOMBO_RETENTION_DAYS = env.int("KOMBO_RETENTION_DAYS", default=0)
if KOMBO_RETENTION_DAYS < 0:
    raise ImproperlyConfigured("KOMBO_RETENTION_DAYS must be 0 (off) or a number of days.")


def _check_kombo_url(url, setting):
    """Refuse to send the key over plain http, except to a loopback sandbox."""
    from packages_app.kombo import is_safe_url  # pure: no Django, safe to import here

    if is_safe_url(url):
        return
    raise ImproperlyConfigured(
        f"{setting}={url!r} is not allowed: the Kombo base URL must use https "
        "(plain http only for a loopback host such as 127.0.0.1)."
    )


if KOMBO_API_URL:
    _check_kombo_url(KOMBO_API_URL, "KOMBO_API_URL")

# Kombo's webhooks (POST /webhooks/kombo/): the secret Kombo's dashboard shows once, which signs
# every delivery. Empty: the endpoint answers 503. Like the API key, never stored, logged or shown.
KOMBO_WEBHOOK_SECRET = env.str("KOMBO_WEBHOOK_SECRET", default="")
# Region of the integrations the integration-created webhook creates: the region of the Kombo
# account whose dashboard sends the webhooks (EU and US accounts call separate URLs).
KOMBO_WEBHOOK_REGION = env.str("KOMBO_WEBHOOK_REGION", default="EU").upper()
if KOMBO_WEBHOOK_REGION not in KOMBO_REGION_URLS:
    raise ImproperlyConfigured(
        f"KOMBO_WEBHOOK_REGION must be one of {', '.join(KOMBO_REGION_URLS)}, not {KOMBO_WEBHOOK_REGION!r}."
    )

# --- Celery ------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The embedded broker: messages are files in one folder shared by producer and consumer.
    _broker_dir = Path(env.str("CELERY_FILESYSTEM_BROKER_DIR", default=str(VAR_DIR / "broker")))
    _broker_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        # Broadcast metadata; kombu's default is a "control" folder in the current directory.
        "control_folder": str(_broker_dir / "control"),
        "polling_interval": 0.1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # A message not acknowledged within this time is delivered again; tasks are limited
        # well below it (CELERY_TASK_TIME_LIMIT) so a slow task is never run twice by accident.
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    }
# Where the workers share their pacing schedule: the broker's Redis by default. With another broker
# (RabbitMQ) set it to a Redis URL: with pacing on and this empty, each worker process would pace
# itself (N processes, N times the rate), so a worker refuses to start unless DJANGO_DEBUG is on
# (kombo_admin/celery.py). The web process and manage.py never send to Kombo and do not check it.
KOMBO_PACING_REDIS_URL = env.str(
    "KOMBO_PACING_REDIS_URL",
    default=CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "",
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fix-up closes the database connection before and after every task unless this is
# set, and then only every N tasks: a new PostgreSQL connection per publication cost more than the
# publication's own queries. Around each task kombo_admin.celery applies Django's own rules
# (DATABASE_CONN_MAX_AGE, DATABASE_CONN_HEALTH_CHECKS), as Django does around each request.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# One PUT may take connect + read timeout; the time limit leaves room for the database work.
KOMBO_TASK_MARGIN_SECONDS = env.float("KOMBO_TASK_MARGIN_SECONDS", default=30.0)
CELERY_TASK_SOFT_TIME_LIMIT = int(
    KOMBO_CONNECT_TIMEOUT + KOMBO_READ_TIMEOUT + KOMBO_PACING_MAX_WAIT_SECONDS + KOMBO_TASK_MARGIN_SECONDS
)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 10
# A message of several publications (KOMBO_PUBLISH_BATCH_SIZE): one attempt's limits plus the batch's
# own time budget.
KOMBO_BATCH_SOFT_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + int(KOMBO_PUBLISH_BATCH_SECONDS)
KOMBO_BATCH_TIME_LIMIT = KOMBO_BATCH_SOFT_TIME_LIMIT + 10
# The lease on an integration (publishing.leases.lease_seconds) outlasts the hard limit by 10 s.
CELERY_BEAT_SCHEDULE = {
    "sweep-stuck-publications": {
        "task": "packages_app.tasks.sweep_publications",
        "schedule": KOMBO_SWEEP_INTERVAL_SECONDS,
    },
    # Webhook events stored while the broker was down, or whose worker died, are queued again.
    "sweep-webhook-events": {
        "task": "packages_app.tasks.sweep_webhook_events",
        "schedule": KOMBO_SWEEP_INTERVAL_SECONDS,
    },
}


def retention_beat_schedule(retention_days):
    """The prune (packages_app.tasks.prune_publications) daily at 03:30 UTC, only when retention
    is on (> 0)."""
    if retention_days <= 0:
        return {}
    from celery.schedules import crontab

    return {"prune-old-publications": {"task": "packages_app.tasks.prune_publications",
                                       "schedule": crontab(hour=3, minute=30)}}


CELERY_BEAT_SCHEDULE.update(retention_beat_schedule(KOMBO_RETENTION_DAYS))
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Logging -----------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # requests/urllib3 debug lines would include request headers: keep them quiet.
        "urllib3": {"level": "WARNING"},
    },
}

VAR_DIR.mkdir(parents=True, exist_ok=True)
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)
