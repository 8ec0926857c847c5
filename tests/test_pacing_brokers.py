"""Pacing with a broker that is not Redis (RabbitMQ): the workers share the schedule in the Redis
at KOMBO_PACING_REDIS_URL, and a worker without it refuses to start instead of pacing itself
(N worker processes would send N times the rate). With real worker processes on RabbitMQ.

RabbitMQ must answer at TEST_AMQP_BROKER_URL (default amqp://guest:guest@127.0.0.1:5672//); these
tests fail when it does not, they never skip.
"""
import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import redis as redis_lib

from kombo_admin.celery import app
from packages_app import pacing, publishing
from packages_app.models import Publication

from .processes import (ROOT, TEST_AMQP_BROKER_URL, django_env, require_amqp, run_worker_until_exit,
                        wait_for)

AMQP = TEST_AMQP_BROKER_URL
RATE = 4              # requests per second, for all the workers together
PUBLICATIONS = 20
TOLERANCE = 0.1       # seconds: a request may arrive this much early against the schedule


def _pacing_redis_url():
    """Database 14 (no other test uses it) of the tests' Redis."""
    broker = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
    if not broker.startswith(("redis://", "rediss://")):
        broker = "redis://127.0.0.1:6379/15"
    return urlsplit(broker)._replace(path="/14", query="").geturl()


PACING_REDIS = _pacing_redis_url()


@pytest.fixture
def amqp(settings):
    """RabbitMQ, required; this process publishes to it (and back to the test broker afterwards)."""
    require_amqp(AMQP)
    original = app.conf.broker_url

    def switch(url):
        app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = url
        app._pool = None
        app.amqp._producer_pool = None
        settings.CELERY_BROKER_URL = url

    switch(AMQP)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_declare(queue="celery", durable=True, auto_delete=False)
        conn.default_channel.queue_purge("celery")
    yield AMQP
    app.pool.force_close_all()
    switch(original)




def spacing_violations(times, rate, tolerance):
    """Windows of consecutive requests that span less than (n - 1) / rate - tolerance."""
    bad = []
    for n in range(2, len(times) + 1):
        for i in range(len(times) - n + 1):
            span = times[i + n - 1] - times[i]
            if span < (n - 1) / rate - tolerance:
                bad.append((n, i, round(span, 3)))
    return bad


def test_spacing_violations_finds_a_burst_and_accepts_an_even_schedule():
    assert spacing_violations([0.0, 0.25, 0.5, 0.75, 1.0], 4, 0.1) == []
    assert spacing_violations([0.0, 0.2, 0.45, 0.7], 4, 0.1) == []  # 50 ms early: within tolerance
    assert (2, 1, 0.01) in spacing_violations([0.0, 0.25, 0.26, 0.75], 4, 0.1)
    # Every pair 0.16 s apart passes alone; three pairs together (0.48 s for 0.75) do not.
    assert (4, 0, 0.48) in spacing_violations([0.0, 0.16, 0.32, 0.48], 4, 0.1)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_two_workers_on_rabbitmq_share_one_pacing_schedule_in_redis(amqp, sandbox, workers, tmp_path, settings,
                                                                     make_package, make_integration):
    """Two worker processes (two pool processes each) on RabbitMQ, 4 requests/s for all of them:
    the requests the sandbox receives are never closer together than the one schedule allows."""
    pacing_redis = redis_lib.Redis.from_url(PACING_REDIS)
    pacing_redis.delete(pacing.SLOT_KEY)
    settings.KOMBO_PUBLISH_BATCH_SIZE = 2  # many small messages, so all four processes take part
    package = make_package()
    integrations = [make_integration([package]) for _ in range(PUBLICATIONS)]
    env = django_env(amqp, sandbox.url, tmp_path, DJANGO_DEBUG="false", TEST_KOMBO_RATE_LIMIT_PER_SECOND=RATE,
                     KOMBO_PACING_REDIS_URL=PACING_REDIS, KOMBO_PUBLISH_BATCH_SIZE=2)
    first = workers(env, concurrency=2, name="pacing-a")
    second = workers(env, concurrency=2, name="pacing-b")

    publishing.publications_create(integrations=integrations)
    wait_for(lambda: Publication.objects.filter(status__in=Publication.FINAL_STATUSES).count() == PUBLICATIONS,
             90, f"{PUBLICATIONS} publications to end")

    assert Publication.objects.filter(status="succeeded").count() == PUBLICATIONS
    requests = sandbox.requests()
    assert [r.method for r in requests] == ["PUT"] * PUBLICATIONS
    assert all(r.status == 200 for r in requests)
    # Both worker processes sent some of them, and the schedule they shared is in PACING_REDIS.
    for worker in (first, second):
        assert "succeeded in" in worker.output(), worker.output()[-3000:]
    assert pacing_redis.get(pacing.SLOT_KEY) is not None

    times = sorted(r.started_at for r in requests)
    span = times[-1] - times[0]
    combined = (len(times) - 1) / span
    densest = max((4 / (times[i + 4] - times[i]) for i in range(len(times) - 4)))
    print(f"\n{len(times)} requests in {span:.2f} s: {combined:.2f} requests/s combined "
          f"(limit {RATE}/s); densest 5 in a row: {densest:.2f}/s; "
          f"smallest gap {min(b - a for a, b in zip(times, times[1:])):.3f} s")
    assert spacing_violations(times, RATE, TOLERANCE) == []
    assert combined <= RATE * 1.01
    pacing_redis.delete(pacing.SLOT_KEY)


