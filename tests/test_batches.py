"""Publications queued together and executed by one process: the one path of the engine taken
set-wise (a batch costs the statements of one publication), what a batch does when it runs out of
time, meets a 429, a busy lease or a publication that changed since it was read.
"""
import os
import signal
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from packages_app import publishing
from packages_app.models import Integration, Publication, PublicationAttempt
from packages_app.publishing import execution, taking, transitions
from packages_app.publishing.leases import leases_acquire
from packages_app.sandbox import Fault

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    """(ids, countdown) of every publications_enqueue call, instead of a broker."""
    calls = []

    def enqueue(*, publication_ids, countdown=None, followed_by=0):
        calls.append((list(publication_ids), countdown))
        return list(publication_ids)

    monkeypatch.setattr(publishing.queueing, "publications_enqueue", enqueue)
    return calls


@pytest.fixture
def batch(make_package, make_integration, queued):
    """Five integrations with two packages each, their publications created (queued)."""
    packages = [make_package(f"p{i}") for i in range(3)]
    integrations = [make_integration(packages[i % 2:][:2], kombo_integration_id=f"recruitee:Batch{i}")
                    for i in range(5)]
    publications = publishing.publications_create(integrations=integrations)
    queued.clear()
    return [p.pk for p in publications]


def statuses(pks):
    rows = dict(Publication.objects.filter(pk__in=pks).values_list("pk", "status"))
    return [rows[pk] for pk in pks]


def leases_held():
    return Integration.objects.exclude(publish_lease_token="").count()


@contextmanager
def another_transaction():
    """A second connection to the test database, inside a transaction: another worker, say, holding
    row locks while the code under test runs."""
    import psycopg

    db = connection.settings_dict
    other = psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"])
    try:
        with other.transaction():
            yield other
    finally:
        other.close()


def _statements(ids):
    with CaptureQueriesContext(connection) as ctx:
        results = publishing.publications_execute(publication_ids=ids)
    # Savepoints stand for the transactions' BEGIN and COMMIT here (a test runs inside one).
    return results, [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]


def test_a_batch_is_taken_set_wise_and_each_answer_recorded_in_two_statements(sandbox, batch, make_integration,
                                                                               make_package):
    (single,) = publishing.publications_create(integrations=[make_integration([make_package()])])
    _, one = _statements([single.pk])
    results, five = _statements(batch)
    assert [r.status for r in results] == ["succeeded"] * 5
    # The take and the lease release cost the same for five as for one; each answer is then
    # recorded as it comes: its publication and its attempt, one UPDATE each.
    assert len(one) <= 8, [q[:60] for q in one]
    assert len(five) == len(one) + 2 * 4, [q[:60] for q in five]
    recording = [q for q in five if q.startswith("UPDATE")]
    assert sum('"packages_app_publicationattempt"' in q for q in recording) == 5
    assert statuses(batch) == ["succeeded"] * 5 and leases_held() == 0
    for pk in batch:
        publication = Publication.objects.get(pk=pk)
        (attempt,) = publication.attempt_log.all()
        assert publication.attempts == 1 and publication.http_status == 200 and publication.finished_at
        assert publication.rate_limit_headers and publication.response_body.startswith("{")
        assert (attempt.outcome, attempt.http_status, attempt.finished_at is not None) == ("succeeded", 200, True)
    # Each integration got exactly its own snapshot, once.
    puts = [r for r in sandbox.requests("PUT") if r.integration_id.startswith("recruitee:Batch")]
    assert sorted(r.integration_id for r in puts) == [f"recruitee:Batch{i}" for i in range(5)]
    for r in puts:
        assert r.body == Publication.objects.get(integration__kombo_integration_id=r.integration_id).body.encode()


