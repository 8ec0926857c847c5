"""Kombo's webhooks end to end, with real processes (issue 13, "Try it locally"): the sandbox signs
and POSTs `integration-created` over real HTTP to the app (pytest-django's live server), a real
Celery worker processes the event, and within seconds the sandbox holds the default plan's
packages for the new integration. Every refusal, sent the same way, writes nothing and queues
nothing. The view's own checks are covered in detail by tests/test_webhooks.py; here they go over
the wire."""
import json
import sys
import time

import pytest
import requests

from kombo_admin.celery import app
from packages_app.models import Integration, Plan, Publication, WebhookEvent
from packages_app.webhooks import MAX_BODY_BYTES, sign

from .processes import Process, django_env, free_port, wait_for
from .test_reliability import BROKER, purge

# `secret` is test_webhooks' autouse fixture: settings.KOMBO_WEBHOOK_SECRET for the live server.
from .test_webhooks import SECRET, event, secret  # noqa: F401

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

WITHIN = 15  # seconds: "within seconds", with room for a slow CI machine


def queued_messages(queue="celery"):
    """Messages waiting on the test broker (what the view queued and no worker took)."""
    with app.connection_for_write(BROKER) as conn:
        return conn.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False).message_count


def nothing_written():
    return (WebhookEvent.objects.count(), Integration.objects.count(), Publication.objects.count()) == (0, 0, 0)


@pytest.fixture
def webhook_url(live_server):
    return f"{live_server.url}/webhooks/kombo/"


@pytest.fixture
def app_sandbox(sandbox, webhook_url):
    """The `sandbox` fixture (the app's Kombo) sending its webhooks to the live server."""
    sandbox.webhook_url, sandbox.webhook_secret = webhook_url, SECRET
    purge(BROKER)
    yield sandbox
    purge(BROKER)


@pytest.fixture
def worker(app_sandbox, workers, tmp_path):
    return workers(django_env(BROKER, app_sandbox.url, tmp_path, KOMBO_WEBHOOK_SECRET=SECRET))


@pytest.fixture
def default_plan(make_package):
    plan = Plan.objects.create(name="Standard", is_default=True)
    plan.packages.set([make_package("1001", name="TypeScript"), make_package("1002", name="Teamwork")])
    return plan


def processed(event_id):
    return WebhookEvent.objects.filter(event_id=event_id, processed_at__isnull=False).first()


def wait_processed(event_id):
    wait_for(lambda: processed(event_id), WITHIN, f"webhook event {event_id} to be processed")
    return processed(event_id)


def publication_done(integration_id):
    return Publication.objects.filter(integration__kombo_integration_id=integration_id,
                                      status="succeeded").exists()


# --- the happy path --------------------------------------------------------------------------

def test_the_sandbox_sends_integration_created_and_soon_holds_the_default_plans_packages(
        app_sandbox, worker, default_plan, webhook_url):
    started = time.monotonic()
    # What a run.sh user does with curl: the control endpoint, over HTTP.
    answer = requests.post(f"{app_sandbox.base_url}/_sandbox/webhooks/integration-created",
                           json={"organization_name": "Acme GmbH"}, timeout=15)
    assert answer.status_code == 200, answer.text
    sent = answer.json()
    assert SECRET not in answer.text
    assert (sent["url"], sent["status"], sent["response"]["message"]) == (webhook_url, 200, "Received.")
    event_sent = sent["event"]
    integration_id = event_sent["data"]["id"]
    assert event_sent["type"] == "integration-created" and event_sent["data"]["category"] == "ASSESSMENT"
    assert event_sent["data"]["tool"] == integration_id.split(":")[0]
    assert event_sent["data"]["end_user"]["organization_name"] == "Acme GmbH"

    wait_for(lambda: len(app_sandbox.packages(integration_id)) == 2, WITHIN,
             f"the sandbox to hold the default plan's packages for {integration_id}")
    elapsed = time.monotonic() - started
    assert [p["id"] for p in app_sandbox.packages(integration_id)] == ["1001", "1002"]
    assert [p["name"] for p in app_sandbox.packages(integration_id)] == ["TypeScript", "Teamwork"]

    integration = Integration.objects.get()
    assert (integration.kombo_integration_id, integration.name) == (integration_id, "Acme GmbH")
    assert integration.created_by_webhook and list(integration.plans.all()) == [default_plan]
    stored = wait_processed(event_sent["id"])
    assert (stored.outcome, stored.integration) == ("created", integration)
    wait_for(lambda: publication_done(integration_id), WITHIN, "the publication to be recorded as succeeded")
    assert len(app_sandbox.requests("PUT", integration_id)) == 1
    print(f"webhook sent -> packages at the sandbox in {elapsed:.2f} s", file=sys.stderr)


