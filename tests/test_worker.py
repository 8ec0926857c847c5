"""A real Celery worker (celery.contrib.testing) on the real broker (Redis in CI), a real
database (PostgreSQL in CI) and real HTTP to the sandbox: publishing end to end."""
import time

import pytest
from celery.contrib.testing.worker import start_worker

from kombo_admin.celery import app
from packages_app import publishing
from packages_app.models import Publication

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def purge_queue():
    with app.connection_for_write() as connection:
        connection.default_channel.queue_declare(queue="celery", durable=True, auto_delete=False)
        connection.default_channel.queue_purge("celery")


@pytest.fixture
def worker(settings):
    purge_queue()  # fails loudly when the broker is missing: never a silent skip
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10):
        yield


def wait_final(pk, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publication = Publication.objects.get(pk=pk)
        if publication.is_final:
            return publication
        time.sleep(0.05)
    raise AssertionError(f"publication {pk} still {publication.status} after {timeout} s")


def test_worker_publishes_to_the_sandbox_and_stores_the_answer(sandbox, worker, make_package, make_integration, publisher):
    sandbox.extra_warnings = ["Package names longer than 50 characters are cut in this ATS."]
    integration = make_integration(
        [make_package("1001", name="TypeScript", description="TypeScript coding skills assessments"),
         make_package("1002", type="VIDEO_INTERVIEW", name="Video Interview",
                      description="Video interview to assess communication skills")],
        kombo_integration_id="recruitee:HWUTwvyx2wLoSUHphiWVrp28", name="Acme",
    )
    (created,) = publishing.publications_create(integrations=[integration], requested_by=publisher)
    assert created.enqueued is True

    p = wait_final(created.pk)
    expected_body = (
        '{"packages":[{"id":"1001","type":"SKILLS_TEST","name":"TypeScript","description":"TypeScript coding skills assessments"},'
        '{"id":"1002","type":"VIDEO_INTERVIEW","name":"Video Interview","description":"Video interview to assess communication skills"}]}'
    )
    assert p.status == "succeeded"
    assert p.integration_id == integration.pk and p.requested_by_id == publisher.pk
    assert p.body == expected_body and p.package_count == 2
    assert p.body_sha256 == integration.current_sha256()
    assert p.attempts == 1 and p.http_status == 200
    assert p.warnings == ["Package names longer than 50 characters are cut in this ATS."]
    assert p.response_body and '"success"' in p.response_body
    assert (p.error_code, p.error_title, p.error_message, p.error_log_url, p.failure_reason) == ("", "", "", "", "")
    assert p.rate_limit_headers["ratelimit-limit"] and "concurrency-remaining" in p.rate_limit_headers
    assert p.enqueued_at and p.started_at and p.finished_at and p.requested_at <= p.started_at <= p.finished_at
    assert p.next_attempt_at is None
    (request,) = sandbox.requests("PUT")
    assert request.body == expected_body.encode()
    assert {k.lower(): v for k, v in request.headers.items()}["x-integration-id"] == "recruitee:HWUTwvyx2wLoSUHphiWVrp28"
    assert [x["id"] for x in sandbox.packages("recruitee:HWUTwvyx2wLoSUHphiWVrp28")] == ["1001", "1002"]
    assert integration.sync_status == "in_sync"


def test_worker_records_kombos_error(sandbox, worker, make_package, make_integration):
    integration = make_integration([make_package()], kombo_integration_id="notfound:Gone1")
    (created,) = publishing.publications_create(integrations=[integration])
    p = wait_final(created.pk)
    assert p.status == "failed" and p.http_status == 404 and p.error_code == "PLATFORM.INTEGRATION_NOT_FOUND"
    assert p.error_message and p.error_log_url and len(sandbox.requests("PUT")) == 1


def test_worker_retries_a_transient_error_by_itself(sandbox, worker, make_package, make_integration):
    from packages_app.sandbox import Fault

    sandbox.enqueue_fault(Fault(reset=True))
    sandbox.enqueue_fault(Fault(status=503, body="<html>503</html>"))
    integration = make_integration([make_package()])
    (created,) = publishing.publications_create(integrations=[integration])
    p = wait_final(created.pk)
    assert p.status == "succeeded" and p.attempts == 3
    assert list(p.attempt_log.values_list("outcome", flat=True)) == ["transient", "transient", "succeeded"]


def test_a_large_publish_is_queued_by_a_worker_from_one_message(sandbox, worker, settings, make_package,
                                                                make_integration):
    """Beyond the first KOMBO_ENQUEUE_FAN_OUT_ABOVE, publications travel as one message of ids; the
    worker queues them (a message of several each) and sends every one."""
    settings.KOMBO_ENQUEUE_FAN_OUT_ABOVE = 3
    package = make_package()
    integrations = [make_integration([package], kombo_integration_id=f"recruitee:Fan{i}") for i in range(7)]
    created = publishing.publications_create(integrations=integrations)
    assert all(p.enqueued is True for p in created)
    # Marked as on their way at once: the sweep does not queue them a second time meanwhile.
    assert not Publication.objects.filter(pk__in=[p.pk for p in created], enqueued_at__isnull=True).exists()
    for p in created:
        assert wait_final(p.pk).status == "succeeded"
    assert sorted(r.integration_id for r in sandbox.requests("PUT")) == sorted(
        f"recruitee:Fan{i}" for i in range(7))
