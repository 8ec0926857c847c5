"""Publishing with real processes: several worker processes, a broker that goes away, a worker
killed in the middle of a PUT, a message delivered twice. DESIGN.md section 4, for real."""
import threading

import pytest
from django.db import connection, transaction
from django.urls import reverse

from kombo_admin.celery import app
from packages_app import publishing
from packages_app.models import AssessmentPackage, Integration, Publication
from packages_app.sandbox import Fault

from .processes import django_env, free_port, start_redis, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

BROKER = app.conf.broker_url  # the test broker (Redis in CI); the broker-down test uses its own


def purge(broker_url):
    with app.connection_for_write(broker_url) as conn:
        conn.default_channel.queue_declare(queue="celery", durable=True, auto_delete=False)
        conn.default_channel.queue_purge("celery")


@pytest.fixture
def use_broker(settings):
    """Point this process's Celery app at `url` (and back afterwards)."""
    original = app.conf.broker_url

    def switch(url):
        # Drop the cached connection and producer pools so the next publish uses the new URL.
        app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = url
        app._pool = None
        app.amqp._producer_pool = None
        settings.CELERY_BROKER_URL = url

    yield switch
    switch(original)




def final(pk):
    p = Publication.objects.get(pk=pk)
    return p if p.is_final else None


def wait_final(pk, timeout=60):
    wait_for(lambda: final(pk), timeout, f"publication {pk} to end")
    return Publication.objects.get(pk=pk)


def test_twenty_concurrent_publications_one_in_flight_and_the_newest_wins(sandbox, use_broker, workers, tmp_path,
                                                                         make_package, make_integration):
    use_broker(BROKER)
    purge(BROKER)
    sandbox.latency = 0.15  # long enough for overlaps to show if the lease did not hold
    package = make_package("1001", name="v0")
    integration = make_integration([package], kombo_integration_id="recruitee:Race1")
    workers(django_env(BROKER, sandbox.url, tmp_path), concurrency=4)

    barrier = threading.Barrier(20)
    errors = []

    def publish(n):
        try:
            barrier.wait()
            with transaction.atomic():
                Integration.objects.select_for_update().get(pk=integration.pk)
                AssessmentPackage.objects.filter(pk=package.pk).update(name=f"v{n}")
                publishing.publications_create(integrations=[integration])
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(1, 21)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = list(Publication.objects.order_by("pk").values_list("pk", flat=True))
    assert len(ids) == 20
    for pk in ids:
        wait_final(pk)

    newest = Publication.objects.get(pk=ids[-1])
    statuses = Publication.objects.values_list("status", flat=True)
    assert newest.status == "succeeded"
    assert set(statuses) <= {"succeeded", "superseded"}
    assert sandbox.max_in_flight("recruitee:Race1") == 1
    puts = sandbox.requests("PUT", "recruitee:Race1")
    assert puts[-1].body == newest.body.encode()
    assert sandbox.packages("recruitee:Race1") == newest.body_dict()["packages"]
    # Requests never overlap in time, and none is sent after the newest one.
    for before, after in zip(puts, puts[1:]):
        assert before.ended_at <= after.started_at
    sent_ids = Publication.objects.filter(status="succeeded").count()
    assert sent_ids == len(puts)


def test_broker_down_when_staff_publish_then_sent_when_it_is_back(sandbox, use_broker, workers, tmp_path, client,
                                                                 publisher, make_package, make_integration):
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    use_broker(broker)  # nothing listens there yet
    integration = make_integration([make_package("1001")], kombo_integration_id="recruitee:Down1")

    client.force_login(publisher)
    page = client.get(reverse("admin:packages_app_integration_publish"), {"ids": integration.pk})
    sha = page.context["previews"][0].plan.sha256
    response = client.post(reverse("admin:packages_app_integration_publish"),
                           {"post": "yes", "ids": str(integration.pk), f"sha256-{integration.pk}": sha}, follow=True)
    texts = [str(m) for m in response.context["messages"]]
    assert "Queued 1 publication to Kombo." in texts
    assert any("saved and will be sent automatically as soon as it is back" in t for t in texts)
    publication = Publication.objects.get()
    assert publication.status == "queued" and publication.enqueued_at is None

    # The broker comes back; a worker with beat is running. Nobody publishes again.
    redis = start_redis(port, tmp_path / "redis.log")
    try:
        workers(django_env(broker, sandbox.url, tmp_path, KOMBO_SWEEP_INTERVAL_SECONDS=1,
                           KOMBO_STUCK_QUEUED_SECONDS=3), beat=True)
        p = wait_final(publication.pk, timeout=60)
        assert p.status == "succeeded" and p.attempts == 1
        assert len(sandbox.requests("PUT", "recruitee:Down1")) == 1
    finally:
        redis.stop()


def test_worker_killed_mid_put_then_a_new_worker_finishes_it(sandbox, use_broker, workers, tmp_path,
                                                           make_package, make_integration):
    use_broker(BROKER)
    purge(BROKER)
    integration = make_integration([make_package("1001")], kombo_integration_id="recruitee:Kill1")
    env = django_env(BROKER, sandbox.url, tmp_path, KOMBO_SWEEP_INTERVAL_SECONDS=1, KOMBO_STUCK_QUEUED_SECONDS=3)
    sandbox.enqueue_fault(Fault(status=200, delay=1.5))  # a slow first answer: the worker dies meanwhile
    first = workers(env)
    (publication,) = publishing.publications_create(integrations=[integration])
    wait_for(lambda: sandbox.requests("PUT"), 20, "the PUT to arrive")
    first.kill()  # SIGKILL to the worker and its pool processes, mid-request
    first.popen.wait(10)
    assert Publication.objects.get(pk=publication.pk).status == "sending"

    workers(env, beat=True, name="w2")
    # The dead worker's lease must expire first (the task's hard time limit + 10 s; ~32 s here).
    p = wait_final(publication.pk, timeout=120)
    assert p.status == "succeeded"
    assert list(p.attempt_log.values_list("outcome", flat=True)) == ["lost", "succeeded"]
    bodies = {r.body for r in sandbox.requests("PUT", "recruitee:Kill1")}
    assert bodies == {p.body.encode()}


def test_the_same_task_delivered_twice_sends_once(sandbox, use_broker, workers, tmp_path, make_package, make_integration):
    use_broker(BROKER)
    purge(BROKER)
    sandbox.latency = 0.3
    integration = make_integration([make_package("1001")], kombo_integration_id="recruitee:Twice1")
    (publication,) = publishing.publications_create(integrations=[integration])
    publishing.publication_enqueue(publication_id=publication.pk)  # a second delivery of the same message
    worker = workers(django_env(BROKER, sandbox.url, tmp_path), concurrency=2)
    wait_final(publication.pk)
    # Both deliveries end: the second found the publication in flight under its run's lease and
    # left it to that run (or, arriving later, found it final). Neither sent it again.
    wait_for(lambda: worker.output().count("] succeeded in ") >= 2, 20, "both deliveries to finish")
    assert worker.output().count(": 'succeeded'") >= 1
    p = Publication.objects.get(pk=publication.pk)
    assert p.status == "succeeded" and p.attempts == 1
    (request,) = sandbox.requests("PUT", "recruitee:Twice1")
    assert request.body == p.body.encode()
