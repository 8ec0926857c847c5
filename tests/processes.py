"""Real processes for the reliability tests: Celery workers (with beat) and a throwaway Redis."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Process:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, args, log_path, env=None):
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self):
        return self.log_path.read_text(errors="replace")

    def wait_output(self, text, timeout=30):
        def seen():
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited early:\n{self.output()[-3000:]}")
            return text in self.output()

        wait_for(seen, timeout, f"{text!r} in {self.log_path.name}")

    def kill(self, sig=signal.SIGKILL):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=15):
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.popen.wait(5)
        self.log.close()


def django_env(broker_url, kombo_url, var_dir, **extra):
    """The environment a worker needs to share this test's database and broker."""
    db = connection.settings_dict
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TEST_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "TEST_CELERY_BROKER_URL": broker_url,
        "KOMBO_API_URL": kombo_url,
        "APP_VAR_DIR": str(var_dir),
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_worker(env, log_path, *, concurrency=1, beat=False, name="w1"):
    args = [sys.executable, "-m", "celery", "-A", "kombo_admin", "worker", "--loglevel", "INFO",
            "--concurrency", str(concurrency), "--pool", "prefork", "--without-gossip",
            "--without-mingle", "-n", f"{name}@%h"]
    if beat:
        args += ["-B", "-s", str(Path(env["APP_VAR_DIR"]) / "celerybeat-schedule")]
    worker = Process(args, log_path, env)
    worker.wait_output("ready.", timeout=60)
    return worker


def start_redis(port, log_path):
    server = Process(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no"], log_path)
    server.wait_output("Ready to accept connections", timeout=15)
    return server


# --- RabbitMQ (the AMQP broker tests, tests/test_pacing_brokers.py) -----------------------------
TEST_AMQP_BROKER_URL = os.environ.get("TEST_AMQP_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")


def require_amqp(url=TEST_AMQP_BROKER_URL):
    """Fail (never skip) when RabbitMQ does not answer, saying how to start it."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        from packages_app.pacing import safe_url

        raise AssertionError(
            f"RabbitMQ does not answer at {safe_url(url)} ({type(exc).__name__}: {str(exc)[:200]}). "
            "Start it: rabbitmq-server -detached (install: apt-get install rabbitmq-server), "
            "or set TEST_AMQP_BROKER_URL."
        ) from None


def run_worker_until_exit(env, log_path, *, timeout=60, name="refused"):
    """Start a worker that is expected to refuse to start; wait for it to exit. Returns
    (exit status, output). A worker that is still running after `timeout` is stopped and fails."""
    args = [sys.executable, "-m", "celery", "-A", "kombo_admin", "worker", "--loglevel", "INFO",
            "--concurrency", "1", "--pool", "prefork", "--without-gossip", "--without-mingle",
            "-n", f"{name}@%h"]
    worker = Process(args, log_path, env)
    try:
        worker.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        worker.stop()
        raise AssertionError(f"the worker did not exit within {timeout} s:\n{worker.output()[-3000:]}")
    worker.log.close()
    return worker.popen.returncode, worker.output()
