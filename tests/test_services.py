"""Executing publications against the sandbox over real HTTP, one attempt at a time: every
outcome ends in the right state with the right stored fields and number of requests."""
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from packages_app import publishing
from packages_app.models import Integration, Publication, PublicationAttempt
from packages_app.sandbox import Fault

pytestmark = pytest.mark.django_db


@pytest.fixture
def scheduled(monkeypatch):
    """(publication id, countdown) of every message the services queue, instead of a broker."""
    calls = []

    def fake_enqueue(*, publication_ids, countdown=None, followed_by=0):
        calls.extend((publication_id, countdown) for publication_id in publication_ids)
        Publication.objects.filter(pk__in=publication_ids).update(
            enqueued_at=timezone.now() + timedelta(seconds=countdown or 0))
        return list(publication_ids)

    monkeypatch.setattr(publishing.queueing, "publications_enqueue", fake_enqueue)
    return calls


@pytest.fixture
def publication(make_package, make_integration, scheduled):
    integration = make_integration([make_package("1001", name="TypeScript"), make_package("1002")],
                                   kombo_integration_id="recruitee:Acme1")
    (pub,) = publishing.publications_create(integrations=[integration])
    return pub


def run(pub):
    result = publishing.publication_execute(publication_id=pub.pk)
    pub.refresh_from_db()
    return result


def error_body(code, message="m", title="t", log_url="https://app.kombo.dev/logs?interactionId=1"):
    return {"status": "error", "error": {"code": code, "title": title, "message": message, "log_url": log_url}}


def test_success_stores_everything_and_logs_each_warning(sandbox, publication, caplog):
    sandbox.extra_warnings = ["Name cut to 50 characters.", "Second warning."]
    with caplog.at_level(logging.WARNING, logger="packages_app.publishing"):
        result = run(publication)
    assert result.status == "succeeded" and result.sent
    p = publication
    assert p.status == "succeeded" and p.http_status == 200 and p.attempts == 1
    assert p.warnings == ["Name cut to 50 characters.", "Second warning."]
    assert '"status": "success"' in p.response_body or '"status":"success"' in p.response_body
    assert p.started_at and p.finished_at and p.finished_at >= p.started_at
    assert p.error_code == "" and p.failure_reason == ""
    assert set(p.rate_limit_headers) >= {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(": ", 1)[1] for r in warnings] == p.warnings
    (request,) = sandbox.requests("PUT")
    assert request.body == p.body.encode() and [x["id"] for x in sandbox.packages("recruitee:Acme1")] == ["1001", "1002"]
    (attempt,) = PublicationAttempt.objects.filter(publication=p)
    assert attempt.outcome == "succeeded" and attempt.http_status == 200
    # The integration's lease is released.
    assert Integration.objects.filter(publish_lease_token="", publish_lease_until__isnull=True).count() == 1


def test_permanent_error_fails_at_once_with_kombos_fields(sandbox, publication, scheduled):
    sandbox.enqueue_fault(Fault(status=400, body=error_body("PLATFORM.INPUT_INVALID", "packages[0].name is too long")))
    assert run(publication).status == "failed"
    p = publication
    assert (p.error_code, p.error_title, p.error_message) == ("PLATFORM.INPUT_INVALID", "t", "packages[0].name is too long")
    assert p.error_log_url == "https://app.kombo.dev/logs?interactionId=1" and p.http_status == 400
    assert "packages[0].name is too long" in p.failure_reason and p.finished_at
    assert len(sandbox.requests("PUT")) == 1 and scheduled == []  # no retry scheduled


def test_transient_error_retries_then_succeeds(sandbox, publication, scheduled):
    sandbox.enqueue_fault(Fault(status=503, body="<html><h1>503 Service Temporarily Unavailable</h1></html>"))
    result = run(publication)
    p = publication
    assert result.status == "retrying" and p.status == "retrying"
    assert p.next_attempt_at > timezone.now() - timedelta(seconds=1)
    assert "503 Service Temporarily Unavailable" in p.failure_reason and p.http_status == 503
    assert scheduled[-1][0] == p.pk and 0 <= scheduled[-1][1] <= 0.5
    Publication.objects.filter(pk=p.pk).update(next_attempt_at=timezone.now())
    assert run(p).status == "succeeded"
    assert p.attempts == 2 and p.failure_reason == "" and len(sandbox.requests("PUT")) == 2
    outcomes = list(p.attempt_log.values_list("outcome", "http_status"))
    assert outcomes == [("transient", 503), ("succeeded", 200)]
    assert p.attempt_log.first().wait_seconds == pytest.approx(scheduled[-1][1])


