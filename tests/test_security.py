"""The Kombo API key never leaves the process, and the deployment settings are safe.

- After publishes that succeed, fail at Kombo and fail on the wire, the key is in no table, no
  log line, no stdout/stderr output and no admin page; the admin shows only its last four
  characters.
- `manage.py check --deploy` is clean with production settings, and the settings refuse to start
  without a secret key or with a plain-http Kombo URL that is not a loopback sandbox.
- /health/ says what is down and nothing about the configuration.
- Repeated failed logins lock the account from that address (django-axes).
"""
import json
import logging
import os
import re
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.sessions.models import Session
from django.db import connection, connections
from django.test import Client
from django.urls import reverse

from kombo_admin import health
from packages_app import publishing, tasks
from packages_app.models import Integration, Publication, PublicationAttempt
from packages_app.sandbox import Fault

pytestmark = pytest.mark.django_db

BASE_DIR = Path(__file__).resolve().parent.parent
PUBLISH_URL = reverse("admin:packages_app_integration_publish")
LOGIN_URL = reverse("admin:login")


# --- the key and where to look for it ----------------------------------------------------------

def _random(n):
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


@pytest.fixture
def api_key(settings):
    """A key no page, row or log line could contain by chance."""
    key = "sk_live_SECRET_" + _random(20)
    settings.KOMBO_API_KEY = key
    return key


@pytest.fixture
def kombo(api_key, sandbox):
    """The sandbox, started after the key is set, so it accepts only that key."""
    return sandbox




@pytest.fixture
def scheduled(no_broker):
    return no_broker


def leaks(text, key):
    """The parts of the key found in `text`: the whole key, or any 8 characters of its secret part
    (the last four alone may be shown, so this allows nothing longer than that)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    secret = key[len("sk_live_SECRET_"):]
    found = [key] if key in text else []
    found += [secret[i:i + 8] for i in range(len(secret) - 7) if secret[i:i + 8] in text]
    return found


def database_text():
    """Every value of every row of every table, as text: models, auto-created M2M tables, raw
    tables without a model, and the decoded session data."""
    chunks = []
    for model in apps.get_models(include_auto_created=True):
        for row in model._base_manager.all().values():
            chunks.append(f"{model._meta.db_table}: {row!r} {' '.join(map(str, row.values()))}")
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                values = [bytes(v).decode("utf-8", "replace") if isinstance(v, (bytes, memoryview)) else str(v)
                          for v in row]
                chunks.append(f"{table}: {' '.join(values)}")
    for session in Session.objects.all():
        chunks.append(json.dumps(session.get_decoded(), default=str))
    return "\n".join(chunks)


@pytest.fixture
def output(caplog, capsys, monkeypatch):
    """Everything logged at any level (root at DEBUG, urllib3 included, every SQL statement with its
    parameters) and everything written to stdout/stderr, the console log handler's output included."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(connections["default"], "force_debug_cursor", True)  # log SQL although DEBUG is off
    for name in ("urllib3", "requests", "packages_app", "celery", "django", "axes"):
        caplog.set_level(logging.DEBUG, logger=name)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the project's console handler
            monkeypatch.setattr(handler, "stream", sys.stderr)

    def text():
        captured = capsys.readouterr()
        records = [f"{r.getMessage()} {r.args!r} {vars(r)!r}" for r in caplog.records]
        return "\n".join([caplog.text, *records, captured.out, captured.err])

    return text


def run_task(publication):
    """One attempt as a worker runs it: through the Celery task, so Celery's own log lines
    (task succeeded / raised unexpected) are captured too."""
    result = tasks.publish_publication.apply(args=[publication.pk])
    publication.refresh_from_db()
    return result


@pytest.fixture
def publishes(kombo, make_package, make_integration, scheduled):
    """A success, a Kombo error, a reset connection and an HTML 503, all really sent."""
    packages = [make_package("1001", name="TypeScript"), make_package("1002")]
    ok = make_integration(packages, name="Acme", kombo_integration_id="recruitee:Acme1")
    missing = make_integration(packages, name="Ghost", kombo_integration_id="notfound:X")
    reset = make_integration(packages, name="Flaky", kombo_integration_id="recruitee:Flaky1")
    html = make_integration(packages, name="Down", kombo_integration_id="recruitee:Down1")
    pubs = dict(zip(("ok", "missing", "reset", "html"), publishing.publications_create(
        integrations=[ok, missing, reset, html])))
    kombo.enqueue_fault(Fault(reset=True, integration_id="recruitee:Flaky1"))
    kombo.enqueue_fault(Fault(status=503, body="<html><h1>503 Service Unavailable</h1></html>",
                              integration_id="recruitee:Down1"))
    for pub in pubs.values():
        assert run_task(pub).successful()
    assert pubs["ok"].status == "succeeded"
    assert pubs["missing"].status == "failed" and pubs["missing"].error_code == "PLATFORM.INTEGRATION_NOT_FOUND"
    assert pubs["reset"].status == "retrying"
    assert pubs["reset"].failure_reason.startswith("Connection to Kombo failed: ConnectionError")
    assert pubs["html"].status == "retrying" and pubs["html"].http_status == 503
    return pubs


