"""Pacing shared by all workers: evenly spaced slots, a pause for everyone after a 429, and
publications that stay inside Kombo's rate limit with several worker processes."""
import pytest
import redis as redis_lib

from kombo_admin.celery import app
from packages_app import pacing, publishing
from packages_app.models import Publication

from .processes import django_env, start_worker, wait_for


def test_local_pacer_spaces_requests_evenly():
    pacer = pacing.LocalPacer()
    slots = [pacer.reserve(0.1)[0] for _ in range(5)]
    waits = [s.wait for s in slots]
    assert all(s.granted for s in slots) and waits[0] == pytest.approx(0, abs=0.01)
    assert [round(b - a, 2) for a, b in zip(waits, waits[1:])] == [0.1, 0.1, 0.1, 0.1]


def test_a_slot_too_far_away_is_not_taken_so_refusals_never_push_the_schedule():
    pacer = pacing.LocalPacer()
    pacer.hold(60)
    refused = [pacer.reserve(0.1, max_wait=5)[0] for _ in range(100)]
    assert not any(s.granted for s in refused)
    assert refused[-1].wait == pytest.approx(60, abs=0.5)  # still 60 s away, not 70


@pytest.fixture
def redis_pacer(settings):
    url = settings.CELERY_BROKER_URL
    redis_lib.Redis.from_url(url).delete(pacing.SLOT_KEY)
    yield pacing.RedisPacer(url)
    redis_lib.Redis.from_url(url).delete(pacing.SLOT_KEY)


def test_redis_pacer_is_one_schedule_for_all_and_holds_after_a_429(redis_pacer, settings):
    other_worker = pacing.RedisPacer(settings.CELERY_BROKER_URL)
    waits = [redis_pacer.reserve(0.2)[0].wait, other_worker.reserve(0.2)[0].wait, redis_pacer.reserve(0.2)[0].wait]
    assert waits[0] == pytest.approx(0, abs=0.05)
    assert waits[1] == pytest.approx(0.2, abs=0.05) and waits[2] == pytest.approx(0.4, abs=0.05)
    redis_pacer.hold(3)
    assert other_worker.reserve(0.2)[0].wait == pytest.approx(3, abs=0.1)
    # The next free slot is 3.2 s away: refused with max_wait=1, and refusing does not push it on.
    refused = other_worker.reserve(0.2, max_wait=1)[0]
    assert not refused.granted and refused.wait == pytest.approx(3.2, abs=0.1)
    assert other_worker.reserve(0.2, max_wait=1)[0].wait == pytest.approx(3.2, abs=0.1)


@pytest.mark.parametrize("make", [pacing.LocalPacer, "redis"])
def test_a_batch_takes_consecutive_slots_as_far_as_the_longest_wait_allows(make, request):
    pacer = request.getfixturevalue("redis_pacer") if make == "redis" else make()
    slots = pacer.reserve(0.5, 2.2, 10)
    assert [round(s.wait, 1) for s in slots] == [0.0, 0.5, 1.0, 1.5, 2.0] and all(s.granted for s in slots)
    # The schedule moved on by the five slots taken, not by the ten asked for.
    (after,) = pacer.reserve(0.5, 0.1, 1)
    assert not after.granted and after.wait == pytest.approx(2.5, abs=0.1)


def test_pacing_off_means_no_wait(settings):
    settings.KOMBO_RATE_LIMIT_PER_SECOND = 0
    assert pacing.reserve_slot() == pacing.Slot(0.0, True)
    assert pacing.reserve_slots(3) == [pacing.Slot(0.0, True)] * 3


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_workers_stay_inside_kombos_rate_limit(sandbox, tmp_path, settings, make_package, make_integration):
    """40 publications, 4 worker processes, Kombo allowing 10 requests a second."""
    sandbox.rate_limit_per_second = 10
    url = settings.CELERY_BROKER_URL
    redis_lib.Redis.from_url(url).delete(pacing.SLOT_KEY)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_declare(queue="celery", durable=True, auto_delete=False)
        conn.default_channel.queue_purge("celery")
    package = make_package()
    integrations = [make_integration([package]) for _ in range(40)]
    env = django_env(url, sandbox.url, tmp_path, TEST_KOMBO_RATE_LIMIT_PER_SECOND=10)
    worker = start_worker(env, tmp_path / "worker.log", concurrency=4)
    try:
        publishing.publications_create(integrations=integrations)
        wait_for(lambda: Publication.objects.filter(status__in=Publication.FINAL_STATUSES).count() == 40,
                 60, "40 publications to end")
    finally:
        worker.stop()
    assert Publication.objects.filter(status="succeeded").count() == 40
    statuses = [r.status for r in sandbox.requests("PUT")]
    assert statuses.count(200) == 40
    assert statuses.count(429) <= 4, statuses  # the benchmark measures the exact share