def test_transient_errors_give_up_after_max_attempts(sandbox, publication, settings):
    settings.KOMBO_MAX_ATTEMPTS = 3
    for _ in range(3):
        sandbox.enqueue_fault(Fault(status=502, body=None))
    for _ in range(3):
        Publication.objects.filter(pk=publication.pk).update(next_attempt_at=None)
        run(publication)
    p = publication
    assert p.status == "failed" and p.attempts == 3
    assert p.failure_reason == "Gave up after 3 attempts. Last error: Kombo answered HTTP 502 with an empty body."
    assert len(sandbox.requests("PUT")) == 3


def test_a_message_that_arrives_early_does_not_send(sandbox, publication, scheduled):
    sandbox.enqueue_fault(Fault(status=503, body=None))
    run(publication)
    Publication.objects.filter(pk=publication.pk).update(next_attempt_at=timezone.now() + timedelta(seconds=60))
    assert run(publication).status == "retrying"
    assert len(sandbox.requests("PUT")) == 1


def test_sync_pending_waits_slowly_and_leaves_scheduling_to_the_sweep(sandbox, make_package, make_integration, scheduled, settings):
    settings.KOMBO_SYNC_PENDING_RETRY_SECONDS = 900
    integration = make_integration([make_package()], kombo_integration_id="syncpending:New1")
    (p,) = publishing.publications_create(integrations=[integration])
    before = len(scheduled)
    assert run(p).status == "waiting"
    assert p.error_code == "INTEGRATION.SETUP_SYNC_PENDING" and p.http_status == 409
    assert 899 <= (p.next_attempt_at - timezone.now()).total_seconds() <= 900
    assert len(scheduled) == before  # too far ahead for a countdown: the sweep picks it up
    Publication.objects.filter(pk=p.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1),
                                               enqueued_at=timezone.now() - timedelta(hours=1))
    assert publishing.publications_sweep() == [p.pk]


def test_sync_pending_fails_after_the_maximum_wait(sandbox, make_package, make_integration, scheduled, settings):
    integration = make_integration([make_package()], kombo_integration_id="syncpending:Old1")
    (p,) = publishing.publications_create(integrations=[integration])
    run(p)
    Publication.objects.filter(pk=p.pk).update(started_at=timezone.now() - timedelta(hours=25), next_attempt_at=None)
    assert run(p).status == "failed"
    assert p.failure_reason.startswith("The customer's first sync had not finished after 25.0 h.")


@pytest.mark.parametrize("code", ["PLATFORM.UNKNOWN_ERROR", "REMOTE.UNKNOWN_HTTP_ERROR", "PLATFORM.TASK_TIMED_OUT"])
def test_no_auto_retry_codes_fail_and_say_to_publish_again(sandbox, publication, code):
    sandbox.enqueue_fault(Fault(status=500, body=error_body(code)))
    assert run(publication).status == "failed"
    assert "check the log, then publish again" in publication.failure_reason
    assert len(sandbox.requests("PUT")) == 1


def test_missing_api_key_fails_with_a_message_and_sends_nothing(sandbox, publication, settings):
    settings.KOMBO_API_KEY = ""
    assert run(publication).status == "failed"
    assert publication.failure_reason.startswith("KOMBO_API_KEY is not set")
    assert sandbox.requests() == []


def test_an_older_publication_is_superseded_by_a_newer_one(sandbox, publication):
    (newer,) = publishing.publications_create(integrations=[publication.integration])
    assert run(publication).status == "superseded"
    assert publication.finished_at and "newer publication" in publication.failure_reason
    assert sandbox.requests() == []
    assert run(newer).status == "succeeded"


def test_running_a_finished_publication_again_changes_nothing(sandbox, publication):
    run(publication)
    first = Publication.objects.values().get(pk=publication.pk)
    assert run(publication).status == "succeeded" and not publishing.publication_execute(publication_id=publication.pk).sent
    assert Publication.objects.values().get(pk=publication.pk) == first
    assert len(sandbox.requests("PUT")) == 1


