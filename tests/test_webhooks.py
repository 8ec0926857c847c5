"""POST /webhooks/kombo/: the signature checked over the raw bytes before anything is read or
written, every refusal writing nothing, each event stored once by its id and processed once by a
worker: integration-created creates the integration with the default plan and queues its first
publish, integration-deleted pauses it; other categories and types are stored and left alone."""
import base64
import hashlib
import hmac
import json
import logging

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from packages_app import publishing, tasks, webhook_events
from packages_app.models import Integration, Plan, Publication, WebhookEvent
from packages_app.webhooks import MAX_BODY_BYTES, sign

pytestmark = pytest.mark.django_db

URL = "/webhooks/kombo/"
SECRET = "whsec_test_0123456789abcdefghij"


@pytest.fixture(autouse=True)
def secret(settings):
    settings.KOMBO_WEBHOOK_SECRET = SECRET
    settings.KOMBO_WEBHOOK_REGION = "EU"
    return SECRET


@pytest.fixture
def queued(monkeypatch):
    """Event pks handed to the broker (recorded, not sent)."""
    pks = []

    def enqueue(*, event_pk):
        pks.append(event_pk)
        return True

    monkeypatch.setattr(webhook_events, "webhook_event_enqueue", enqueue)
    return pks


def event(event_id="evt_1", type_="integration-created", **data):
    body = {"id": event_id, "type": type_, "data": {
        "id": "recruitee:HWUTwvyx2wLoSUHphiWVrp28", "tool": "recruitee", "category": "ASSESSMENT",
        "end_user": {"organization_name": "Acme GmbH", "creator_email": "jsmith@example.com",
                     "origin_id": "acme-42"}}}
    body["data"].update(data)
    return json.dumps(body).encode()


def post(client, body, signature="sign", **headers):
    if signature == "sign":
        signature = sign(body, SECRET)
    if signature is not None:
        headers["HTTP_X_KOMBO_SIGNATURE"] = signature
    return client.post(URL, body, content_type="application/json", **headers)


def deliver(client, body, capture):
    """Post a signed event, run what its commit queues, and process it as the worker would."""
    with capture(execute=True):
        response = post(client, body)
    assert response.status_code == 200, response.content
    stored = WebhookEvent.objects.get(event_id=json.loads(body)["id"])
    with capture(execute=True):  # the publication it creates is queued after commit
        tasks.process_webhook_event.apply(args=[stored.pk])
    stored.refresh_from_db()
    return stored


@pytest.fixture
def standard(make_package):
    plan = Plan.objects.create(name="Standard", is_default=True)
    plan.packages.set([make_package("1001", name="TypeScript"), make_package("1002", name="Teamwork")])
    return plan


# --- the signature -----------------------------------------------------------------------------

def test_the_signature_is_base64url_hmac_sha256_of_the_raw_body():
    body = b'{"id":"e","type":"t"}'
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    assert sign(body, SECRET) == base64.urlsafe_b64encode(digest).decode()


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
def test_a_good_signature_is_accepted_with_or_without_padding(client, queued, padded,
                                                              django_capture_on_commit_callbacks):
    body = event()
    signature = sign(body, SECRET)
    assert signature.endswith("=")  # 32 bytes: one padding character
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, body, signature=signature if padded else signature.rstrip("="))
    assert response.status_code == 200 and response.json()["status"] == "ok"
    stored = WebhookEvent.objects.get()
    assert (stored.event_id, stored.type, stored.outcome) == ("evt_1", "integration-created", "received")
    assert stored.payload == json.loads(body)
    assert queued == [stored.pk]


@pytest.mark.parametrize("signature", [
    None, "", "not-a-signature", sign(b"another body", SECRET), sign(event(), "another-secret"),
    sign(event(), SECRET).upper(), "é" + sign(event(), SECRET),
], ids=["missing", "empty", "garbage", "other body", "other secret", "case changed", "non-ascii"])
def test_a_missing_or_wrong_signature_is_refused_and_writes_nothing(client, queued, signature, caplog,
                                                                    django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, event(), signature=signature)
    assert response.status_code == 401
    assert not WebhookEvent.objects.exists() and not Integration.objects.exists() and queued == []
    assert "Kombo webhook refused with 401" in caplog.text


