"""Crashes and lost leases with real processes: a worker SIGKILLed mid-PUT is replaced within the
lease's expiry plus one sweep, and a run that lost its lease while its request hung cannot write
the late answer (DESIGN.md section 4, invariants 3 and 8)."""
import signal
import time

import pytest

from kombo_admin.celery import app
from packages_app import publishing
from packages_app.models import Publication
from packages_app.sandbox import Fault

from .processes import django_env, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

BROKER = app.conf.broker_url
SWEEP_SECONDS = 1
# Short timeouts make a short lease (the task's hard time limit + 10 s, here 6 + 10 + 10 = 26 s);
# KOMBO_STUCK_QUEUED_SECONDS keeps its default (900 s): recovery must not depend on it.
SHORT = dict(KOMBO_CONNECT_TIMEOUT=1, KOMBO_READ_TIMEOUT=3, KOMBO_PACING_MAX_WAIT_SECONDS=1,
             KOMBO_TASK_MARGIN_SECONDS=1, KOMBO_SWEEP_INTERVAL_SECONDS=SWEEP_SECONDS,
             KOMBO_STUCK_QUEUED_SECONDS=900)
LEASE_SECONDS = (1 + 3 + 1 + 1) + 10 + 10




def purge():
    with app.connection_for_write(BROKER) as conn:
        conn.default_channel.queue_declare(queue="celery", durable=True, auto_delete=False)
        conn.default_channel.queue_purge("celery")


def test_a_worker_killed_mid_put_is_replaced_within_the_lease_and_one_sweep(sandbox, workers, tmp_path,
                                                                            make_package, make_integration):
    purge()
    integration = make_integration([make_package("1001")], kombo_integration_id="recruitee:Killed1")
    env = django_env(BROKER, sandbox.url, tmp_path, **SHORT)
    sandbox.enqueue_fault(Fault(status=200, delay=2))  # a slow first answer: the worker dies meanwhile
    first = workers(env)
    (publication,) = publishing.publications_create(integrations=[integration])
    wait_for(lambda: sandbox.requests("PUT"), 20, "the PUT to arrive")
    first.kill()  # SIGKILL to the whole process group (the worker and its pool), mid-request
    killed_at = time.monotonic()
    first.popen.wait(10)
    assert Publication.objects.get(pk=publication.pk).status == "sending"

    workers(env, beat=True, name="w2")
    p = Publication.objects.get(pk=publication.pk)
    wait_for(lambda: len(sandbox.requests("PUT", "recruitee:Killed1")) == 2, LEASE_SECONDS + 30, "the PUT again")
    back_after = time.monotonic() - killed_at
    p = Publication.objects.get(pk=publication.pk)
    wait_for(lambda: Publication.objects.get(pk=publication.pk).is_final, 20, "the publication to end")
    p = Publication.objects.get(pk=publication.pk)
    assert p.status == "succeeded"
    assert list(p.attempt_log.values_list("outcome", flat=True)) == ["lost", "succeeded"]
    # Sent again once the lease had expired, by the next sweep: not after the 900 s stuck-queue
    # delay, nor the broker's visibility timeout (an hour).
    assert back_after <= LEASE_SECONDS + 2 * SWEEP_SECONDS + 8, back_after
    assert {r.body for r in sandbox.requests("PUT", "recruitee:Killed1")} == {p.body.encode()}


def test_a_run_that_lost_its_lease_cannot_write_its_late_answer(sandbox, workers, tmp_path,
                                                                make_package, make_integration):
    """Worker A's request hangs longer than its lease (A is frozen: a VM pause, a stop-the-world;
    its solo pool enforces no time limit). Worker B takes over and succeeds. Then A's answer, a
    503, arrives: the row must stay as B left it and nothing more may be sent."""
    purge()
    integration = make_integration([make_package("1001")], kombo_integration_id="recruitee:Late1")
    env = django_env(BROKER, sandbox.url, tmp_path, **SHORT)
    sandbox.enqueue_fault(Fault(status=503, delay=1, body={"status": "error", "error": {
        "code": "REMOTE.SERVICE_UNAVAILABLE", "title": "t", "message": "the ATS is down"}}))
    frozen = workers.solo(env, "frozen")
    (publication,) = publishing.publications_create(integrations=[integration])
    wait_for(lambda: sandbox.requests("PUT"), 20, "the first PUT to arrive")
    frozen.kill(signal.SIGSTOP)
    workers(env, beat=True, name="w2")
    p = None

    def finished():
        nonlocal p
        p = Publication.objects.get(pk=publication.pk)
        return p.is_final

    wait_for(finished, LEASE_SECONDS + 40, "the second worker to take over and finish")
    assert p.status == "succeeded" and p.attempts == 2
    before = Publication.objects.values().get(pk=publication.pk)

    frozen.kill(signal.SIGCONT)  # the first answer (503) reaches the run that lost its lease
    frozen.wait_output("or this run no longer holds its lease", timeout=30)
    time.sleep(2)  # room for anything it might wrongly queue
    assert Publication.objects.values().get(pk=publication.pk) == before
    assert len(sandbox.requests("PUT", "recruitee:Late1")) == 2