def test_the_lease_keeps_a_second_publication_waiting(sandbox, make_package, make_integration, scheduled):
    integration = make_integration([make_package()])
    (p,) = publishing.publications_create(integrations=[integration])
    Integration.objects.filter(pk=integration.pk).update(
        publish_lease_token="another-run", publish_lease_until=timezone.now() + timedelta(seconds=30))
    result = run(p)
    assert result.retry_in and p.status == "queued" and sandbox.requests() == []
    assert scheduled[-1][0] == p.pk and 1 <= scheduled[-1][1] <= 2
    # An expired lease (its holder died) is taken over.
    Integration.objects.filter(pk=integration.pk).update(publish_lease_until=timezone.now() - timedelta(seconds=1))
    assert run(p).status == "succeeded"


def test_a_publication_left_sending_by_a_dead_worker_is_resumed(sandbox, publication):
    Publication.objects.filter(pk=publication.pk).update(status="sending", attempts=1)
    PublicationAttempt.objects.create(publication=publication, number=1, started_at=timezone.now())
    assert publishing.publications_sweep(now=timezone.now() + timedelta(minutes=10)) == [publication.pk]
    assert run(publication).status == "succeeded"
    assert list(publication.attempt_log.values_list("outcome", flat=True)) == ["lost", "succeeded"]


def test_sweep_queues_what_the_broker_never_got_and_nothing_else(publication, scheduled, make_integration):
    Publication.objects.filter(pk=publication.pk).update(enqueued_at=None, requested_at=timezone.now() - timedelta(minutes=1))
    (recent,) = publishing.publications_create(integrations=[make_integration()])
    assert publishing.publications_sweep() == [publication.pk]
    assert publishing.publications_sweep() == []  # just queued: not again until it is stale


def test_publications_are_created_all_or_none(make_integration):
    active, paused = make_integration(), make_integration(is_active=False)
    with pytest.raises(publishing.IntegrationPaused):
        publishing.publications_create(integrations=[active, paused])
    assert not Publication.objects.exists()



def test_a_dead_sending_publication_with_a_newer_one_is_superseded_not_stuck(sandbox, publication):
    Publication.objects.filter(pk=publication.pk).update(status="sending", attempts=1)
    PublicationAttempt.objects.create(publication=publication, number=1, started_at=timezone.now())
    (newer,) = publishing.publications_create(integrations=[publication.integration])
    assert run(publication).status == "superseded"
    assert list(publication.attempt_log.values_list("outcome", flat=True)) == ["lost"]
    assert sandbox.requests() == []
    assert publishing.publications_sweep(now=timezone.now() + timedelta(hours=1)) == [newer.pk]


def test_attempts_lost_to_dead_workers_count_against_the_maximum(sandbox, publication, settings):
    """A publication that kills its worker every time must end, not be sent forever."""
    settings.KOMBO_MAX_ATTEMPTS = 2
    Publication.objects.filter(pk=publication.pk).update(status="sending", attempts=2)
    PublicationAttempt.objects.create(publication=publication, number=1, started_at=timezone.now(),
                                      finished_at=timezone.now(), outcome="lost")
    PublicationAttempt.objects.create(publication=publication, number=2, started_at=timezone.now())
    assert run(publication).status == "failed"
    assert publication.failure_reason.startswith("Gave up after 2 attempts.")
    assert list(publication.attempt_log.values_list("outcome", flat=True)) == ["lost", "lost"]
    assert sandbox.requests() == []


def test_saving_an_integration_never_touches_its_lease(make_integration):
    integration = make_integration()
    stale = Integration.objects.get(pk=integration.pk)  # read before a worker takes the lease
    Integration.objects.filter(pk=integration.pk).update(
        publish_lease_token="t" * 32,
        publish_lease_until=timezone.now() + timedelta(minutes=1))
    stale.name = "Renamed in the admin"
    stale.save()
    fresh = Integration.objects.get(pk=integration.pk)
    assert fresh.name == "Renamed in the admin"
    assert fresh.publish_lease_token == "t" * 32 and fresh.publish_lease_until is not None


def test_a_broker_that_fails_is_tried_once_not_once_per_publication(monkeypatch, make_integration,
                                                                    django_capture_on_commit_callbacks):
    from kombu.exceptions import OperationalError

    from kombo_admin.celery import app

    calls = []

    def broker_down(*args, **kwargs):
        calls.append(kwargs)
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", broker_down)
    integrations = [make_integration() for _ in range(5)]
    with django_capture_on_commit_callbacks(execute=True):
        publications = publishing.publications_create(integrations=integrations)
    assert len(calls) == 1 and [p.enqueued for p in publications] == [False] * 5
    assert Publication.objects.filter(status="queued", enqueued_at__isnull=True).count() == 5