def test_a_body_changed_after_signing_is_refused(client, queued):
    body = event()
    signature = sign(body, SECRET)
    tampered = body.replace(b"Acme GmbH", b"Evil GmbH")
    assert post(client, tampered, signature=signature).status_code == 401
    # Re-serialised JSON is other bytes: the signature is over what was sent, never a parse of it.
    reserialised = json.dumps(json.loads(body), indent=2).encode()
    assert post(client, reserialised, signature=signature).status_code == 401
    assert not WebhookEvent.objects.exists()


def test_the_signature_is_checked_before_the_json_is_read(client, queued):
    assert post(client, b"{not json", signature="wrong").status_code == 401
    assert post(client, b"{not json").status_code == 400


# --- refusals ----------------------------------------------------------------------------------

def test_a_body_over_one_megabyte_is_refused(client, queued):
    big = event().replace(b'"tool"', b'"padding": "' + b"x" * MAX_BODY_BYTES + b'", "tool"')
    response = post(client, big)
    assert response.status_code == 413
    assert not WebhookEvent.objects.exists()


def test_a_declared_length_over_the_limit_is_refused_before_reading(client, queued):
    body = event()
    response = post(client, body, CONTENT_LENGTH=str(MAX_BODY_BYTES + 1))
    assert response.status_code == 413 and not WebhookEvent.objects.exists()


def test_a_body_of_exactly_one_megabyte_is_read(client, queued):
    body = event()
    body = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"
    assert len(body) == MAX_BODY_BYTES
    assert post(client, body).status_code == 200 and WebhookEvent.objects.count() == 1


@pytest.mark.parametrize("body", [
    b"{not json", b"", b"\xff\xfe", b"[]", b'"text"', b'{"type": "integration-created"}',
    b'{"id": "", "type": "x"}', b'{"id": 42, "type": "x"}', b'{"id": "e1"}', b'{"id": "e1", "type": null}',
    b'{"id": "e1", "type": "x", "data": "\\u0000"}', b'{"id": "e1", "type": "x", "data": "\\ud800"}',
    b"[" * 100000,
], ids=["not json", "empty", "not utf-8", "array", "string", "no id", "empty id", "id not a string",
        "no type", "null type", "NUL", "lone surrogate", "nested too deeply"])
def test_malformed_events_are_refused_with_400_and_write_nothing(client, queued, body):
    response = post(client, body)
    assert response.status_code == 400, response.content
    assert not WebhookEvent.objects.exists()


def test_without_a_secret_the_endpoint_answers_503_and_says_why_in_the_log(client, queued, settings, caplog):
    settings.KOMBO_WEBHOOK_SECRET = ""
    with caplog.at_level(logging.ERROR, logger="packages_app.webhooks"):
        response = post(client, event(), signature=sign(event(), ""))
    assert response.status_code == 503
    assert "KOMBO_WEBHOOK_SECRET" not in response.content.decode()  # the sender learns nothing
    assert [r.getMessage() for r in caplog.records if r.name == "packages_app.webhooks"] == [(
        "Kombo webhook refused with 503: KOMBO_WEBHOOK_SECRET is not set. Set it to the secret Kombo's "
        "dashboard shows for this endpoint (README, \"Kombo webhooks\").")]
    assert not WebhookEvent.objects.exists()


def test_only_post(client, queued):
    assert client.get(URL).status_code == 405
    assert client.put(URL, event(), content_type="application/json").status_code == 405


def test_no_csrf_token_is_needed(queued):
    from django.test import Client

    response = post(Client(enforce_csrf_checks=True), event())
    assert response.status_code == 200


# --- once per event id -------------------------------------------------------------------------

def test_a_redelivery_answers_200_and_runs_nothing_again(client, queued, standard, no_broker,
                                                         django_capture_on_commit_callbacks):
    first = deliver(client, event(), django_capture_on_commit_callbacks)
    assert first.outcome == "created" and len(no_broker) == 1 and len(queued) == 1
    with django_capture_on_commit_callbacks(execute=True):
        again = post(client, event())
    assert again.status_code == 200 and again.json()["message"] == "Already received."
    assert WebhookEvent.objects.count() == 1 and len(queued) == 1
    # A duplicate task message finds the event done.
    assert tasks.process_webhook_event.apply(args=[first.pk]).get() == "created"
    assert Integration.objects.count() == 1 and Publication.objects.count() == 1 and len(no_broker) == 1


