"""The fault table of the reliability issue: each fault served by a real HTTP server on
127.0.0.1 ends in the right state, with the right stored fields and number of requests."""
from datetime import timedelta

import pytest
from django.utils import timezone

from packages_app import publishing
from packages_app.admin import publication_status_text
from packages_app.models import Publication
from packages_app.sandbox import Fault

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]




def err(code, message="m", status=None):
    return {"status": "error", "error": {"code": code, "title": "t" if code else None, "message": message,
                                         "log_url": "https://app.kombo.dev/logs?interactionId=9" if code else None}}


def drive(pub, limit=10):
    """Run attempts back to back (skipping the waits) until the publication stops moving."""
    for _ in range(limit):
        publishing.publication_execute(publication_id=pub.pk)
        pub.refresh_from_db()
        if pub.is_final or pub.status == "waiting":
            return pub
        Publication.objects.filter(pk=pub.pk).update(next_attempt_at=timezone.now())
    return pub


RATE_LIMITED = err("PLATFORM.RATE_LIMIT_EXCEEDED", "Rate limit exceeded")

# (name, fault, integration id, final status, requests sent, stored fields)
FAULTS = [
    ("429 with Retry-After", Fault(status=429, body=RATE_LIMITED, headers={"Retry-After": "2", "ratelimit-remaining": "0"}),
     "recruitee:A", "succeeded", 2, {}),
    ("503 with an HTML page", Fault(status=503, body="<html><h1>503 Service Unavailable</h1></html>"),
     "recruitee:A", "succeeded", 2, {}),
    ("connection reset", Fault(reset=True), "recruitee:A", "succeeded", 2, {}),
    ("hangs past the read timeout", Fault(status=200, delay=2.5), "recruitee:A", "succeeded", 2, {}),
    ("200 with malformed JSON", Fault(status=200, body="{not json", content_type="application/json"),
     "recruitee:A", "succeeded", 2, {}),
    ("400 PLATFORM.INPUT_INVALID", Fault(status=400, body=err("PLATFORM.INPUT_INVALID", "packages[0].name is too long")),
     "recruitee:A", "failed", 1, {"http_status": 400, "error_code": "PLATFORM.INPUT_INVALID", "error_message": "packages[0].name is too long"}),
    ("401", None, "recruitee:A", "failed", 1, {"http_status": 401, "error_code": "PLATFORM.AUTHENTICATION_INVALID"}),
    ("404 PLATFORM.INTEGRATION_NOT_FOUND", None, "notfound:A", "failed", 1, {"http_status": 404, "error_code": "PLATFORM.INTEGRATION_NOT_FOUND"}),
    ("409 INTEGRATION.SETUP_SYNC_PENDING", None, "syncpending:A", "waiting", 1, {"http_status": 409, "error_code": "INTEGRATION.SETUP_SYNC_PENDING"}),
    ("an unknown code on a 422", Fault(status=422, body=err("PLATFORM.BRAND_NEW_CODE", "new")),
     "recruitee:A", "failed", 1, {"http_status": 422, "error_code": "PLATFORM.BRAND_NEW_CODE", "error_message": "new"}),
    ("an unknown code on a 503", Fault(status=503, body=err("REMOTE.BRAND_NEW_CODE", "new")),
     "recruitee:A", "succeeded", 2, {}),
    ("a minimal error on a 400", Fault(status=400, body=err(None, "The message is always in the response.")),
     "recruitee:A", "failed", 1, {"http_status": 400, "error_code": "", "error_title": "", "error_log_url": "",
                                  "error_message": "The message is always in the response."}),
    ("PLATFORM.UNKNOWN_ERROR", Fault(status=500, body=err("PLATFORM.UNKNOWN_ERROR")),
     "recruitee:A", "failed", 1, {"http_status": 500, "error_code": "PLATFORM.UNKNOWN_ERROR"}),
]


@pytest.mark.parametrize("name,fault,integration_id,status,requests,fields", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault(name, fault, integration_id, status, requests, fields, sandbox, settings, make_package, make_integration):
    settings.KOMBO_READ_TIMEOUT = 1.0
    if name == "401":
        settings.KOMBO_API_KEY = "a-wrong-key-0000"
    settings.KOMBO_RETRY_MAX_WAIT_SECONDS = 30
    if fault:
        sandbox.enqueue_fault(fault)
    integration = make_integration([make_package("1001")], kombo_integration_id=integration_id)
    (pub,) = publishing.publications_create(integrations=[integration])
    pub = drive(pub)
    assert pub.status == status
    assert len(sandbox.requests("PUT")) == requests
    for field, value in fields.items():
        assert getattr(pub, field) == value, field
    assert pub.failure_reason or status == "succeeded"
    if status == "failed":
        assert pub.finished_at and pub.attempts == 1
    if status == "succeeded":
        assert pub.failure_reason == "" and pub.error_code == ""
        first = pub.attempt_log.get(number=1)
        assert first.outcome == "transient" and first.wait_seconds is not None
    if name == "429 with Retry-After":
        assert pub.attempt_log.get(number=1).wait_seconds >= 2  # Retry-After honoured
    if name == "a minimal error on a 400":
        assert pub.failure_reason == "Kombo answered HTTP 400 (no error code): The message is always in the response."


def test_status_text_staff_see_while_retrying(sandbox, settings, make_package, make_integration):
    settings.KOMBO_MAX_ATTEMPTS = 8
    sandbox.enqueue_fault(Fault(status=503, body=None))
    sandbox.enqueue_fault(Fault(status=503, body=None))
    (pub,) = publishing.publications_create(integrations=[make_integration([make_package()])])
    publishing.publication_execute(publication_id=pub.pk)
    Publication.objects.filter(pk=pub.pk).update(next_attempt_at=timezone.now())
    publishing.publication_execute(publication_id=pub.pk)
    pub.refresh_from_db()
    next_try = timezone.now().replace(hour=16, minute=32, second=10) + timedelta(days=1)
    Publication.objects.filter(pk=pub.pk).update(next_attempt_at=next_try)
    pub.refresh_from_db()
    # The one date and time format of every page (kombo_admin/formats), with the time zone.
    assert publication_status_text(pub) == f"Retrying: attempt 3 of 8, next try at {next_try:%Y-%m-%d} 16:32 UTC"


def test_status_text_while_waiting_for_the_first_sync(sandbox, make_package, make_integration):
    (pub,) = publishing.publications_create(integrations=[make_integration([make_package()], kombo_integration_id="syncpending:B")])
    publishing.publication_execute(publication_id=pub.pk)
    pub.refresh_from_db()
    assert publication_status_text(pub).startswith("Waiting for the customer's first sync; next try at ")