def test_an_error_in_the_middle_is_recorded_and_the_rest_still_sent(sandbox, batch, queued):
    sandbox.enqueue_fault(Fault(status=404, integration_id="recruitee:Batch2", body={
        "status": "error", "error": {"code": "PLATFORM.INTEGRATION_NOT_FOUND", "title": "t", "message": "m"}}))
    sandbox.enqueue_fault(Fault(status=503, integration_id="recruitee:Batch3", body="<html>busy</html>"))
    results = publishing.publications_execute(publication_ids=batch)
    assert [r.status for r in results] == ["succeeded", "succeeded", "failed", "retrying", "succeeded"]
    failed = Publication.objects.get(pk=batch[2])
    assert failed.error_code == "PLATFORM.INTEGRATION_NOT_FOUND" and failed.attempt_log.get().outcome == "permanent"
    retrying = Publication.objects.get(pk=batch[3])
    assert retrying.next_attempt_at and queued == [([batch[3]], pytest.approx(results[3].retry_in))]
    assert leases_held() == 0 and PublicationAttempt.objects.filter(finished_at__isnull=True).count() == 0


def test_a_429_stops_the_batch_and_hands_the_rest_back_untouched(sandbox, batch, queued):
    sandbox.enqueue_fault(Fault(status=429, integration_id="recruitee:Batch1", headers={"Retry-After": "1"}, body={
        "status": "error", "error": {"code": "PLATFORM.RATE_LIMIT_EXCEEDED", "title": "t", "message": "slow down"}}))
    results = publishing.publications_execute(publication_ids=batch)
    assert [r.status for r in results] == ["succeeded", "retrying", "queued", "queued", "queued"]
    assert len(sandbox.requests("PUT")) == 2
    assert statuses(batch) == ["succeeded", "retrying", "queued", "queued", "queued"]
    for pk in batch[2:]:
        handed_back = Publication.objects.get(pk=pk)
        # As before the take: no attempt counted, none recorded, no start time, no lease.
        assert (handed_back.attempts, handed_back.started_at, handed_back.attempt_log.count()) == (0, None, 0)
    assert leases_held() == 0
    # Queued again, to wait as long as the one Kombo refused.
    assert queued == [([batch[1]], pytest.approx(results[1].retry_in)), (batch[2:], pytest.approx(results[1].retry_in))]


def test_a_429_stops_a_batch_on_sqlite_too(sandbox, batch, queued, monkeypatch):
    """The engine has one path: what stops a batch on PostgreSQL stops it on every database
    (the SQLite end-to-end run is tests/test_embedded.py)."""
    monkeypatch.setattr(connection.features, "has_select_for_update_skip_locked", False)
    sandbox.enqueue_fault(Fault(status=429, integration_id="recruitee:Batch0", headers={"Retry-After": "1"}, body={
        "status": "error", "error": {"code": "PLATFORM.RATE_LIMIT_EXCEEDED", "title": "t", "message": "slow down"}}))
    results = publishing.publications_execute(publication_ids=batch)
    assert [r.status for r in results] == ["retrying"] + ["queued"] * 4 and len(sandbox.requests("PUT")) == 1


def test_a_batch_out_of_time_starts_no_more_attempts(sandbox, batch, queued):
    # The budget leaves room for the take on a loaded machine (it ran out before the first PUT
    # once, at 80 ms), and not for five PUTs of 200 ms.
    sandbox.latency = 0.2
    results = publishing.publications_execute(publication_ids=batch, time_budget=0.3)
    sent = [r for r in results if r.status == "succeeded"]
    assert 1 <= len(sent) < 5 and len(sandbox.requests("PUT")) == len(sent)
    rest = batch[len(sent):]
    assert statuses(rest) == ["queued"] * len(rest) and (rest, None) in queued
    assert PublicationAttempt.objects.filter(publication_id__in=rest).count() == 0 and leases_held() == 0


def _failing_send(monkeypatch, on_call, error):
    send = execution._send
    calls = []

    def send_then_fail(taken):
        calls.append(taken.publication_id)
        if len(calls) == on_call:
            raise error
        return send(taken)

    monkeypatch.setattr(execution, "_send", send_then_fail)


