"""The embedded defaults scripts/run.sh uses (SQLite, the filesystem broker) under the load of a
bulk publish: a worker with two processes and the publishing command write the same database
file at once, and none of them may fail on a lock."""
import os
import subprocess
import sys

import pytest

from .processes import ROOT, Process

pytestmark = pytest.mark.worker


def embedded_env(tmp_path, sandbox, settings):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "KOMBO_", "DATABASE_", "CELERY_", "TEST_", "APP_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "kombo_admin.settings",
        "DJANGO_DEBUG": "true",
        "APP_VAR_DIR": str(tmp_path / "var"),  # SQLite file and broker folders, as run.sh has them
        "KOMBO_API_URL": sandbox.url,
        "KOMBO_API_KEY": settings.KOMBO_API_KEY,
        "KOMBO_RATE_LIMIT_PER_SECOND": "0",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def manage(env, *args, timeout=120):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_bulk_publish_on_sqlite_and_the_filesystem_broker_never_fails_on_a_lock(tmp_path, sandbox, settings):
    env = embedded_env(tmp_path, sandbox, settings)
    assert manage(env, "migrate", "--noinput", "-v0").returncode == 0
    created = manage(env, "shell", "-c", """
from packages_app.models import AssessmentPackage, Integration
packages = [AssessmentPackage.objects.create(package_id=f"e-{i}", type="SKILLS_TEST", name=f"E {i}",
                                             description="d") for i in range(4)]
for i in range(40):
    Integration.objects.create(kombo_integration_id=f"recruitee:Emb{i:03d}", name=f"E {i}").packages.set(
        packages[: i % 4 + 1])
""")
    assert created.returncode == 0, created.stderr
    worker = Process([sys.executable, "-m", "celery", "-A", "kombo_admin", "worker", "--loglevel", "INFO",
                      "--concurrency", "2", "--pool", "prefork", "--without-gossip", "--without-mingle",
                      "-n", "embedded@%h"], tmp_path / "worker.log", env)
    try:
        worker.wait_output("ready.", timeout=60)
        for _ in range(2):  # the second time every integration has a newer snapshot to send
            published = manage(env, "publish_packages", "--all-out-of-sync", "--wait", "--timeout", "90")
            assert published.returncode == 0, published.stdout[-2000:] + published.stderr[-2000:]
            assert published.stdout.count(": succeeded") == 40
            created = manage(env, "shell", "-c", "from packages_app.models import AssessmentPackage as P; "
                                                 "P.objects.filter(package_id='e-0').update(name='E 0 again')")
            assert created.returncode == 0, created.stderr
    finally:
        worker.stop()
    log = worker.output()
    assert "database is locked" not in log and "raised unexpected" not in log, log[-3000:]
    assert len(sandbox.requests("PUT")) == 80