def test_the_key_really_was_sent_so_its_absence_below_means_something(publishes, kombo, api_key):
    puts = kombo.requests("PUT")
    assert len(puts) == 4
    assert {r.headers["Authorization"] for r in puts} == {f"Bearer {api_key}"}


def test_the_key_is_in_no_table(publishes, api_key):
    text = database_text()
    assert "recruitee:Acme1" in text and "INTEGRATION_NOT_FOUND" in text  # the dump sees the rows
    assert leaks(text, api_key) == []


def test_stored_bodies_and_answers_do_not_hold_the_key(publishes, api_key):
    for pub in Publication.objects.all():
        for value in (pub.body, pub.response_body, pub.failure_reason, pub.error_message,
                      pub.error_title, pub.error_log_url, json.dumps(pub.rate_limit_headers),
                      json.dumps(pub.warnings)):
            assert leaks(value, api_key) == []
    for attempt in PublicationAttempt.objects.all():
        assert leaks(attempt.message, api_key) == []
    assert Publication.objects.get(integration__kombo_integration_id="recruitee:Acme1").response_body


def test_the_key_is_in_no_log_line_and_no_output(kombo, api_key, make_package, make_integration,
                                                   scheduled, output, client, superuser):
    integrations = [
        make_integration([make_package()], kombo_integration_id=kid)
        for kid in ("recruitee:Acme1", "notfound:X", "recruitee:Flaky1")
    ]
    kombo.enqueue_fault(Fault(reset=True, integration_id="recruitee:Flaky1"))
    for pub in publishing.publications_create(integrations=integrations):
        run_task(pub)
    # The drift check reads Kombo with the key too, successfully and not.
    client.force_login(superuser)
    kombo.enqueue_fault(Fault(reset=True, integration_id="recruitee:Flaky1"))
    for integration in integrations:
        assert client.get(reverse("admin:packages_app_integration_compare", args=[integration.pk])).status_code == 200
    print(repr(publishing.kombo_client()))  # the client's repr is safe to log

    text = output()
    # The capture works: the three outcomes were logged.
    for logged in ("succeeded (HTTP 200)", "PLATFORM.INTEGRATION_NOT_FOUND", "Connection to Kombo failed",
                   "KomboClient timeout=", "UPDATE \"packages_app_publication\""):
        assert logged in text, f"{logged!r} was not captured"
    assert "raised unexpected" not in text
    assert leaks(text, api_key) == []
    assert len(kombo.requests()) == 6


def test_the_key_is_on_no_admin_page(publishes, api_key, client, superuser):
    client.force_login(superuser)
    integrations = list(Integration.objects.all())
    ids = ",".join(str(i.pk) for i in integrations)
    urls = [
        reverse("admin:index"),
        reverse("admin:packages_app_assessmentpackage_changelist"),
        reverse("admin:packages_app_integration_changelist"),
        reverse("admin:packages_app_publication_changelist"),
        f"{PUBLISH_URL}?ids={ids}",
        f"{PUBLISH_URL}?out_of_sync=1",
        reverse("admin:packages_app_assessmentpackage_export") + "?format=json",
        reverse("admin:packages_app_assessmentpackage_export") + "?format=csv",
    ]
    for i in integrations:
        urls += [reverse(f"admin:packages_app_integration_{name}", args=[i.pk])
                 for name in ("change", "compare", "history", "publications_live")]
    for pub in Publication.objects.all():
        urls += [reverse(f"admin:packages_app_publication_{name}", args=[pub.pk]) for name in ("change", "live")]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert leaks(response.content, api_key) == [], url
        assert leaks(str(response.headers), api_key) == [], url


def test_the_admin_shows_only_the_last_four_characters(kombo, api_key, client, superuser, make_package,
                                                      make_integration):
    integration = make_integration([make_package()])
    client.force_login(superuser)
    confirmation = client.get(PUBLISH_URL, {"ids": integration.pk}).content.decode()
    assert f"API key: configured, ending in …{api_key[-4:]}." in confirmation
    change_page = client.get(reverse("admin:packages_app_integration_change", args=[integration.pk]))
    assert f"API key: configured, ending in …{api_key[-4:]}" in change_page.content.decode()
    assert leaks(confirmation, api_key) == [] and leaks(change_page.content, api_key) == []
    assert api_key[:-4] not in confirmation and api_key[-5:] not in confirmation