def test_a_bug_outside_the_request_still_records_the_successes_before_it(sandbox, batch, queued, monkeypatch):
    _failing_send(monkeypatch, 3, RuntimeError("boom"))
    with pytest.raises(RuntimeError):
        publishing.publications_execute(publication_ids=batch)
    assert statuses(batch[:2]) == ["succeeded", "succeeded"]
    # The one in hand stays sending; the others are handed back; no lease is left behind.
    assert statuses(batch[2:]) == ["sending", "queued", "queued"] and leases_held() == 0
    assert (batch[3:], None) in queued
    # What the batch had not handled is queued again, not at once (the failure may repeat).
    assert ([batch[2]], execution.RETRY_AFTER_BATCH_FAILURE_SECONDS) in queued
    # Its next run counts the attempt as lost and sends again.
    queued.clear()
    assert publishing.publication_execute(publication_id=batch[2]).status == "succeeded"
    outcomes = list(Publication.objects.get(pk=batch[2]).attempt_log.values_list("outcome", flat=True))
    assert outcomes == ["lost", "succeeded"]


def test_a_busy_lease_and_a_newer_publication_inside_a_batch(sandbox, batch, queued):
    busy = Publication.objects.get(pk=batch[0]).integration
    Integration.objects.filter(pk=busy.pk).update(publish_lease_token="x" * 32,
                                                   publish_lease_until="2999-01-01T00:00:00Z")
    publishing.publications_create(integrations=[Publication.objects.get(pk=batch[4]).integration])
    queued.clear()
    results = publishing.publications_execute(publication_ids=batch)
    assert [r.status for r in results] == ["queued", "succeeded", "succeeded", "succeeded", "superseded"]
    assert results[0].retry_in and ([batch[0]], pytest.approx(results[0].retry_in)) in queued
    assert len(sandbox.requests("PUT")) == 3
    assert Integration.objects.exclude(publish_lease_token="").get().pk == busy.pk  # only the foreign lease


def test_a_slot_is_reserved_only_for_a_request_about_to_be_sent(sandbox, batch, queued, settings):
    """A batch sends at the schedule's pace; when the schedule is far ahead (Kombo said 429 to
    someone) nothing is taken from it and the whole batch waits for a later message."""
    import redis

    from packages_app import pacing

    settings.KOMBO_RATE_LIMIT_PER_SECOND = 20
    settings.KOMBO_PACING_MAX_WAIT_SECONDS = 0.5
    client = redis.Redis.from_url(settings.KOMBO_PACING_REDIS_URL)
    client.delete(pacing.SLOT_KEY)
    try:
        results = publishing.publications_execute(publication_ids=batch[:3])
        starts = sorted(r.started_at for r in sandbox.requests("PUT"))
        assert [r.status for r in results] == ["succeeded"] * 3
        assert starts[-1] - starts[0] >= 0.09  # 0.05 s apart
        pacing.pacer().hold(3)
        slot_before = float(client.get(pacing.SLOT_KEY))
        results = publishing.publications_execute(publication_ids=batch[3:])
        assert [r.status for r in results] == ["paced", "paced"] and len(sandbox.requests("PUT")) == 3
        assert float(client.get(pacing.SLOT_KEY)) == slot_before  # a refusal takes no slot
        (ids, countdown), = queued
        assert ids == batch[3:] and 2 <= countdown <= 4.1
        assert statuses(batch[3:]) == ["queued", "queued"] and PublicationAttempt.objects.filter(
            publication_id__in=batch[3:]).count() == 0
    finally:
        client.delete(pacing.SLOT_KEY)


def test_duplicate_ids_run_once(sandbox, batch):
    results = publishing.publications_execute(publication_ids=[batch[0], batch[0], batch[1]])
    assert [r.status for r in results] == ["succeeded", "succeeded"] and len(sandbox.requests("PUT")) == 2