def refused_env(tmp_path, broker_url, **extra):
    """Pacing on (5/s), no KOMBO_PACING_REDIS_URL, DJANGO_DEBUG off unless `extra` says so."""
    extra = {"DJANGO_DEBUG": "false", "TEST_KOMBO_RATE_LIMIT_PER_SECOND": 5, "KOMBO_PACING_REDIS_URL": "", **extra}
    return django_env(broker_url, "http://127.0.0.1:9/v1", tmp_path, **extra)


@pytest.mark.worker
@pytest.mark.parametrize("broker_url", [AMQP, "amqp://kombo:s3cret-Pa55word@127.0.0.1:5672/kombo"],
                         ids=["test-broker", "password-in-url"])
def test_a_worker_on_rabbitmq_without_pacing_redis_refuses_to_start_in_one_line(broker_url, tmp_path):
    require_amqp(AMQP)
    status, output = run_worker_until_exit(refused_env(tmp_path, broker_url), tmp_path / "worker.log")
    assert status != 0, output
    lines = [line for line in output.splitlines() if "KOMBO_PACING_REDIS_URL" in line]
    assert len(lines) == 1, output
    (line,) = lines
    assert line.startswith("ERROR: KOMBO_PACING_REDIS_URL is not set:"), line
    assert "KOMBO_RATE_LIMIT_PER_SECOND=5 " in line and "KOMBO_RATE_LIMIT_PER_SECOND=0" in line
    masked = urlsplit(broker_url)
    assert f"CELERY_BROKER_URL=amqp://{masked.username}:***@127.0.0.1:5672/" in line
    assert f":{masked.password}@" not in output and "s3cret" not in output
    assert "Traceback" not in output and "ready." not in output


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_in_debug_a_worker_on_rabbitmq_without_pacing_redis_paces_itself_with_a_warning(amqp, workers, tmp_path):
    env = refused_env(tmp_path, amqp, DJANGO_DEBUG="true")
    worker = workers(env)  # waits for "ready."
    assert "each worker process paces itself" in worker.output()


def run_python(code, **env):
    """`code` in a fresh process on the test settings, with `env` on top; its stdout."""
    full = {k: v for k, v in os.environ.items() if k not in ("KOMBO_PACING_REDIS_URL", "DJANGO_DEBUG")}
    full.update({"DJANGO_SETTINGS_MODULE": "tests.settings", **env})
    done = subprocess.run([sys.executable, *code], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_web_and_manage_py_keep_working_on_rabbitmq_without_pacing_redis():
    """Only the worker checks: the web process and manage.py never send to Kombo."""
    env = {"TEST_CELERY_BROKER_URL": AMQP, "TEST_KOMBO_RATE_LIMIT_PER_SECOND": "5"}
    run_python(["manage.py", "check"], **env)
    out = run_python(["-c", "import django.core.wsgi; from django.conf import settings; "
                            "django.core.wsgi.get_wsgi_application(); print(repr(settings.KOMBO_PACING_REDIS_URL))"],
                     **env)
    assert out.strip() == "''"


@pytest.mark.parametrize("broker_url, pacing_env, expected", [
    ("redis://:pw@127.0.0.1:6379/15", None, "redis://:pw@127.0.0.1:6379/15"),  # Redis broker: its URL
    ("amqp://guest:guest@127.0.0.1:5672//", None, ""),
    ("amqp://guest:guest@127.0.0.1:5672//", "redis://127.0.0.1:6379/14", "redis://127.0.0.1:6379/14"),
])
def test_the_pacing_redis_defaults_to_a_redis_broker_only(broker_url, pacing_env, expected):
    env = {"TEST_CELERY_BROKER_URL": broker_url}
    if pacing_env:
        env["KOMBO_PACING_REDIS_URL"] = pacing_env
    out = run_python(["-c", "import django; django.setup(); from django.conf import settings; "
                            "print(settings.KOMBO_PACING_REDIS_URL)"], **env)
    assert out.strip() == expected


def test_the_refusal_names_the_setting_and_masks_the_password(settings):
    settings.DEBUG = False
    settings.KOMBO_PACING_REDIS_URL = ""
    settings.KOMBO_RATE_LIMIT_PER_SECOND = 5
    problem = pacing.unshared_pacing_problem("amqp://kombo:hunter2@mq.internal:5672/prod")
    assert problem.startswith("KOMBO_PACING_REDIS_URL is not set: with CELERY_BROKER_URL="
                              "amqp://kombo:***@mq.internal:5672/prod and KOMBO_RATE_LIMIT_PER_SECOND=5 ")
    assert "hunter2" not in problem and "\n" not in problem
    settings.DEBUG = True
    assert pacing.unshared_pacing_problem("amqp://mq") is None  # development: each process paces itself
    settings.DEBUG = False
    settings.KOMBO_RATE_LIMIT_PER_SECOND = 0
    assert pacing.unshared_pacing_problem("amqp://mq") is None  # pacing off
    settings.KOMBO_RATE_LIMIT_PER_SECOND = 5
    settings.KOMBO_PACING_REDIS_URL = "redis://127.0.0.1:6379/14"
    assert pacing.unshared_pacing_problem("amqp://mq") is None
    assert pacing.safe_url("redis://:secret@h:6379/1") == "redis://:***@h:6379/1"
    assert pacing.safe_url("filesystem://") == "filesystem://"