def test_the_admin_says_when_no_key_is_configured(settings, client, superuser, make_package, make_integration):
    settings.KOMBO_API_KEY = ""
    integration = make_integration([make_package()])
    client.force_login(superuser)
    assert "API key: not configured." in client.get(PUBLISH_URL, {"ids": integration.pk}).content.decode()


@pytest.mark.parametrize("key,shown", [
    ("", "not configured"),
    ("short-key", "configured"),            # too short to show any part of it
    ("12345678901", "configured"),
    ("123456789012", "configured, ending in …9012"),
    ("sk_live_SECRET_abcdefghijWXYZ", "configured, ending in …WXYZ"),
])
def test_api_key_status(settings, key, shown):
    settings.KOMBO_API_KEY = key
    assert publishing.api_key_status() == shown


def test_a_key_with_a_line_break_fails_the_publication_without_echoing_it(settings, sandbox, make_package,
                                                                          make_integration, scheduled, output):
    """requests refuses such a header with an error that quotes the header value: it must not be
    stored or logged (the reason names only the exception type)."""
    key = "sk_live_SECRET_" + _random(20)
    settings.KOMBO_API_KEY = key + "\n"
    (pub,) = publishing.publications_create(integrations=[make_integration([make_package()])])
    run_task(pub)
    # A header that cannot be sent is our configuration, not a passing fault: it fails at once.
    assert pub.status == "failed" and pub.failure_reason.startswith("The request could not be built (InvalidHeader)")
    assert sandbox.requests() == []
    assert leaks(database_text(), key) == [] and leaks(output(), key) == []


def test_a_key_that_cannot_be_sent_as_a_header_is_never_logged(settings, sandbox, make_package,
                                                              make_integration, scheduled, output):
    key = "sk_live_SECRET_" + _random(20)
    settings.KOMBO_API_KEY = key + "€"
    (pub,) = publishing.publications_create(integrations=[make_integration([make_package()])])
    run_task(pub)
    assert leaks(output(), key) == []
    assert pub.status in ("retrying", "failed") and pub.failure_reason


# --- the webhook secret (KOMBO_WEBHOOK_SECRET) ---------------------------------------------------

def test_the_webhook_secret_is_in_no_log_line_no_table_and_no_page(settings, client, superuser, output,
                                                                    monkeypatch):
    """Signed, wrongly signed, unsigned, malformed and unconfigured deliveries, the event processed,
    the pages staff read: the secret (or any 8 characters of it) is nowhere."""
    from packages_app import webhook_events
    from packages_app.models import WebhookEvent
    from packages_app.webhooks import sign

    secret = "whsec_" + _random(32)
    settings.KOMBO_WEBHOOK_SECRET = secret
    monkeypatch.setattr(webhook_events, "webhook_event_enqueue", lambda *, event_pk: True)
    body = json.dumps({"id": "evt_leak", "type": "integration-created", "data": {
        "id": "recruitee:Leak1", "category": "ASSESSMENT", "end_user": {"organization_name": "Leak"}}}).encode()

    def deliver(data, signature):
        return client.post("/webhooks/kombo/", data, content_type="application/json",
                           HTTP_X_KOMBO_SIGNATURE=signature)

    responses = [deliver(body, sign(body, secret)), deliver(body, sign(body, secret)[:-5] + "AAAA"),
                 deliver(body, ""), deliver(b"{bad", sign(b"{bad", secret))]
    webhook_events.webhook_event_process(event_pk=WebhookEvent.objects.get().pk)
    settings.KOMBO_WEBHOOK_SECRET = ""
    responses.append(deliver(body, sign(body, secret)))
    settings.KOMBO_WEBHOOK_SECRET = secret
    assert [r.status_code for r in responses] == [200, 401, 401, 400, 503]
    client.force_login(superuser)
    pages = [reverse("admin:packages_app_webhookevent_changelist"),
             reverse("admin:packages_app_webhookevent_change", args=[WebhookEvent.objects.get().pk]),
             reverse("admin:packages_app_integration_changelist")]
    responses += [client.get(url) for url in pages]
    assert all(r.status_code == 200 for r in responses[-3:])

    text = "\n".join([output(), database_text(), *(r.content.decode() + str(r.headers) for r in responses)])
    assert "evt_leak" in text and "Kombo webhook refused with 503" in text  # the capture works
    random_part = secret[len("whsec_"):]
    assert secret not in text
    assert [random_part[i:i + 8] for i in range(len(random_part) - 7) if random_part[i:i + 8] in text] == []