def test_take_reports_each_publication_and_hand_back_restores_it(batch):
    Publication.objects.filter(pk=batch[1]).update(status="retrying", next_attempt_at="2000-01-01T00:00:00Z",
                                                   started_at="2000-01-01T00:00:00Z", attempts=1)
    took = taking.take(batch[:2] + [10**9], token="t" * 32, lease_seconds=60)
    assert took.untaken == {10**9: taking.MISSING}
    first, second = took.taken
    assert second.previous[0] == "retrying" and second.number == 2
    assert statuses(batch[:2]) == ["sending", "sending"] and leases_held() == 2
    transitions.hand_back(took.taken, token="t" * 32)
    from packages_app.publishing.leases import leases_release
    leases_release([first.integration_id, second.integration_id], token="t" * 32)
    first, second = (Publication.objects.get(pk=pk) for pk in batch[:2])
    assert (first.status, first.attempts, first.started_at) == ("queued", 0, None)
    assert (second.status, second.attempts, str(second.next_attempt_at.year)) == ("retrying", 1, "2000")
    assert PublicationAttempt.objects.count() == 0 and leases_held() == 0


def test_publications_are_queued_in_messages_that_shrink_towards_the_end(monkeypatch, settings):
    from kombo_admin.celery import app

    sent = []

    def send_task(name, *, args, **kwargs):
        sent.append(args[0] if name == publishing.queueing.EXECUTE_MANY_TASK else args)

    monkeypatch.setattr(app, "send_task", send_task)
    settings.KOMBO_PUBLISH_BATCH_SIZE = 10
    ids = list(range(1, 201))
    assert publishing.publications_enqueue(publication_ids=ids) == ids
    assert [pk for message in sent for pk in message] == ids  # every id once, in order
    sizes = [len(message) for message in sent]
    assert sizes[0] == 10 and max(sizes) == 10 and sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == 1  # the last ones alone (as the single-publication task)
    # A short publish is spread over several processes rather than sent by one.
    assert publishing.message_sizes(12) == [2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert publishing.message_sizes(12, largest=1) == [1] * 12
    # Messages with more queued right behind them do not shrink: the end of the whole list does.
    assert publishing.message_sizes(30, followed_by=300) == [10, 10, 10]


@pytest.mark.django_db(transaction=True)
def test_a_large_publish_queues_its_head_at_once_and_hands_the_rest_to_a_worker(monkeypatch, settings,
                                                                                  make_integration):
    """Workers start on the first KOMBO_ENQUEUE_FAN_OUT_ABOVE at once; the rest travel as one
    message, sent after them, so that the queue keeps the publish's order."""
    from kombo_admin.celery import app

    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, *, args, **kwargs: sent.append((name, args[0])))
    settings.KOMBO_PUBLISH_BATCH_SIZE, settings.KOMBO_ENQUEUE_FAN_OUT_ABOVE = 10, 30
    integrations = [make_integration(kombo_integration_id=f"recruitee:Head{i}") for i in range(100)]
    ids = [p.pk for p in publishing.publications_create(integrations=integrations)]
    queueing = publishing.queueing
    assert sent == [(queueing.EXECUTE_MANY_TASK, ids[0:10]), (queueing.EXECUTE_MANY_TASK, ids[10:20]),
                    (queueing.EXECUTE_MANY_TASK, ids[20:30]), (queueing.ENQUEUE_TASK, ids[30:])]
    assert not Publication.objects.filter(pk__in=ids, enqueued_at__isnull=True).exists()


# --- the worker's database connection ------------------------------------------------------------

