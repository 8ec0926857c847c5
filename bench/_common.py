"""Shared plumbing for the benchmarks: a throwaway PostgreSQL database, Django set up against it,
a real Celery worker subprocess, catalogue factories (bulk inserts), and the printed table.

Nothing here is imported by the app or the tests. Everything stays on 127.0.0.1.
"""
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
# The brief's broker DB; BENCH_REDIS_URL overrides it when another run already uses DB 13.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
# Databases are named <prefix><script>; BENCH_DB_PREFIX keeps two runs at once (two checkouts, two
# people) from dropping each other's database.
DB_PREFIX = os.environ.get("BENCH_DB_PREFIX", "bench_kombo_")
API_KEY = "bench-key-0000000000"
PACKAGE_TYPES = ("BEHAVIORAL", "VIDEO_INTERVIEW", "SKILLS_TEST", "BACKGROUND_CHECK", "REFERENCE_CHECK")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- output ------------------------------------------------------------------------------------

def rerun_command(argv=None):
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), ROOT)
    args = " ".join(shlex.quote(a) for a in [script, *argv[1:]])
    return f"cd {ROOT} && . .venv/bin/activate && python {args}"


def print_table(headers, rows, title=None):
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    if title:
        print(title)
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)))
    print()


def _numeric(text):
    try:
        float(text.replace(",", "").rstrip("%x").split(" ")[0])
        return True
    except ValueError:
        return False


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def median(values):
    return statistics.median(values)


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def machine():
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU(s), {model}"


def header(title):
    print(f"== {title} ==")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}   machine: {machine()}   "
          f"load average at start: {loadavg()}")
    print(f"code: {code_version()}")
    print()


def code_version():
    """HEAD and the app files changed since (others edit the tree while benchmarks run)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "packages_app", "kombo_admin",
                                  "templates"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        files = [line[3:] for line in changed.stdout.splitlines()]
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"git {head or '?'}" + (f" + uncommitted changes in {', '.join(files)}" if files else " (clean)")


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# --- database and broker -----------------------------------------------------------------------

def db_url(name):
    return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def _admin_connection():
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)


def create_database(name):
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name):
    try:
        from django.db import connections

        connections.close_all()
    except Exception:
        pass
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_foreign_clients(url=REDIS_URL, *, exclude_pids=()):
    """Connections to the same Redis DB that are not ours (another test run or benchmark).
    Ours are those whose local port belongs to this process or to `exclude_pids`."""
    import redis

    client = redis.Redis.from_url(url)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    own_ports = _local_ports([os.getpid(), *exclude_pids])
    try:
        return [c for c in client.client_list()
                if int(c.get("db", -1)) == db and int(c["addr"].rsplit(":", 1)[1]) not in own_ports
                and c.get("cmd") != "client|list"]
    finally:
        client.close()


def _local_ports(pids):
    """Local TCP ports of sockets owned by `pids` (from /proc, no extra tools)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[9] in inodes:
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def claim_redis(url=REDIS_URL, *, wait=180):
    """Wait until nobody else uses the broker DB, then flush it. Flushing a DB that another run
    is using would lose its messages (and it would steal ours), so never do that."""
    deadline = time.monotonic() + wait
    announced = False
    while True:
        others = redis_foreign_clients(url)
        if not others:
            break
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{url} is in use by {len(others)} other connection(s) (another test run or benchmark); "
                "not flushing it. Rerun later, or set BENCH_REDIS_URL=redis://127.0.0.1:6379/<free db>.")
        if not announced:
            print(f"(waiting up to {wait} s: {len(others)} other connection(s) use {url})", file=sys.stderr)
            announced = True
        time.sleep(2)
    flush_redis(url)


def release_redis(url=REDIS_URL):
    """Leave the broker DB empty, unless someone else started using it meanwhile."""
    others = redis_foreign_clients(url)
    if others:
        print(f"(not flushing {url} at exit: {len(others)} other connection(s) use it now)", file=sys.stderr)
        return
    flush_redis(url)