def test_the_sandbox_command_signs_with_the_secret_from_the_environment(
        live_server, webhook_url, workers, default_plan, tmp_path):
    """`manage.py kombo_sandbox --webhook-url ... --webhook-secret-env NAME`, as scripts/run.sh
    starts it: a separate process, driven over HTTP only."""
    purge(BROKER)
    port = free_port()
    env = django_env(BROKER, f"http://127.0.0.1:{port}/v1", tmp_path, SANDBOX_WEBHOOK_SECRET=SECRET)
    command = Process([sys.executable, "manage.py", "kombo_sandbox", "--port", str(port),
                       "--webhook-url", webhook_url, "--webhook-secret-env", "SANDBOX_WEBHOOK_SECRET"],
                      tmp_path / "sandbox.log", env)
    try:
        command.wait_output("Webhooks: POST", timeout=30)
        workers(django_env(BROKER, f"http://127.0.0.1:{port}/v1", tmp_path, KOMBO_WEBHOOK_SECRET=SECRET))
        base = f"http://127.0.0.1:{port}"
        answer = requests.post(f"{base}/_sandbox/webhooks/integration-created",
                               json={"id": "recruitee:FromTheCommand1", "organization_name": "Beta AG"}, timeout=15)
        assert answer.status_code == 200 and answer.json()["status"] == 200, answer.text

        def held():
            state = requests.get(f"{base}/_sandbox/state", timeout=5).json()
            return [p["id"] for p in state.get("recruitee:FromTheCommand1", {}).get("packages", [])]

        wait_for(lambda: held() == ["1001", "1002"], WITHIN, "the command's sandbox to hold the packages")
        assert Integration.objects.get().name == "Beta AG"
    finally:
        command.stop()
    assert SECRET not in command.output()


def test_the_command_refuses_an_unset_secret_variable(tmp_path):
    env = django_env(BROKER, "http://127.0.0.1:9/v1", tmp_path)
    env.pop("NO_SUCH_SECRET_VARIABLE", None)
    command = Process([sys.executable, "manage.py", "kombo_sandbox", "--port", "0", "--webhook-url",
                       "http://127.0.0.1:9/webhooks/kombo/", "--webhook-secret-env", "NO_SUCH_SECRET_VARIABLE"],
                      tmp_path / "refused.log", env)
    assert command.popen.wait(30) != 0
    command.log.close()
    assert "NO_SUCH_SECRET_VARIABLE (--webhook-secret-env) is not set or empty" in command.output()


# --- refusals over real HTTP: nothing written, nothing queued, nothing sent ------------------

def _no_signature(sandbox):
    return sandbox.deliver_webhook(event("evt_unsigned"), signature=None)


def _wrong_signature(sandbox):  # the sandbox's own sender with another secret
    return sandbox.send_webhook(secret="not-the-apps-secret")


def _changed_after_signing(sandbox):
    body = event("evt_tampered")
    return sandbox.deliver_webhook(body.replace(b"Acme GmbH", b"Evil GmbH"), signature=sign(body, SECRET))


def _too_large(sandbox):
    big = event("evt_big").replace(b'"tool"', b'"padding": "' + b"x" * MAX_BODY_BYTES + b'", "tool"')
    return sandbox.deliver_webhook(big)


def _malformed_json(sandbox):
    return sandbox.deliver_webhook(b'{"id": "evt_broken", "type": "integration-created", ')


@pytest.mark.parametrize("send, status", [
    (_no_signature, 401), (_wrong_signature, 401), (_changed_after_signing, 401), (_too_large, 413),
    (_malformed_json, 400),
], ids=["no signature", "wrong signature", "changed after signing", "too large", "malformed JSON"])
def test_a_refused_webhook_writes_nothing(app_sandbox, default_plan, send, status):
    sent = send(app_sandbox)
    assert sent["status"] == status, sent
    assert sent["response"]["status"] == "error"
    assert nothing_written()
    assert queued_messages() == 0  # nothing for a worker to run
    assert app_sandbox.requests() == []  # and nothing published


def test_a_replayed_event_is_acknowledged_and_nothing_runs_twice(app_sandbox, worker, default_plan):
    first = app_sandbox.send_webhook(organization_name="Acme GmbH")
    integration_id, event_id = first["event"]["data"]["id"], first["event"]["id"]
    assert first["status"] == 200
    wait_for(lambda: publication_done(integration_id), WITHIN, "the first delivery's publication")

    # Kombo redelivers: the same event id, signed again (a later attempt may even differ).
    again = app_sandbox.send_webhook(id=integration_id, event_id=event_id, organization_name="Acme GmbH")
    assert (again["status"], again["response"]["message"]) == (200, "Already received.")
    same_bytes = app_sandbox.deliver_webhook(json.dumps(first["event"]).encode())
    assert same_bytes["status"] == 200 and same_bytes["response"]["message"] == "Already received."

    # A later event, processed by the same worker, proves the queue was drained past the replays.
    canary = app_sandbox.deliver_webhook(event("evt_canary", type_="data-changed"))
    assert canary["status"] == 200
    wait_processed("evt_canary")
    assert WebhookEvent.objects.filter(event_id=event_id).count() == 1
    assert WebhookEvent.objects.get(event_id=event_id).outcome == "created"
    assert Integration.objects.count() == 1 and Publication.objects.count() == 1
    assert len(app_sandbox.requests("PUT", integration_id)) == 1
    assert queued_messages() == 0


def test_an_unknown_type_or_another_category_is_acknowledged_and_writes_nothing(app_sandbox, worker, default_plan):
    unknown = app_sandbox.deliver_webhook(event("evt_unknown", type_="something-new"))
    ats = app_sandbox.send_webhook(category="ATS")
    assert unknown["status"] == ats["status"] == 200
    for event_id in ("evt_unknown", ats["event"]["id"]):
        assert wait_processed(event_id).outcome == "ignored"
    assert not Integration.objects.exists() and not Publication.objects.exists()
    assert app_sandbox.requests() == []