# --- deployment settings -------------------------------------------------------------------------

_PROJECT_ENV_PREFIXES = ("DJANGO_", "KOMBO_", "DATABASE_", "CELERY_", "TEST_", "LOGIN_", "WHITENOISE_",
                         "APP_", "AXES_", "LOG_LEVEL")


def production_env(tmp_path, **overrides):
    """Production settings from the environment only: the test run's own variables removed, so
    only what a test sets differs from a clean production configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PROJECT_ENV_PREFIXES)}
    env.update({
        "DJANGO_SETTINGS_MODULE": "kombo_admin.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "publisher.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
        "APP_VAR_DIR": str(tmp_path / "var"),  # keep the subprocess out of the repository's var/
    })
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


# Production settings from the defaults alone, made explicit where a test changes one thing.
CLEAN = {"DJANGO_SECURE_HSTS_PRELOAD": "true"}


def manage(env, *args):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60)


def check_deploy(env):
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    return result.returncode, result.stdout + result.stderr


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    code, out = check_deploy(production_env(tmp_path))
    assert code == 0, out
    assert "System check identified no issues" in out


def test_turning_hsts_preload_off_is_the_only_warning_left(tmp_path):
    """Preload is a commitment an operator may decline: then W021 is all `check --deploy` says."""
    code, out = check_deploy(production_env(tmp_path, DJANGO_SECURE_HSTS_PRELOAD="false"))
    assert code == 1 and set(re.findall(r"\((\w+\.[EWC]\d+)\)", out)) == {"security.W021"}, out
    code, out = check_deploy(production_env(tmp_path, **CLEAN))
    assert code == 0 and "System check identified no issues" in out, out


@pytest.mark.parametrize("overrides,reported", [
    ({"DJANGO_DEBUG": "true"}, "security.W018"),
    ({"DJANGO_SECRET_KEY": "too-short"}, "security.W009"),
    ({"DJANGO_SECURE_SSL_REDIRECT": "false"}, "security.W008"),
    ({"DJANGO_SESSION_COOKIE_SECURE": "false"}, "security.W012"),
    ({"DJANGO_SECURE_HSTS_SECONDS": "0"}, "security.W004"),
], ids=["debug", "short secret", "no ssl redirect", "insecure session cookie", "no hsts"])
def test_check_deploy_reports_an_unsafe_override(tmp_path, overrides, reported):
    code, out = check_deploy(production_env(tmp_path, **CLEAN, **overrides))
    assert code != 0 and reported in out, out


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    code, out = check_deploy(production_env(tmp_path, DJANGO_SECRET_KEY=None, **CLEAN))
    assert code != 0
    assert "DJANGO_SECRET_KEY is not set" in out and "Traceback" not in out  # one line, not a traceback


def test_an_empty_secret_key_is_refused_too(tmp_path):
    code, out = check_deploy(production_env(tmp_path, DJANGO_SECRET_KEY="", **CLEAN))
    assert code != 0 and "DJANGO_SECRET_KEY is not set" in out


@pytest.mark.parametrize("url,allowed", [
    ("http://kombo.example.com/v1", False),
    ("http://127.0.0.1:8765/v1", True),
    ("https://api.kombo.dev/v1", True),
])
def test_kombo_api_url_must_be_https_or_loopback(tmp_path, url, allowed):
    code, out = check_deploy(production_env(tmp_path, KOMBO_API_URL=url, **CLEAN))
    if allowed:
        assert code == 0 and "System check identified no issues" in out, out
    else:
        assert code != 0
        assert f"KOMBO_API_URL={url!r} is not allowed" in out and "Traceback" not in out


@pytest.mark.parametrize("url,allowed", [
    ("http://localhost:8765/v1", True),
    ("http://[::1]:8765/v1", True),
    ("http://127.0.0.2/v1", True),
    ("https://api.us.kombo.dev/v1", True),
    ("HTTPS://api.kombo.dev/v1", True),
    ("http://127.0.0.1.evil.example/v1", False),   # looks like loopback, is not
    ("http://localhost.evil.example/v1", False),
    ("http://10.0.0.5/v1", False),                  # private is not loopback
    ("http://0.0.0.0:8765/v1", False),
    ("https:///v1", False),                         # no host
    ("ftp://api.kombo.dev/v1", False),
    ("api.kombo.dev/v1", False),                    # no scheme
])
def test_kombo_url_rule(url, allowed):
    """The rule itself, without a subprocess for each case."""
    from django.core.exceptions import ImproperlyConfigured

    from kombo_admin import settings as project_settings

    if allowed:
        project_settings._check_kombo_url(url, "KOMBO_API_URL")
    else:
        with pytest.raises(ImproperlyConfigured, match="must use https"):
            project_settings._check_kombo_url(url, "KOMBO_API_URL")


def test_responses_carry_the_security_headers(client, superuser):
    client.force_login(superuser)
    response = client.get(reverse("admin:index"))
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_publish_needs_a_csrf_token(publisher, make_package, make_integration, scheduled):
    integration = make_integration([make_package()])
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(publisher)
    sha = publishing.publication_plan(
        integration=Integration.objects.prefetch_related("packages").get(pk=integration.pk)).sha256
    response = browser.post(PUBLISH_URL, {"post": "yes", "ids": str(integration.pk), f"sha256-{integration.pk}": sha})
    assert response.status_code == 403 and b"CSRF" in response.content
    assert not Publication.objects.exists()


# --- /health/ ------------------------------------------------------------------------------------

def test_health_is_ok_with_database_and_broker(client):
    response = client.get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    assert "no-cache" in response["Cache-Control"] and "max-age=0" in response["Cache-Control"]


def test_health_names_what_is_down_and_nothing_of_the_configuration(client, monkeypatch, settings):
    from kombu.exceptions import OperationalError

    secret_url = "redis://:hunter2-broker-password@10.20.30.40:6379/15"

    def broker_down():
        raise OperationalError(f"Error 111 connecting to {secret_url}. Connection refused.")

    monkeypatch.setitem(health.CHECKS, "broker", broker_down)
    response = client.get("/health/")
    assert response.status_code == 503
    assert response.json() == {"status": "down", "database": "ok", "broker": "down (OperationalError)"}
    body = response.content.decode()
    for secret in ("hunter2", "10.20.30.40", "redis://", settings.CELERY_BROKER_URL,
                   settings.DATABASES["default"]["NAME"], settings.KOMBO_API_KEY):
        assert secret not in body


def test_health_says_when_the_database_is_down(client, monkeypatch):
    def database_down():
        raise RuntimeError("could not connect to server at postgres://kombo:pw@db.internal/kombo")

    monkeypatch.setitem(health.CHECKS, "database", database_down)
    response = client.get("/health/")
    assert response.status_code == 503
    assert response.json() == {"status": "down", "database": "down (RuntimeError)", "broker": "ok"}
    assert b"db.internal" not in response.content and b"pw@" not in response.content


def test_health_is_get_only(client):
    assert client.post("/health/").status_code == 405


# --- login lockout (django-axes) ----------------------------------------------------------------

def _login(client, username, password, address):
    return client.post(LOGIN_URL, {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=address)


def _logged_in(client):
    return client.get(reverse("admin:index")).status_code == 200


def test_five_failed_logins_lock_the_account_from_that_address(client, superuser):
    for _ in range(4):
        response = _login(client, "root", "wrong-password", "203.0.113.7")
        assert response.status_code == 200 and response.context["form"].errors  # the login form again
    fifth = _login(client, "root", "wrong-password", "203.0.113.7")
    assert fifth.status_code == 429 and b"Too many failed logins" in fifth.content

    sixth = _login(client, "root", "pw-for-tests-123", "203.0.113.7")  # the right password
    assert sixth.status_code == 429 and b"Too many failed logins" in sixth.content
    assert b"axes_reset_username" in sixth.content
    assert not _logged_in(client)


def test_the_lockout_is_for_that_username_from_that_address_only(client, superuser, publisher):
    for _ in range(5):
        _login(client, "root", "wrong-password", "203.0.113.7")
    assert _login(client, "root", "pw-for-tests-123", "203.0.113.7").status_code == 429

    other_address = Client()
    response = _login(other_address, "root", "pw-for-tests-123", "198.51.100.9")
    assert response.status_code == 302 and _logged_in(other_address)

    other_user = Client()
    response = _login(other_user, "publisher", "pw-for-tests-123", "203.0.113.7")
    assert response.status_code == 302 and _logged_in(other_user)


def test_a_successful_login_resets_the_failure_count(client, superuser):
    for _ in range(4):
        _login(client, "root", "wrong-password", "203.0.113.7")
    assert _login(client, "root", "pw-for-tests-123", "203.0.113.7").status_code == 302
    client.logout()
    for _ in range(4):
        assert _login(client, "root", "wrong-password", "203.0.113.7").status_code == 200
    assert _login(client, "root", "pw-for-tests-123", "203.0.113.7").status_code == 302