@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_a_task_keeps_a_fresh_database_connection_and_replaces_an_old_one(monkeypatch):
    """Celery's Django fix-up would close the connection around every task (CELERY_DB_REUSE_MAX
    turns that off); our signal handler applies CONN_MAX_AGE instead, as Django does per request."""
    from types import SimpleNamespace

    from kombo_admin.celery import app, close_old_database_connections

    task = SimpleNamespace(request=SimpleNamespace(is_eager=False))
    assert app.conf.db_reuse_max
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)  # the default (tests use 0)
    connection.close()
    connection.ensure_connection()
    kept = connection.connection
    close_old_database_connections(sender=task)
    assert connection.connection is kept
    connection.close_at = 0  # older than CONN_MAX_AGE
    close_old_database_connections(sender=task)
    assert connection.connection is None
    # An eager task runs inside its caller's transaction: its connection is left alone.
    connection.ensure_connection()
    connection.close_at = 0
    close_old_database_connections(sender=SimpleNamespace(request=SimpleNamespace(is_eager=True)))
    assert connection.connection is not None


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_take_counts_rows_another_transaction_holds_as_busy_and_never_waits(batch):
    """SKIP LOCKED: a take never waits for a lock, so it cannot deadlock with the enqueuer, a
    cancel or another worker; what it could not lock is busy (looked at again shortly)."""
    with another_transaction() as other:
        integration_id = Publication.objects.get(pk=batch[0]).integration_id
        other.execute("SELECT 1 FROM packages_app_integration WHERE id = %s FOR UPDATE", [integration_id])
        other.execute("SELECT 1 FROM packages_app_publication WHERE id = %s FOR UPDATE", [batch[1]])
        started = time.monotonic()
        took = taking.take(batch[:3], token="t" * 32, lease_seconds=60)
        assert time.monotonic() - started < 1
    assert took.untaken == {batch[0]: taking.BUSY, batch[1]: taking.BUSY}  # its integration / its row held
    assert [t.publication_id for t in took.taken] == [batch[2]]
    assert statuses(batch[:3]) == ["queued", "queued", "sending"]


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_taking_over_a_lease_never_waits_for_the_rows_it_revokes(batch):
    """Taking over an expired lease clears the old run's token from the integration's rows left
    sending; if another transaction holds one of them (another take reading it), the lease is left
    for later (busy) rather than waited for: two takes revoking each other's rows would deadlock."""
    took = taking.take(batch[:2], token="a" * 32, lease_seconds=60)  # the run that will lose its leases
    integration_ids = [t.integration_id for t in took.taken]
    Integration.objects.filter(pk__in=integration_ids).update(publish_lease_until=timezone.now() - timedelta(seconds=1))
    with another_transaction() as other:
        other.execute("SELECT 1 FROM packages_app_publication WHERE id = %s FOR UPDATE", [batch[0]])
        with transaction.atomic():
            assert leases_acquire(integration_ids, token="b" * 32, seconds=60) == set()
    assert Integration.objects.filter(publish_lease_token="a" * 32).count() == 2  # still the old run's, expired
    with transaction.atomic():
        assert leases_acquire(integration_ids, token="b" * 32, seconds=60) == set(integration_ids)
    assert set(Publication.objects.filter(pk__in=batch[:2]).values_list("status", "lease_token")) == {("sending", "")}


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_a_revoked_row_whose_integration_is_locked_is_busy_not_in_flight(batch):
    """A row left sending whose token was revoked (leases.py) is nobody's request in flight: when
    its integration cannot be leased right now it is looked at again shortly, like any busy row."""
    Publication.objects.filter(pk=batch[0]).update(status="sending", attempts=1, lease_token="")
    integration_id = Publication.objects.get(pk=batch[0]).integration_id
    with another_transaction() as other:
        other.execute("SELECT 1 FROM packages_app_integration WHERE id = %s FOR UPDATE", [integration_id])
        took = taking.take(batch[:1], token="t" * 32, lease_seconds=60)
    assert took.untaken == {batch[0]: taking.BUSY} and took.taken == []


# --- guards ---------------------------------------------------------------------------------------

def test_a_429_with_a_long_retry_after_queues_the_rest_within_the_countdown_cap(sandbox, batch, queued):
    sandbox.enqueue_fault(Fault(status=429, integration_id="recruitee:Batch0", headers={"Retry-After": "3000"},
                                body={"status": "error", "error": {"code": "PLATFORM.RATE_LIMIT_EXCEEDED",
                                                                   "title": "t", "message": "m"}}))
    publishing.publications_execute(publication_ids=batch)
    (rest_ids, countdown), = [(ids, c) for ids, c in queued if ids == batch[1:]]
    assert countdown == publishing.queueing.MAX_COUNTDOWN_SECONDS  # the broker's visibility timeout stays out of reach
    assert statuses(batch[1:]) == ["queued"] * 4 and leases_held() == 0


