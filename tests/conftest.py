"""Shared fixtures: a Kombo sandbox on 127.0.0.1, catalogue factories, staff users."""
import pytest
from django.contrib.auth.models import Permission, User

from packages_app import publishing
from packages_app.models import AssessmentPackage, Integration, PackageType


@pytest.fixture(autouse=True)
def fresh_kombo_client():
    """Each test builds its client from its own settings (key, URL, timeouts)."""
    publishing.client.forget_client()
    yield
    publishing.client.forget_client()


@pytest.fixture
def no_broker(monkeypatch, settings):
    """Record what would be queued instead of queuing it (the worker tests queue for real)."""
    queued = []
    def enqueue(*, publication_ids, countdown=None, followed_by=0):
        queued.extend(publication_ids)
        return list(publication_ids)

    monkeypatch.setattr(publishing.queueing, "publications_enqueue", enqueue)
    # A large publish is queued directly too (not handed to a worker in one message), and recorded.
    settings.KOMBO_ENQUEUE_FAN_OUT_ABOVE = 10**9
    return queued


@pytest.fixture
def sandbox(settings):
    from packages_app.sandbox import KomboSandbox

    server = KomboSandbox(api_key=settings.KOMBO_API_KEY).start()
    settings.KOMBO_API_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def workers(tmp_path):
    """Start real Celery workers (tests/processes.py); all are stopped after the test.
    `workers.solo(env, name)` starts one with the solo pool, which enforces no time limit."""
    import signal
    import sys

    from django.db import connection

    from .processes import Process, start_worker

    started = []

    def start(env, **kwargs):
        worker = start_worker(env, tmp_path / f"worker{len(started)}.log", **kwargs)
        started.append(worker)
        return worker

    def solo(env, name):
        worker = Process([sys.executable, "-m", "celery", "-A", "kombo_admin", "worker", "--loglevel", "INFO",
                          "--pool", "solo", "--without-gossip", "--without-mingle", "-n", f"{name}@%h"],
                         tmp_path / f"{name}.log", env)
        worker.wait_output("ready.", timeout=60)
        started.append(worker)
        return worker

    start.solo = solo
    yield start
    for worker in started:
        worker.kill(signal.SIGCONT)  # a test may have frozen one
        worker.stop()
    # Workers hold database connections; make sure none survive into the next test's flush.
    connection.close()


@pytest.fixture
def make_package(db):
    counter = iter(range(1, 100000))

    def make(package_id=None, **fields):
        n = next(counter)
        fields.setdefault("type", PackageType.SKILLS_TEST)
        fields.setdefault("name", f"Package {n}")
        fields.setdefault("description", f"Description of package {n}")
        return AssessmentPackage.objects.create(package_id=package_id or f"pkg-{n:04d}", **fields)

    return make


@pytest.fixture
def make_integration(db):
    counter = iter(range(1, 100000))

    def make(packages=(), **fields):
        n = next(counter)
        fields.setdefault("kombo_integration_id", f"recruitee:Customer{n:04d}")
        fields.setdefault("name", f"Customer {n}")
        integration = Integration.objects.create(**fields)
        integration.packages.set(packages)
        return integration

    return make


def _staff(username, *perms):
    user = User.objects.create_user(username, password="pw-for-tests-123", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


EDIT_PERMS = (
    "view_integration", "change_integration", "add_integration",
    "view_assessmentpackage", "change_assessmentpackage", "add_assessmentpackage",
    "view_publication",
)


@pytest.fixture
def editor(db):
    """Staff who edit the catalogue and integrations but may not publish."""
    return _staff("editor", *EDIT_PERMS)


@pytest.fixture
def publisher(db):
    return _staff("publisher", *EDIT_PERMS, "publish_integration")


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root", password="pw-for-tests-123")
