"""Pause and cancel in the engine: what is at rest ends at once, what is in flight ends as
cancelled when its request returns (Kombo's answer kept), and a paused integration sends nothing
more, whichever way it was paused. Runs on PostgreSQL and SQLite (scripts/test.sh)."""
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from packages_app import publishing, selectors
from packages_app.kombo import ErrorKind, KomboError, KomboSuccess
from packages_app.models import Integration, Publication, SyncStatus
from packages_app.publishing import taking, transitions
from packages_app.publishing.leases import leases_release

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return User.objects.create_user("ops", password="pw-for-tests-123", is_staff=True)


@pytest.fixture
def three(make_package, make_integration, no_broker):
    """Three publications of three integrations: queued, retrying (due later), waiting."""
    integrations = [make_integration([make_package()]) for _ in range(3)]
    queued, retrying, waiting = publishing.publications_create(integrations=integrations)
    later = timezone.now() + timedelta(hours=1)
    Publication.objects.filter(pk=retrying.pk).update(status="retrying", next_attempt_at=later, attempts=1)
    Publication.objects.filter(pk=waiting.pk).update(status="waiting", next_attempt_at=later, attempts=1)
    return [queued.pk, retrying.pk, waiting.pk]


def test_cancel_ends_what_is_at_rest_with_who_and_why(three, staff, sandbox):
    ended, marked = publishing.publications_cancel(publication_ids=three, cancelled_by=staff, reason="Wrong catalogue.")
    assert (ended, marked) == (3, 0)
    for p in Publication.objects.filter(pk__in=three):
        assert (p.status, p.cancelled_by, p.cancel_reason) == ("cancelled", staff, "Wrong catalogue.")
        assert p.finished_at and p.next_attempt_at is None and p.failure_reason == "Cancelled: Wrong catalogue."
    # A message still on its way finds them final and sends nothing.
    assert [r.status for r in publishing.publications_execute(publication_ids=three)] == ["cancelled"] * 3
    assert sandbox.requests() == []
    # Cancelling again changes nothing.
    assert publishing.publications_cancel(publication_ids=three, cancelled_by=staff) == (0, 0)


def _in_flight(pk):
    took = taking.take([pk], token="r" * 32, lease_seconds=60)
    (taken,) = took.taken
    return taken


def test_one_in_flight_ends_as_cancelled_after_its_request_keeping_kombos_answer(three, staff):
    taken = _in_flight(three[0])
    assert publishing.publications_cancel(publication_ids=[three[0]], cancelled_by=staff, reason="Stop") == (0, 1)
    p = Publication.objects.get(pk=three[0])
    assert p.status == "sending" and p.cancel_requested_at and p.cancelled_by == staff
    success = KomboSuccess(http_status=200, warnings=["w"], body_text='{"status":"success"}', limit_headers={},
                           elapsed=0.2)
    assert transitions.record_success(taken, success, timezone.now(), token="r" * 32) == "cancelled"
    p.refresh_from_db()
    assert (p.status, p.http_status, p.warnings, p.response_body) == ("cancelled", 200, ["w"], '{"status":"success"}')
    assert "its answer is kept" in p.failure_reason and p.finished_at
    assert p.attempt_log.get().outcome == "succeeded"


def test_an_error_answer_after_a_cancel_ends_cancelled_and_is_not_retried(three, staff, no_broker):
    taken = _in_flight(three[0])
    publishing.publications_cancel(publication_ids=[three[0]], cancelled_by=staff, reason="Stop")
    status, wait = transitions.record_error(
        taken, KomboError(ErrorKind.TRANSIENT, "Kombo answered HTTP 503.", http_status=503), token="r" * 32)
    assert (status, wait) == ("cancelled", None)
    p = Publication.objects.get(pk=three[0])
    assert (p.status, p.http_status, p.next_attempt_at) == ("cancelled", 503, None)