def flush_redis(url=REDIS_URL):
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def base_env(*, db_name, broker_url, kombo_url, var_dir, **extra):
    """The environment the bench process and its workers share (see tests/processes.py)."""
    env = {
        "DJANGO_SETTINGS_MODULE": "kombo_admin.settings",
        "DJANGO_DEBUG": "true",
        "DJANGO_ALLOWED_HOSTS": "testserver,127.0.0.1",
        "DATABASE_URL": db_url(db_name),
        "CELERY_BROKER_URL": broker_url,
        "KOMBO_API_KEY": API_KEY,
        "KOMBO_API_URL": kombo_url,
        "APP_VAR_DIR": str(var_dir),
        "PYTHONUNBUFFERED": "1",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def setup_django(env, *, log_level="WARNING"):
    """Set the environment, then import Django and migrate. Call once, before any app import."""
    os.environ.update(env)
    os.environ.setdefault("LOG_LEVEL", log_level)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


class BenchRun:
    """Create the database (and a temp var dir) on enter, drop them on exit, whatever happens."""

    def __init__(self, name):
        self.db_name = f"{DB_PREFIX}{name}"
        self.tmp = tempfile.TemporaryDirectory(prefix=f"bench_kombo_{name}_")
        self.var_dir = Path(self.tmp.name)
        # Worker logs outlive the run, for a look afterwards.
        self.log_dir = Path(tempfile.gettempdir()) / "bench_kombo_logs"
        self.log_dir.mkdir(exist_ok=True)
        self.cleanups = []

    def __enter__(self):
        create_database(self.db_name)
        return self

    def on_exit(self, fn):
        self.cleanups.append(fn)
        return fn

    def start_django(self, sandbox, *, broker_url=REDIS_URL, **extra):
        """Django on this run's database against `sandbox`, with the broker DB claimed for the
        run and released after it. Returns the environment to hand to workers."""
        env = base_env(db_name=self.db_name, broker_url=broker_url, kombo_url=sandbox.url,
                       var_dir=self.var_dir, **extra)
        setup_django(env)
        claim_redis(broker_url)
        self.on_exit(lambda: release_redis(broker_url))
        return env

    def __exit__(self, *exc):
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as error:  # cleanup must not hide the real error
                print(f"(cleanup: {type(error).__name__}: {error})", file=sys.stderr)
        drop_database(self.db_name)
        self.tmp.cleanup()
        return False


# --- the sandbox as its own server process -----------------------------------------------------

class SandboxProcess:
    """`manage.py kombo_sandbox` in a child process: a server that shares no CPU time slice or GIL
    with the clients measured against it. Read back through its /_sandbox/ control endpoints."""

    def __init__(self, *, latency_ms=0.0, rate_limit=None, log_path=None):
        args = [sys.executable, "manage.py", "kombo_sandbox", "--port", "0", "--api-key", API_KEY,
                "--latency-ms", str(latency_ms), "--quiet"]
        if rate_limit:
            args += ["--rate-limit", str(rate_limit)]
        # Settings the command needs to start; it touches no database.
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "kombo_admin.settings", "DJANGO_DEBUG": "true",
               "PYTHONUNBUFFERED": "1"}
        self.log_path = Path(log_path or Path(tempfile.gettempdir()) / "bench_kombo_sandbox.log")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=open(self.log_path, "wb"), text=True, start_new_session=True)
        line = self.popen.stdout.readline()
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"sandbox did not start: {line!r}\n{self.log_path.read_text()[-2000:]}")
        self.url = line.split("listening on ", 1)[1].strip()
        self.control = self.url[: -len("/v1")] + "/_sandbox"

    def _call(self, method, path):
        import requests

        response = requests.request(method, f"{self.control}/{path}", timeout=30)
        response.raise_for_status()
        return response.json() if response.content else None

    def reset(self):
        self._call("POST", "reset")

    def requests(self, method=None):
        """Recorded requests as dicts (monotonic started_at/ended_at: one clock for the machine)."""
        return [r for r in self._call("GET", "requests") if method is None or r["method"] == method]

    def cpu_seconds(self):
        return proc_cpu_seconds(self.popen.pid)

    def stop(self):
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def max_overlap(intervals):
    """Most intervals (start, end) open at one moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


# --- worker ------------------------------------------------------------------------------------

class Worker:
    """`celery -A kombo_admin worker` in its own process group, output to a log file."""

    def __init__(self, env, log_path, *, pool="prefork", concurrency=1, name="bench", loglevel="INFO"):
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "wb")
        args = [sys.executable, "-m", "celery", "-A", "kombo_admin", "worker", "--loglevel", loglevel,
                "--pool", pool, "--concurrency", str(concurrency), "--without-gossip",
                "--without-mingle", "-n", f"{name}@%h"]
        self.popen = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=self.log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.popen.pid

    def output(self):
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()[-3000:]}")
            if " ready." in self.output():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.output()[-3000:]}")

    def cpu_seconds(self):
        """CPU seconds of the worker's main process and its live pool processes."""
        total = 0.0
        for pid in [self.pid, *self.children()]:
            try:
                total += proc_cpu_seconds(pid)
            except OSError:
                pass
        return total

    def cpu_ns(self):
        """CPU nanoseconds of the worker's main process and its live pool processes (schedstat)."""
        return sum(pids_cpu_ns([self.pid, *self.children()]).values())

    def children(self):
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def stop(self, timeout=20):
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        self.log.close()