def test_a_redelivery_before_processing_queues_nothing_more(client, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        post(client, event())
        post(client, event())
    assert WebhookEvent.objects.count() == 1 and len(queued) == 1


def test_the_sweep_queues_events_left_unprocessed(client, queued, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    with django_capture_on_commit_callbacks(execute=False):  # the broker was down: never queued
        post(client, event("evt_old"))
        post(client, event("evt_new", type_="data-changed"))
    WebhookEvent.objects.filter(event_id="evt_old").update(received_at=timezone.now() - timedelta(minutes=5))
    assert queued == []
    swept = tasks.sweep_webhook_events.apply().get()
    assert swept == 1 and queued == [WebhookEvent.objects.get(event_id="evt_old").pk]


def test_an_unreachable_broker_leaves_the_event_for_the_sweep(client, caplog, monkeypatch,
                                                              django_capture_on_commit_callbacks):
    from celery import current_app

    def down(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(current_app, "send_task", down)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, event())
    assert response.status_code == 200
    assert WebhookEvent.objects.get().outcome == "received"
    assert "could not be queued (ConnectionRefusedError); the sweep will queue it" in caplog.text


# --- integration-created -----------------------------------------------------------------------

def test_integration_created_creates_it_with_the_default_plan_and_queues_its_first_publish(
        client, queued, standard, no_broker, settings, django_capture_on_commit_callbacks):
    settings.KOMBO_WEBHOOK_REGION = "US"
    stored = deliver(client, event(), django_capture_on_commit_callbacks)
    integration = Integration.objects.get()
    assert (integration.kombo_integration_id, integration.name, integration.region) == (
        "recruitee:HWUTwvyx2wLoSUHphiWVrp28", "Acme GmbH", "US")
    assert integration.is_active and integration.created_by_webhook
    assert list(integration.plans.all()) == [standard] and not integration.packages.exists()
    publication = Publication.objects.get()
    assert publication.integration == integration and publication.requested_by is None
    assert [p["id"] for p in publication.body_dict()["packages"]] == ["1001", "1002"]
    assert no_broker == [publication.pk]  # queued after commit, through the engine
    assert (stored.outcome, stored.integration, stored.error) == ("created", integration, "")
    assert stored.processed_at is not None
    assert f"publication #{publication.pk} of 2 packages queued" in stored.detail
    entry = LogEntry.objects.get(object_id=str(integration.pk))
    assert entry.get_change_message() == (
        "Added by Kombo's integration-created webhook (event evt_1), with the default plan “Standard”.")


def test_a_new_integration_without_a_default_plan_is_created_but_nothing_is_sent(
        client, queued, make_package, no_broker, django_capture_on_commit_callbacks):
    Plan.objects.create(name="Enterprise").packages.set([make_package()])  # not the default
    stored = deliver(client, event(), django_capture_on_commit_callbacks)
    integration = Integration.objects.get()
    assert not integration.plans.exists() and stored.outcome == "created"
    assert not Publication.objects.exists() and no_broker == []
    assert "offers no package: nothing published" in stored.detail


def test_an_existing_integration_is_not_duplicated_and_in_sync_is_not_published(
        client, queued, standard, make_integration, no_broker, django_capture_on_commit_callbacks):
    existing = make_integration(name="Acme (by staff)", kombo_integration_id="recruitee:HWUTwvyx2wLoSUHphiWVrp28")
    existing.plans.add(standard)
    (pub,) = publishing.publications_create(integrations=[existing])
    Publication.objects.filter(pk=pub.pk).update(status="succeeded")
    no_broker.clear()
    stored = deliver(client, event(), django_capture_on_commit_callbacks)
    assert Integration.objects.count() == 1
    existing.refresh_from_db()
    assert existing.name == "Acme (by staff)" and not existing.created_by_webhook
    assert (stored.outcome, stored.integration) == ("unchanged", existing)
    assert Publication.objects.count() == 1 and no_broker == []
    assert "exists already" in stored.detail and "Kombo holds its packages already" in stored.detail


def test_an_existing_integration_out_of_sync_is_published(client, queued, standard, make_integration,
                                                         no_broker, django_capture_on_commit_callbacks):
    existing = make_integration(kombo_integration_id="recruitee:HWUTwvyx2wLoSUHphiWVrp28")
    existing.plans.add(standard)
    stored = deliver(client, event(), django_capture_on_commit_callbacks)
    assert Integration.objects.count() == 1
    assert stored.outcome == "published" and len(no_broker) == 1
    assert Publication.objects.get().integration == existing


def test_an_existing_paused_integration_stays_paused(client, queued, standard, make_integration, no_broker,
                                                     django_capture_on_commit_callbacks):
    existing = make_integration(kombo_integration_id="recruitee:HWUTwvyx2wLoSUHphiWVrp28", is_active=False)
    existing.plans.add(standard)
    stored = deliver(client, event(), django_capture_on_commit_callbacks)
    existing.refresh_from_db()
    assert not existing.is_active and stored.outcome == "unchanged" and "paused" in stored.detail
    assert not Publication.objects.exists()


@pytest.mark.parametrize("category", ["ATS", "HRIS", "LMS", None])
def test_other_categories_are_stored_and_left_alone(client, queued, standard, no_broker, category,
                                                    django_capture_on_commit_callbacks):
    stored = deliver(client, event(category=category), django_capture_on_commit_callbacks)
    assert stored.outcome == "ignored" and stored.integration is None
    assert not Integration.objects.exists() and not Publication.objects.exists()


@pytest.mark.parametrize("integration_id", ["no-colon", "", None, 42, "a:" + "b" * 300])
def test_an_unusable_integration_id_fails_the_event_and_creates_nothing(client, queued, standard, integration_id,
                                                                        django_capture_on_commit_callbacks):
    stored = deliver(client, event(id=integration_id), django_capture_on_commit_callbacks)
    assert stored.outcome == "failed" and "is not a Kombo integration id" in stored.error
    assert not Integration.objects.exists()


def test_the_customer_name_is_cleaned_and_falls_back_to_the_id(client, queued, standard, no_broker,
                                                               django_capture_on_commit_callbacks):
    deliver(client, event("e1", id="recruitee:A1", end_user={"organization_name": "  Acme\tGmbH\n"}),
            django_capture_on_commit_callbacks)
    deliver(client, event("e2", id="recruitee:B2", end_user={"organization_name": None}),
            django_capture_on_commit_callbacks)
    deliver(client, event("e3", id="recruitee:C3", end_user={"organization_name": "x" * 500}),
            django_capture_on_commit_callbacks)
    names = dict(Integration.objects.values_list("kombo_integration_id", "name"))
    assert names["recruitee:A1"] == "Acme GmbH" and names["recruitee:B2"] == "recruitee:B2"
    assert len(names["recruitee:C3"]) == 200
    for integration in Integration.objects.all():
        integration.full_clean()


def test_a_failure_while_processing_is_recorded_and_undoes_the_work(client, queued, standard, monkeypatch,
                                                                    django_capture_on_commit_callbacks):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(publishing, "publications_create", broken)
    stored = deliver(client, event(), django_capture_on_commit_callbacks)
    assert stored.outcome == "failed" and stored.error == "RuntimeError: boom"
    assert not Integration.objects.exists()  # all or nothing


# --- integration-deleted -----------------------------------------------------------------------

def test_integration_deleted_pauses_it_cancels_what_is_on_its_way_and_keeps_the_ledger(
        client, queued, make_package, make_integration, no_broker, django_capture_on_commit_callbacks):
    integration = make_integration([make_package()], kombo_integration_id="recruitee:HWUTwvyx2wLoSUHphiWVrp28")
    (done,) = publishing.publications_create(integrations=[integration])
    Publication.objects.filter(pk=done.pk).update(status="succeeded")
    (waiting,) = publishing.publications_create(integrations=[integration])
    stored = deliver(client, event("evt_del", type_="integration-deleted", deleted_at="2026-11-30T10:00:00Z"),
                     django_capture_on_commit_callbacks)
    integration.refresh_from_db()
    assert not integration.is_active
    statuses = dict(Publication.objects.values_list("pk", "status"))
    assert statuses == {done.pk: "succeeded", waiting.pk: "cancelled"}
    assert (stored.outcome, stored.integration) == ("paused", integration)
    assert "deleted at Kombo at 2026-11-30T10:00:00Z" in stored.detail and "1 cancelled now" in stored.detail
    assert LogEntry.objects.filter(object_id=str(integration.pk), change_message__contains="integration-deleted").exists()


def test_integration_deleted_for_an_unknown_id_is_ignored(client, queued, django_capture_on_commit_callbacks):
    stored = deliver(client, event(type_="integration-deleted"), django_capture_on_commit_callbacks)
    assert stored.outcome == "ignored" and "nothing to pause" in stored.detail


# --- other types -------------------------------------------------------------------------------

@pytest.mark.parametrize("type_", ["integration-state-changed", "data-changed", "assessment:order-received",
                                   "something-new"])
def test_other_types_are_stored_acknowledged_and_ignored(client, queued, standard, type_,
                                                         django_capture_on_commit_callbacks):
    stored = deliver(client, event(type_=type_), django_capture_on_commit_callbacks)
    assert stored.type == type_ and stored.outcome == "ignored" and stored.processed_at
    assert not Integration.objects.exists()


# --- what staff see ----------------------------------------------------------------------------

def test_the_webhook_admin_is_read_only(client, superuser, queued, standard, no_broker,
                                        django_capture_on_commit_callbacks):
    stored = deliver(client, event(), django_capture_on_commit_callbacks)
    client.force_login(superuser)
    listing = client.get(reverse("admin:packages_app_webhookevent_changelist"))
    assert listing.status_code == 200
    text = listing.content.decode()
    assert "evt_1" in text and "integration-created" in text and "Integration created" in text
    assert "Acme GmbH" in text
    assert 'name="action"' not in text  # no delete action
    page = client.get(reverse("admin:packages_app_webhookevent_change", args=[stored.pk]))
    assert page.status_code == 200 and b"organization_name" in page.content and b'name="_save"' not in page.content
    assert client.get(reverse("admin:packages_app_webhookevent_add")).status_code == 403
    assert client.post(reverse("admin:packages_app_webhookevent_delete", args=[stored.pk])).status_code == 403


def test_the_integrations_list_filters_those_created_by_webhook(client, superuser, queued, standard,
                                                                make_integration, no_broker,
                                                                django_capture_on_commit_callbacks):
    make_integration(name="By staff")
    deliver(client, event(), django_capture_on_commit_callbacks)
    client.force_login(superuser)
    url = reverse("admin:packages_app_integration_changelist")
    listing = client.get(url)
    assert "created by webhook" in listing.content.decode()
    names = [i.name for i in client.get(url, {"created_by_webhook__exact": "1"}).context["cl"].result_list]
    assert names == ["Acme GmbH"]
    names = [i.name for i in client.get(url, {"created_by_webhook__exact": "0"}).context["cl"].result_list]
    assert names == ["By staff"]


def test_a_new_connection_whose_kombo_list_holds_other_packages_waits_for_staff(
        client, queued, standard, no_broker, sandbox, django_capture_on_commit_callbacks):
    """Kombo already holds a package for this connection that the product never sent (a
    reconnect, another system): publishing would delete it, so nothing is sent without staff."""
    sandbox.add_packages("recruitee:HWUTwvyx2wLoSUHphiWVrp28", [
        {"id": "legacy-7", "type": "SKILLS_TEST", "name": "Legacy test", "description": "Added at Kombo"}])
    stored = deliver(client, event(), django_capture_on_commit_callbacks)
    assert Integration.objects.filter(kombo_integration_id="recruitee:HWUTwvyx2wLoSUHphiWVrp28").exists()
    assert not Publication.objects.exists() and no_broker == []
    assert "needs staff's confirmation" in stored.detail and "publish it from the admin" in stored.detail
    assert sandbox.requests("PUT") == [] and sandbox.requests("GET")  # Kombo was read, not written