def test_pausing_cancels_what_is_on_its_way_and_the_one_in_flight_after_it_returns(three, staff, make_integration,
                                                                                 make_package):
    taken = _in_flight(three[0])
    done = Publication.objects.create(integration_id=taken.integration_id, body="{}", body_sha256="x",
                                      status="succeeded")
    integration_ids = list(Publication.objects.filter(pk__in=three).values_list("integration_id", flat=True))
    assert publishing.integrations_pause(integration_ids=integration_ids, paused_by=staff) == (3, 2, 1)
    statuses = dict(Publication.objects.values_list("pk", "status"))
    assert [statuses[pk] for pk in three] == ["sending", "cancelled", "cancelled"]
    assert statuses[done.pk] == "succeeded"  # the ledger is kept as it was
    transitions.record_error(taken, KomboError(ErrorKind.TRANSIENT, "timeout"), token="r" * 32)
    leases_release([taken.integration_id], token="r" * 32)
    assert Publication.objects.get(pk=three[0]).status == "cancelled"
    assert Publication.objects.get(pk=three[1]).cancel_reason == "The integration was paused."


def test_an_integration_paused_behind_the_engines_back_sends_nothing_more(three, sandbox):
    """Paused by a plain UPDATE (a script, the shell): the take still refuses to send."""
    Integration.objects.update(is_active=False)
    Publication.objects.filter(pk__in=three[1:]).update(next_attempt_at=timezone.now())  # due now
    results = publishing.publications_execute(publication_ids=three)
    assert [r.status for r in results] == ["cancelled"] * 3 and sandbox.requests() == []
    assert set(Publication.objects.values_list("cancel_reason", flat=True)) == {"The integration was paused."}


def test_a_cancelled_publication_reads_as_a_publish_that_did_not_complete(three, staff):
    publishing.publications_cancel(publication_ids=three[:1], cancelled_by=staff, reason="Stop")
    integration = Integration.objects.get(publications__pk=three[0])
    assert integration.sync_status == SyncStatus.FAILED
    assert integration.sync_status_label == "Last publish did not complete"
    assert integration in selectors.out_of_sync_integrations()


def test_a_busy_lease_reserves_no_pacing_slot(three, settings, sandbox):
    """A slot is reserved only for a request about to be sent: a publication whose integration is
    busy (or that is final, or not due) takes nothing from the shared schedule."""
    import redis

    from packages_app import pacing

    if not settings.KOMBO_PACING_REDIS_URL:
        pytest.fail("KOMBO_PACING_REDIS_URL is empty in the tests: the pacing tests need Redis.")
    settings.KOMBO_RATE_LIMIT_PER_SECOND = 5
    client = redis.Redis.from_url(settings.KOMBO_PACING_REDIS_URL)
    client.delete(pacing.SLOT_KEY)
    try:
        busy = Publication.objects.get(pk=three[0]).integration_id
        Integration.objects.filter(pk=busy).update(publish_lease_token="x" * 32,
                                                   publish_lease_until=timezone.now() + timedelta(minutes=5))
        results = publishing.publications_execute(publication_ids=three)  # busy, not due, not due
        assert [r.status for r in results] == ["queued", "retrying", "waiting"]
        assert client.get(pacing.SLOT_KEY) is None and sandbox.requests() == []
    finally:
        client.delete(pacing.SLOT_KEY)


def test_a_list_kombo_accepted_while_cancelled_counts_as_what_kombo_holds(three, staff):
    """Cancelled in flight after Kombo answered 2xx: its list is at Kombo, so previews compare with
    it (a later removal is shown and confirmed), though the publish reads as not completed."""
    taken = _in_flight(three[0])
    publishing.publications_cancel(publication_ids=[three[0]], cancelled_by=staff, reason="Stop")
    success = KomboSuccess(http_status=200, warnings=[], body_text="{}", limit_headers={}, elapsed=0.1)
    transitions.record_success(taken, success, timezone.now(), token="r" * 32)
    p = Publication.objects.get(pk=three[0])
    integration = Integration.objects.with_sync_state().get(pk=p.integration_id)
    assert integration.last_succeeded_sha256 == p.body_sha256
    (preview,) = selectors.integrations_preview(Integration.objects.filter(pk=p.integration_id))
    assert preview.previously_published and not preview.diff.has_changes