def test_recording_and_handing_back_touch_only_rows_this_run_still_holds(batch, caplog):
    from packages_app.kombo import ErrorKind, KomboError, KomboSuccess

    took = taking.take(batch[:3], token="a" * 32, lease_seconds=60)
    # Our leases expired (a pool that does not enforce the time limit, say) and another run took
    # the integrations over, the only way it can: through leases_acquire.
    integration_ids = [t.integration_id for t in took.taken]
    Integration.objects.filter(pk__in=integration_ids).update(publish_lease_until=timezone.now() - timedelta(seconds=1))
    assert leases_acquire(integration_ids, token="b" * 32, seconds=60) == set(integration_ids)
    first, second, third = took.taken
    success = KomboSuccess(http_status=200, warnings=[], body_text="{}", limit_headers={}, elapsed=0.1)
    with caplog.at_level("INFO", logger="packages_app.publishing"):
        transitions.record_success(first, success, first.started_at, token="a" * 32)
        transitions.record_error(second, KomboError(ErrorKind.TRANSIENT, "503", http_status=503), token="a" * 32)
        transitions.hand_back([third], token="a" * 32)
    assert statuses(batch[:3]) == ["sending"] * 3
    assert PublicationAttempt.objects.filter(finished_at__isnull=True).count() == 3
    assert Integration.objects.filter(publish_lease_token="b" * 32).count() == 3
    assert "or this run no longer holds its lease" in caplog.text  # a write that matched nothing says why


def test_a_long_error_code_and_title_are_cut_to_their_columns(sandbox, batch, queued):
    """PostgreSQL refuses a value longer than its column (SQLite stores it): a write refused after
    the request was sent would leave the row sending."""
    sandbox.enqueue_fault(Fault(status=400, integration_id="recruitee:Batch0", body={"status": "error", "error": {
        "code": "PLATFORM." + "X" * 300, "title": "T" * 900, "message": "m", "log_url": "https://x/" + "l" * 2000}}))
    results = publishing.publications_execute(publication_ids=batch[:1])
    assert results[0].status == "failed"
    publication = Publication.objects.get(pk=batch[0])
    assert len(publication.error_code) == 100 and len(publication.error_title) == 500
    assert publication.error_log_url == ""  # a cut link would lead nowhere
    assert len(publication.attempt_log.get().error_code) == 100


def test_a_batch_whose_budget_is_spent_reserves_no_slot_and_takes_nothing(sandbox, batch, queued, settings):
    import redis

    from packages_app import pacing

    settings.KOMBO_RATE_LIMIT_PER_SECOND = 5
    client = redis.Redis.from_url(settings.KOMBO_PACING_REDIS_URL)
    client.delete(pacing.SLOT_KEY)
    results = publishing.publications_execute(publication_ids=batch, time_budget=-1)
    assert [r.status for r in results] == ["queued"] * 5 and queued == [(batch, None)]
    assert client.get(pacing.SLOT_KEY) is None and sandbox.requests("PUT") == []
    assert statuses(batch) == ["queued"] * 5 and PublicationAttempt.objects.count() == 0


# --- the sender thread: an answer is recorded while the next request is on its way ---------------

def test_each_answer_is_recorded_while_the_next_request_is_on_its_way(sandbox, batch, monkeypatch):
    client = publishing.kombo_client()
    set_packages, record_success = client.set_packages, transitions.record_success
    second_on_its_way, first_recorded, seen = threading.Event(), threading.Event(), {}

    def put(**kwargs):
        if kwargs["integration_id"] == "recruitee:Batch1":
            second_on_its_way.set()
            seen["second waited for the first record"] = first_recorded.wait(timeout=10)
        return set_packages(**kwargs)

    def record(taken, *args, **kwargs):
        if taken.publication_id == batch[0]:
            seen["second on its way while the first was recorded"] = second_on_its_way.wait(timeout=10)
        status = record_success(taken, *args, **kwargs)
        if taken.publication_id == batch[0]:
            first_recorded.set()
        return status

    monkeypatch.setattr(client, "set_packages", put)
    monkeypatch.setattr(transitions, "record_success", record)
    results = publishing.publications_execute(publication_ids=batch)
    assert [r.status for r in results] == ["succeeded"] * 5
    assert seen == {"second on its way while the first was recorded": True, "second waited for the first record": True}
    # Still one request at a time from this process.
    puts = sorted((r.started_at, r.ended_at) for r in sandbox.requests("PUT"))
    assert len(puts) == 5 and all(later[0] >= earlier[1] for earlier, later in zip(puts, puts[1:]))