def proc_status_kib(pid, field):
    """VmHWM / VmRSS of a process in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def proc_cpu_seconds(pid):
    """User + system CPU seconds of one process so far (its own, not its reaped children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_cpu_ns(pid):
    """CPU nanoseconds of one process's live threads so far, from /proc/<pid>/task/*/schedstat
    (the scheduler's own run time, to the nanosecond; /proc/<pid>/stat counts 10 ms clock ticks,
    too coarse for a few hundred publications split over several processes). Falls back to stat."""
    total, found = 0, False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            continue
    if not found:
        return int(proc_cpu_seconds(pid) * 1e9)
    return total


def pids_cpu_ns(pids):
    """{pid: CPU ns} for the processes in `pids` still alive."""
    out = {}
    for pid in pids:
        try:
            out[pid] = proc_cpu_ns(pid)
        except OSError:
            continue
    return out


def database_backends(db_name):
    """{backend pid: client port} of the client backends connected to `db_name` now (PostgreSQL
    runs on this machine, so a backend pid is a process we can read in /proc)."""
    with _admin_connection() as conn:
        rows = conn.execute(
            "SELECT pid, client_port FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'",
            (db_name,)).fetchall()
    return {pid: port for pid, port in rows}


def local_ports(pids):
    """Local TCP ports of the sockets `pids` hold (their database connections among them)."""
    return _local_ports(pids)


def named_processes_cpu(name):
    """CPU seconds so far of every process whose command name is `name` (e.g. "postgres":
    the server's backends; exited ones are not counted, so sample around a steady phase)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == name:
                total += proc_cpu_seconds(int(entry.name))
        except OSError:
            continue
    return total


def system_cpu():
    """(busy, total) jiffies over all CPUs, from /proc/stat; diff two samples for a busy share."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def cpu_share(before, after):
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total if total else float("nan")


# --- data --------------------------------------------------------------------------------------

def make_packages(count, *, prefix="pkg", start=0):
    from packages_app.models import AssessmentPackage

    objs = [
        AssessmentPackage(
            package_id=f"{prefix}-{i:06d}", type=PACKAGE_TYPES[i % len(PACKAGE_TYPES)],
            name=f"Package {i}", description=f"Description of assessment package number {i}.",
        )
        for i in range(start, start + count)
    ]
    AssessmentPackage.objects.bulk_create(objs, batch_size=2000)
    return list(AssessmentPackage.objects.filter(package_id__startswith=f"{prefix}-").order_by("package_id"))


def make_integrations(count, package_sets, *, prefix="Bench", start=0):
    """`count` integrations; integration i offers `package_sets(i)` (a list of AssessmentPackage)."""
    from packages_app.models import Integration

    objs = [Integration(kombo_integration_id=f"recruitee:{prefix}{i:06d}", name=f"{prefix} customer {i:06d}")
            for i in range(start, start + count)]
    Integration.objects.bulk_create(objs, batch_size=2000)
    created = list(Integration.objects.filter(kombo_integration_id__in=[o.kombo_integration_id for o in objs])
                   .order_by("kombo_integration_id"))
    through = Integration.packages.through
    links = [through(integration_id=integration.pk, assessmentpackage_id=p.pk)
             for n, integration in enumerate(created, start) for p in package_sets(n)]
    through.objects.bulk_create(links, batch_size=5000)
    return created


def analyze():
    """Refresh the planner's statistics after bulk inserts, as autovacuum would in a while: on
    fresh tables PostgreSQL picks plans that are far slower than the steady state's."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def make_superuser(username="bench-admin"):
    from django.contrib.auth.models import User

    return User.objects.create_superuser(username, f"{username}@example.invalid", "bench-password-not-secret")


class settings_override:
    """Change Django settings for a block in this process (django.test's override_settings
    without its signals: the app reads these at call time)."""

    def __init__(self, **values):
        self.values = values

    def __enter__(self):
        from django.conf import settings

        self.saved = {name: getattr(settings, name) for name in self.values}
        for name, value in self.values.items():
            setattr(settings, name, value)

    def __exit__(self, *exc):
        from django.conf import settings

        for name, value in self.saved.items():
            setattr(settings, name, value)


def wait_all_final(pks, *, timeout, interval=0.05):
    """Poll the database every `interval` s until every publication in `pks` is final.
    Returns the monotonic time at which that was seen."""
    from packages_app.models import Publication

    deadline = time.monotonic() + timeout
    total = len(pks)
    # By pk range when the ids are contiguous (one bulk insert): a cheap poll, not a 500-id IN list.
    rows = (Publication.objects.filter(pk__gte=min(pks), pk__lte=max(pks))
            if max(pks) - min(pks) + 1 == total else Publication.objects.filter(pk__in=pks))
    while True:
        done = rows.filter(status__in=Publication.FINAL_STATUSES).count()
        now = time.monotonic()
        if done == total:
            return now
        if now > deadline:
            raise RuntimeError(f"only {done}/{total} publications final after {timeout} s")
        time.sleep(interval)


def emit_json(payload):
    """The last stdout line of a child run: what its parent reads."""
    print("BENCH-JSON " + json.dumps(payload), flush=True)


def run_child(argv, *, timeout):
    """Run this script again as a child; echo its output; return its BENCH-JSON payload."""
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    payload = None
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            payload = json.loads(line[len("BENCH-JSON "):])
    if proc.returncode != 0 or payload is None:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"child {' '.join(argv)} failed with exit code {proc.returncode}")
    return payload


def bare_loop(url, items, threads):
    """PUT every (integration_id, body) once with `threads` threads, one requests.Session each,
    the headers the app's KomboClient sends. Returns (seconds, statuses, cpu seconds)."""
    import requests

    lock = threading.Lock()
    queue = iter(items)
    statuses = []

    def run():
        session = requests.Session()
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                break
            integration_id, body = item
            response = session.put(
                f"{url}/assessment/packages", data=body, timeout=(5.0, 30.0),
                headers={"Authorization": f"Bearer {API_KEY}", "X-Integration-Id": integration_id,
                         "Content-Type": "application/json", "Accept": "application/json"},
            )
            response.json()  # the app decodes every answer too
            with lock:
                statuses.append(response.status_code)
        session.close()

    pool = [threading.Thread(target=run) for _ in range(threads)]
    cpu0, started = time.process_time(), time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.monotonic() - started, statuses, time.process_time() - cpu0