def test_the_task_time_limit_in_the_middle_records_what_was_sent_and_hands_back_the_rest(sandbox, batch, queued,
                                                                                       monkeypatch):
    """Celery's soft time limit is a signal, raised in the task's thread, which is waiting for the
    sender's answer: the batch ends there, the attempt counts as cut short, the rest is handed
    back; the leases are released only once that request has ended (one per integration)."""
    client = publishing.kombo_client()
    set_packages, answer_of = client.set_packages, execution._answer_of
    in_the_wait, request_ended, seen_at_release = threading.Event(), [], []

    class AnnouncedWait:
        """The second request, whose result() says when the task's thread is waiting in it."""

        def __init__(self, request):
            self.request = request

        def result(self, timeout=None):
            in_the_wait.set()
            return self.request.result(timeout)

        def done(self):
            return self.request.done()

    def put(**kwargs):
        if kwargs["integration_id"] == "recruitee:Batch1":
            assert in_the_wait.wait(timeout=10)
            os.kill(os.getpid(), signal.SIGALRM)  # the soft time limit, delivered to the task's thread
            time.sleep(0.5)  # the request goes on after the limit (longer than SIGNAL_CHECK_SECONDS)
            request_ended.append(True)
        return set_packages(**kwargs)

    waits = []

    def wait_for_answer(request):
        waits.append(request)
        return answer_of(AnnouncedWait(request) if len(waits) == 2 else request)

    def soft_time_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    release = execution.leases_release

    def leases_release(*args, **kwargs):
        seen_at_release.append(bool(request_ended))
        return release(*args, **kwargs)

    monkeypatch.setattr(client, "set_packages", put)
    monkeypatch.setattr(execution, "_answer_of", wait_for_answer)
    monkeypatch.setattr(execution, "leases_release", leases_release)
    previous = signal.signal(signal.SIGALRM, soft_time_limit)
    try:
        results = publishing.publications_execute(publication_ids=batch)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert [r.status for r in results] == ["succeeded", "retrying", "queued", "queued", "queued"]
    assert Publication.objects.get(pk=batch[1]).attempt_log.get().message == "The attempt ran past the task's time limit."
    assert statuses(batch[2:]) == ["queued"] * 3 and leases_held() == 0
    assert seen_at_release and all(seen_at_release)  # no lease freed while the cut-short request went on
    assert publishing.publication_execute(publication_id=batch[2]).status == "succeeded"  # the sender is free


def test_a_failure_while_recording_waits_for_the_request_on_its_way_before_freeing_the_leases(
        sandbox, batch, queued, monkeypatch):
    """One request per integration in flight: the run's leases are released only once no request
    of it is on its way, whatever ended the batch."""
    client = publishing.kombo_client()
    set_packages, ended, seen_at_release = client.set_packages, [], []

    def put(**kwargs):
        answer = set_packages(**kwargs)
        if kwargs["integration_id"] == "recruitee:Batch1":
            time.sleep(0.2)  # still on its way while the first answer fails to be recorded
            ended.append(True)
        return answer

    def record_fails(*args, **kwargs):
        raise RuntimeError("the database went away")

    release = execution.leases_release

    def leases_release(*args, **kwargs):
        seen_at_release.append(bool(ended))
        return release(*args, **kwargs)

    monkeypatch.setattr(client, "set_packages", put)
    monkeypatch.setattr(transitions, "record_success", record_fails)
    monkeypatch.setattr(execution, "leases_release", leases_release)
    with pytest.raises(RuntimeError):
        publishing.publications_execute(publication_ids=batch)
    assert seen_at_release == [True] and leases_held() == 0
    # The two answered but not recorded stay sending (queued again; their next run sends again).
    assert statuses(batch) == ["sending", "sending", "queued", "queued", "queued"]
    assert ([batch[0], batch[1]], execution.RETRY_AFTER_BATCH_FAILURE_SECONDS) in queued
