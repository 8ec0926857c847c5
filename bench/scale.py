"""The admin at the users' scale (issue 11 item 4): server time of the pages staff open every day,
the publish confirmation and its confirm for all 5,000 integrations, and publishing them through
real workers against a bare loop, on the `seed_demo` dataset in PostgreSQL.

    python bench/scale.py [--db NAME] [--skip-publish] [--latency-ms MS] [--concurrency N]
                          [--requests N] [--keep-publications]

Runs against an existing database (default `kombo_seed`: 5,000 integrations, 500 packages with 50
offered per integration, 1,000,000 publications) that it never creates, flushes, migrates or drops.
It runs `ANALYZE` first. What it adds there is taken out again: the publications its confirming
POSTs and its publish create are deleted by id when they are measured (--keep-publications keeps
those of the publish to the sandbox), and so are its login session and django-axes' log of its
logins. It adds one superuser,
`bench-scale-admin`, with no usable password, and reuses it on later runs.

The web process is gunicorn as the Procfile starts it (`gunicorn kombo_admin.wsgi`, one sync
worker; --timeout 120 so a slow page is measured rather than killed at 30 s) with production
settings (DJANGO_DEBUG=false, collectstatic into a temp STATIC_ROOT, persistent database
connections) except the three HTTPS-only switches (SSL redirect, secure cookies), since it serves
plain HTTP on 127.0.0.1. The client is `requests`, logged in as the superuser (a session made with
Django's force_login). SERVER time is gunicorn's own request time (`%(D)s` in its access log: from
the parsed request to the response written); the client's wall time is shown next to it. Each page
gets one warm-up request, then `--requests` (5) timed ones, one at a time.

The publish flow is driven as a browser drives it: GET the integrations list, POST its form with
the action `publish_selected`, every row checkbox of the page ticked and `select_across=1` (the
"Select all 5,000" link), follow the redirect to the confirmation page, then POST that page's form:
its hidden fields, "publish anyway" ticked (so that all active integrations are published, in sync
or not) and the removals box ticked if the page asks for it. The broker is a Redis DB of its own
(DB 10, BENCH_SCALE_REDIS_URL overrides it) with no worker, so nothing is sent; after each POST its
publications are counted, then deleted.

The publish: KOMBO_RATE_LIMIT_PER_SECOND=0, a worker `--pool prefork --concurrency N` (default 16;
ready and warmed up outside the clock, as throughput.py does), the clock from before
`publications_create(<all active integrations>)` to every publication final; against a bare loop of
N threads with one requests.Session each, PUTting the same bodies with the same headers to the same
sandbox (own process, `--latency-ms`, default 200: a real Kombo call reaches the customer's ATS
and is slow, not instant; 16 requests in flight keep a run near a minute), before and after the
product run.

Last, the slowest page is requested again in this process (Django's test Client, a POST inside a
transaction rolled back) under CaptureQueriesContext, and the slowest of its queries is EXPLAIN
ANALYZEd (inside a transaction rolled back as well).
"""
import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path

import _common as c  # bench/ is on sys.path when run as a script

REDIS_URL = os.environ.get("BENCH_SCALE_REDIS_URL", "redis://127.0.0.1:6379/10")
ADMIN = "/admin/"
USERNAME = "bench-scale-admin"
SECRET_KEY = "bench-secret-key-not-for-production-0123456789abcdef"
LIST_TARGET, CONFIRM_TARGET, POST_TARGET, PUBLISH_TARGET = 0.300, 3.0, 3.0, 0.80
THREADS = 16  # --concurrency: pool processes of the worker, threads of the bare loop
WARM_UP = 12  # publications through the new worker before the clock runs
ACCESS_FORMAT = "BENCH %({x-bench-id}i)s %(s)s %(D)s"


# --- the browser side -------------------------------------------------------------------------

class Forms(HTMLParser):
    """The forms of a page as a browser sees them: inputs, buttons and selects, in order."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.forms, self._form, self._select = [], None, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = {"attrs": a, "fields": [], "options": {}}
            self.forms.append(self._form)
        elif self._form is not None:
            if tag in ("input", "button"):
                self._form["fields"].append({"tag": tag, **a})
            elif tag == "select":
                self._select = a.get("name")
                self._form["options"][self._select] = []
                self._form["fields"].append({"tag": "select", **a})
            elif tag == "option" and self._select:
                self._form["options"][self._select].append(a.get("value"))

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None

    def having(self, name):
        for form in self.forms:
            if any(f.get("name") == name for f in form["fields"]):
                return form
        raise RuntimeError(f"no form with a field {name!r} on the page")


def submission(form, *, tick=(), tick_all=(), choose=None, button=None, set_values=None):
    """The (name, value) pairs a browser posts: hidden and text inputs, checked checkboxes (plus
    those named in `tick`, and every box named in `tick_all`), the chosen option of each select,
    and the one submit button pressed (by name), if it has a name."""
    pairs = []
    for f in form["fields"]:
        name, kind = f.get("name"), f.get("type", "text" if f["tag"] == "input" else "submit")
        if not name or "disabled" in f:
            continue
        if f["tag"] == "select":
            pairs.append((name, (choose or {}).get(name, "")))
        elif kind in ("checkbox", "radio"):
            if "checked" in f or name in tick or name in tick_all:
                pairs.append((name, f.get("value") or "on"))
        elif kind in ("submit", "button", "image", "reset"):
            if button == name:
                pairs.append((name, f.get("value", "")))
        elif kind != "file":
            pairs.append((name, f.get("value", "")))
    for name, value in (set_values or {}).items():
        pairs = [(n, v) for n, v in pairs if n != name] + [(name, value)]
    return pairs


class Web:
    """gunicorn serving the app, and a requests.Session logged in to it."""

    def __init__(self, env, log_dir):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.base = f"http://127.0.0.1:{self.port}"
        self.access_log = Path(log_dir) / f"{c.DB_PREFIX}scale-gunicorn-access.log"
        self.error_log = Path(log_dir) / f"{c.DB_PREFIX}scale-gunicorn.log"
        self.access_log.write_text("")
        args = [sys.executable, "-m", "gunicorn", "kombo_admin.wsgi", "--bind", f"127.0.0.1:{self.port}",
                "--workers", "1", "--timeout", "120", "--access-logfile", str(self.access_log),
                "--access-logformat", ACCESS_FORMAT, "--error-logfile", str(self.error_log)]
        self.popen = subprocess.Popen(args, cwd=c.ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self.session = None
        self._log_offset = 0
        self._seen = {}

    def wait_ready(self, timeout=60):
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.error_log.read_text()[-3000:]}")
            try:
                if requests.get(self.base + "/health/", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn not ready after {timeout} s:\n{self.error_log.read_text()[-3000:]}")

    def login(self, session_key):
        import requests

        from django.conf import settings

        self.session = requests.Session()
        self.session.cookies.set(settings.SESSION_COOKIE_NAME, session_key, domain="127.0.0.1", path="/")

    def worker_pids(self):
        try:
            text = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def _server_seconds(self, request_id, timeout=5.0):
        """gunicorn's request time for `request_id`, from its access log (written just after the
        response, so it may trail the client by a moment)."""
        deadline = time.monotonic() + timeout
        while request_id not in self._seen:
            with open(self.access_log, "rb") as log:
                log.seek(self._log_offset)
                chunk = log.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._log_offset += len(complete)
            for line in complete.decode(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 4 and parts[0] == "BENCH":
                    self._seen[parts[1]] = int(parts[3]) / 1e6
            if request_id in self._seen:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"request {request_id} not in gunicorn's access log")
            time.sleep(0.01)
        return self._seen.pop(request_id)

    def request(self, method, path, data=None):
        """One request, no redirect followed: (response, server seconds, client wall seconds)."""
        request_id = uuid.uuid4().hex
        url = path if path.startswith("http") else self.base + path
        t0 = time.perf_counter()
        response = self.session.request(method, url, data=data, allow_redirects=False, timeout=180,
                                        headers={"X-Bench-Id": request_id})
        _ = response.content
        wall = time.perf_counter() - t0
        return response, self._server_seconds(request_id), wall

    def stop(self):
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, 15)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, 9)
                self.popen.wait(5)


class Timings:
    """Per figure: the server and wall times of its timed requests, and any unexpected answer."""

    def __init__(self):
        self.rows = {}  # name -> {"server": [], "wall": [], "target": s, "problems": []}

    def add(self, name, target, server, wall, problem=None):
        row = self.rows.setdefault(name, {"server": [], "wall": [], "target": target, "problems": []})
        row["server"].append(server)
        row["wall"].append(wall)
        if problem:
            row["problems"].append(problem)


def expect(response, status, what):
    if response.status_code != status:
        return f"{what}: HTTP {response.status_code}, expected {status}"
    return None


def time_get(web, timings, name, path, target, count, warm):
    """`count` timed GETs of `path`, after a warm-up request if `warm` (the first page of each view:
    the other filters of a list run the same code on the same warm database)."""
    if warm:
        web.request("GET", path)
    for _ in range(count):
        response, server, wall = web.request("GET", path)
        timings.add(name, target, server, wall, expect(response, 200, name))


# --- pages ------------------------------------------------------------------------------------

def page_list(integration_pk, package_pk):
    """(name, path, target) of every list and object page timed."""
    from packages_app.models import Publication, SyncStatus

    integrations = f"{ADMIN}packages_app/integration/"
    publications = f"{ADMIN}packages_app/publication/"
    pages = [("integrations list", integrations, LIST_TARGET)]
    pages += [(f"integrations list ?sync={s}", f"{integrations}?sync={s}", LIST_TARGET) for s in SyncStatus.values]
    pages.append(("publications list", publications, LIST_TARGET))
    pages.append((f"publications list ?integration__id__exact={integration_pk}",
                   f"{publications}?integration__id__exact={integration_pk}", LIST_TARGET))
    pages += [(f"publications list ?status__exact={s}", f"{publications}?status__exact={s}", LIST_TARGET)
              for s in Publication.Status.values]
    pages.append((f"integration change page (pk {integration_pk})", f"{integrations}{integration_pk}/change/",
                  LIST_TARGET))
    pages.append((f"package change page (pk {package_pk})",
                  f"{ADMIN}packages_app/assessmentpackage/{package_pk}/change/", LIST_TARGET))
    return pages


ACTION_NAME = "publish action POST (select_across=1), for information"
CONFIRM_NAME = "publish confirmation page, all integrations"
POST_NAME = "confirming POST (publish anyway), all active"


def publish_flow(http, *, confirm):
    """A browser's publish of every integration: the list, its action with select_across, the
    confirmation page, its form. `http(method, path, data)` -> (response, server, wall), where a
    response has .status_code, .text and .headers. Returns the steps' (name, response, server,
    wall, problem), and the summary of the POST's form."""
    integrations = f"{ADMIN}packages_app/integration/"
    steps = []
    listing, _, _ = http("GET", integrations, None)
    form = Forms(listing.text).having("_selected_action")
    options = form["options"].get("action", [])
    if "publish_selected" not in options:
        raise RuntimeError(f"the integrations list offers no publish_selected action ({options})")
    index = next((f.get("value", "0") for f in form["fields"] if f.get("name") == "index"), "0")
    data = submission(form, tick_all=("_selected_action",), choose={"action": "publish_selected"}, button="index",
                      set_values={"select_across": "1", "index": index})
    response, server, wall = http("POST", integrations, data)
    location = response.headers.get("Location", "")
    problem = expect(response, 302, "action") or (None if "/publish/" in location else f"action went to {location!r}")
    steps.append((ACTION_NAME, response, server, wall, problem))
    if response.status_code != 302:
        return steps, None
    confirm_path = location if location.startswith(("/", "http")) else integrations + location
    page, server, wall = http("GET", confirm_path, None)
    steps.append((CONFIRM_NAME, page, server, wall, expect(page, 200, "confirmation page")))
    if not confirm or page.status_code != 200:
        return steps, None
    form = Forms(page.text).having("post")
    ticks = [f.get("name") for f in form["fields"] if f.get("type") == "checkbox"
             and f.get("name") in ("publish_anyway", "confirm_removals")]
    data = submission(form, tick=ticks)
    response, server, wall = http("POST", confirm_path, data)
    steps.append((POST_NAME, response, server, wall, expect(response, 302, "confirming POST")))
    names = sorted({n for n, _ in data})
    return steps, {"fields": names, "ticked": ticks, "bytes": len("&".join(f"{n}={v}" for n, v in data))}


def confirmation_figures(html):
    """The totals the confirmation page opens with, as "figure label" strings."""
    found = re.findall(r'<span class="kombo-figure">([^<]*)</span><span class="kombo-total-label">([^<]*)</span>', html)
    return ", ".join(f"{figure} {label}" for figure, label in found)


def run_publish_flows(web, timings, user, count):
    """One warm-up (list, action, confirmation page), then `count` full flows; each POST's
    publications are counted and deleted."""
    from packages_app.models import Publication

    def http(method, path, data):
        return web.request(method, path, data)

    steps, _ = publish_flow(http, confirm=False)  # warm-up
    for _, response, _, _, problem in steps:
        if problem:
            raise RuntimeError(f"publish flow warm-up: {problem}\n{response.text[:2000]}")
    info = {"created": [], "figures": confirmation_figures(steps[-1][1].text), "page_bytes": len(steps[-1][1].content)}
    for _ in range(count):
        before = Publication.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        steps, form = publish_flow(http, confirm=True)
        for name, _, server, wall, problem in steps:
            target = {CONFIRM_NAME: CONFIRM_TARGET, POST_NAME: POST_TARGET}.get(name)
            timings.add(name, target, server, wall, problem)
        created = list(Publication.objects.filter(pk__gt=before, requested_by=user).values_list("pk", flat=True))
        info["created"].append(len(created))
        info["form"] = form
        if steps[-1][0] == POST_NAME and steps[-1][1].status_code != 302:
            info["post_error"] = re.findall(r'<ul class="errorlist[^"]*">(.*?)</ul>', steps[-1][1].text, re.S)[:1]
        delete_publications(created)
    return info


def delete_publications(pks):
    """Take out what this run added (their attempts go with them)."""
    from packages_app.models import Publication

    for start in range(0, len(pks), 1000):
        Publication.objects.filter(pk__in=pks[start:start + 1000]).delete()


# --- the slowest query ------------------------------------------------------------------------

def replay_in_process(name, path, user):
    """Request page `name` again in this process (Django's test Client), under
    CaptureQueriesContext; a POST runs inside a transaction that is rolled back. Returns
    (seconds, captured queries)."""
    from django.db import connection, transaction
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")

    class Answer:
        def __init__(self, response):
            self.status_code, self.headers = response.status_code, response.headers
            self.content = response.content
            self.text = response.content.decode(errors="replace")

    captured = {}

    def http(method, url, data):
        capture = method == "GET" and name == CONFIRM_NAME and "/publish/" in url \
            or method == "POST" and name == POST_NAME and "/publish/" in url
        form = {}
        for field, value in data or []:  # the test Client takes a dict of lists, not pairs
            form.setdefault(field, []).append(value)

        def send(url, form):
            return client.get(url) if method == "GET" else client.post(url, form)

        if not capture:
            return Answer(send(url, form)), 0.0, 0.0
        with transaction.atomic():
            with CaptureQueriesContext(connection) as queries:
                t0 = time.perf_counter()
                response = send(url, form)
                captured["seconds"] = time.perf_counter() - t0
            captured["queries"] = list(queries.captured_queries)
            transaction.set_rollback(True)
        return Answer(response), 0.0, 0.0

    try:
        if name in (CONFIRM_NAME, POST_NAME):
            publish_flow(http, confirm=name == POST_NAME)
        else:
            client.get(path)  # warm-up, as in the timed runs
            with CaptureQueriesContext(connection) as queries:
                t0 = time.perf_counter()
                client.get(path)
                captured["seconds"] = time.perf_counter() - t0
            captured["queries"] = list(queries.captured_queries)
    finally:
        client.logout()
    return captured["seconds"], captured["queries"]


def shorten_sql(sql, limit=1500):
    """Long IN lists and array literals as <N values>, then at most `limit` characters."""
    sql = re.sub(r"IN \(((?:%s|'[^']*'|-?\d+)(?:, (?:%s|'[^']*'|-?\d+)){9,})\)",
                 lambda m: f"IN (<{m.group(1).count(', ') + 1} values>)", sql)
    sql = re.sub(r"'\{([^}']{100,})\}'", lambda m: f"'{{<{m.group(1).count(',') + 1} values>}}'", sql)
    return sql if len(sql) <= limit else sql[:limit] + f" ... ({len(sql):,} characters)"


def explain(sql):
    from django.db import connection, transaction

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            lines = [row[0] for row in cursor.fetchall()]
        transaction.set_rollback(True)
    return lines


# --- the publish ------------------------------------------------------------------------------

def own_backend_pid():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def run_publish(env, sandbox, log_dir, keep, db_name):
    """Bare loop, product, bare loop. Returns the figures."""
    from django.db.models import Count

    from packages_app import publishing
    from packages_app.models import Integration, Publication

    integrations = list(Integration.objects.filter(is_active=True).order_by("pk"))
    plans = publishing.publication_plans(integrations=integrations)
    items = [(p.integration.kombo_integration_id, p.body_bytes) for p in plans]
    out = {"n": len(items), "bytes": sum(len(b) for _, b in items), "bare": []}

    def bare():
        sandbox.reset()
        cpu0, server0 = time.process_time(), sandbox.cpu_seconds()
        seconds, statuses, _ = c.bare_loop(sandbox.url, items, THREADS)
        out["bare"].append({"seconds": seconds, "ok": statuses.count(200), "n": len(items),
                            "client_cpu": time.process_time() - cpu0, "server_cpu": sandbox.cpu_seconds() - server0})

    c.claim_redis(REDIS_URL)  # nothing left from the confirming POSTs (their rows are gone)
    worker_env = {**env, "KOMBO_RATE_LIMIT_PER_SECOND": "0", "LOG_LEVEL": "INFO"}
    worker = c.Worker(worker_env, Path(log_dir) / f"{c.DB_PREFIX}scale-worker.log", pool="prefork",
                      concurrency=THREADS, name="bench-scale")
    pks = []
    try:
        worker.wait_ready()
        # Warm up the pool processes' connections, outside the clock, one message each.
        with c.settings_override(KOMBO_PUBLISH_BATCH_SIZE=1, KOMBO_RATE_LIMIT_PER_SECOND=0):
            warm = [p.pk for p in publishing.publications_create(integrations=integrations[:WARM_UP])]
        c.wait_all_final(warm, timeout=60)
        delete_publications(warm)
        bare()
        sandbox.reset()
        out["load"] = c.loadavg()
        # CPU: the worker's processes, the database backends serving them (by their client ports)
        # and this process's own backend, the sandbox, this process.
        own_backend = own_backend_pid()
        backends0 = c.database_backends(db_name)
        db_ns0 = c.pids_cpu_ns(backends0)
        worker_ns0, server0, own0 = worker.cpu_ns(), sandbox.cpu_seconds(), time.process_time()
        system0 = c.system_cpu()
        t0 = time.monotonic()
        with c.settings_override(KOMBO_RATE_LIMIT_PER_SECOND=0):
            publications = publishing.publications_create(integrations=integrations)
        t_created = time.monotonic()
        pks = [p.pk for p in publications]
        t_final = c.wait_all_final(pks, timeout=600, interval=0.1)
        out["busy"] = c.cpu_share(system0, c.system_cpu())
        n = len(pks)
        worker_ports = c.local_ports([worker.pid, *worker.children()])
        backends1 = c.database_backends(db_name)
        db_ns1 = c.pids_cpu_ns(backends1)
        serving = [pid for pid, port in backends1.items() if port in worker_ports or pid == own_backend]
        out["cpu_ms"] = {
            "worker": (worker.cpu_ns() - worker_ns0) / 1e6 / n,
            "database": sum(db_ns1[pid] - db_ns0.get(pid, 0) for pid in serving if pid in db_ns1) / 1e6 / n,
            "sandbox": (sandbox.cpu_seconds() - server0) * 1000 / n,
            "bench": (time.process_time() - own0) * 1000 / n,
        }
        out["product"] = {"seconds": t_final - t0, "create_s": t_created - t0, "n": len(pks)}
        puts = sandbox.requests("PUT")
        out["product"]["puts"] = len(puts)
        out["product"]["in_flight"] = c.max_overlap([(r["started_at"], r["ended_at"] or r["started_at"]) for r in puts])
        out["product"]["counts"] = dict(Publication.objects.filter(pk__in=pks).values_list("status")
                                        .annotate(n=Count("pk")).order_by())
        out["product"]["not_enqueued"] = sum(1 for p in publications if p.enqueued is not True)
        out["worker_rss"] = [(pid, c.proc_status_kib(pid, "VmHWM")) for pid in [worker.pid, *worker.children()]]
        out["foreign"] = worker.output().count("does not exist; nothing to do")
    finally:
        worker.stop()
        if pks and not keep:
            delete_publications(pks)
    bare()
    out["kept"] = keep
    return out


# --- main -------------------------------------------------------------------------------------

def check_database(name):
    """The database exists and is migrated: this script never migrates someone's dataset."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise SystemExit(f"{name} has unapplied migrations ({', '.join(str(m) for m, _ in plan[:5])}); "
                         "this benchmark does not migrate it: migrate it yourself or use another --db.")


def bench_user():
    from django.contrib.auth.models import User

    user, created = User.objects.get_or_create(
        username=USERNAME, defaults={"is_staff": True, "is_superuser": True, "email": "bench@example.invalid"})
    if created:
        user.set_unusable_password()
        user.save()
    return user


def forget_logins(user):
    """A cleanup that deletes the access-log rows django-axes writes for this run's logins."""
    from axes.models import AccessLog
    from django.utils import timezone

    since = timezone.now()
    return lambda: AccessLog.objects.filter(username=user.username, attempt_time__gte=since).delete()


def session_for(user):
    from django.test import Client

    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    from django.conf import settings

    return client.cookies[settings.SESSION_COOKIE_NAME].value


def dataset_summary():
    from django.db.models import Count

    from packages_app.models import AssessmentPackage, Integration, Publication

    statuses = {}
    for integration in Integration.objects.with_sync_state():
        statuses[integration.sync_status] = statuses.get(integration.sync_status, 0) + 1
    publications = dict(Publication.objects.values_list("status").annotate(n=Count("pk")).order_by())
    return {
        "integrations": sum(statuses.values()),
        "paused": Integration.objects.filter(is_active=False).count(),
        "packages": AssessmentPackage.objects.count(),
        "links": Integration.packages.through.objects.count(),
        "sync": statuses,
        "publications": publications,
    }


def pick_objects():
    """The integration with the most publications, and the package offered by the most integrations."""
    from django.db.models import Count

    from packages_app.models import Integration, Publication

    integration_pk = (Publication.objects.values("integration_id").annotate(n=Count("pk")).order_by("-n")
                      .values_list("integration_id", flat=True).first())
    package_pk = (Integration.packages.through.objects.values("assessmentpackage_id").annotate(n=Count("pk"))
                  .order_by("-n").values_list("assessmentpackage_id", flat=True).first())
    return integration_pk, package_pk


def verdict(value, target, higher_is_better=False):
    if target is None:
        return "—"
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "FAIL"


def worst_page_per_view(timings, paths, skip_view):
    """The worst page of every view (path without its query; a flow step by name) that misses its
    target, except `skip_view`."""
    groups = {}
    for name, row in timings.rows.items():
        if row["target"] is None or c.percentile(row["server"], 95) <= row["target"]:
            continue
        view = (paths.get(name) or name).split("?")[0]
        median = statistics.median(row["server"])
        if view != skip_view and (view not in groups or median > groups[view][1]):
            groups[view] = (name, median)
    return [name for name, _ in groups.values()]


def measure(args, sandbox, tmp, log_dir, cleanups):
    """Everything but the report; returns what report() prints."""
    env = c.base_env(db_name=args.db, broker_url=REDIS_URL, kombo_url=sandbox.url, var_dir=tmp,
                     DJANGO_DEBUG="false", DJANGO_SECRET_KEY=SECRET_KEY, DJANGO_STATIC_ROOT=Path(tmp) / "static",
                     DJANGO_SECURE_SSL_REDIRECT="false", DJANGO_SESSION_COOKIE_SECURE="false",
                     DJANGO_CSRF_COOKIE_SECURE="false", LOG_LEVEL="WARNING")
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.db import connection

    out = {"started": time.monotonic()}
    check_database(args.db)
    c.claim_redis(REDIS_URL)
    cleanups.append(lambda: c.release_redis(REDIS_URL))
    t = time.monotonic()
    call_command("collectstatic", "--noinput", verbosity=0)
    collect_s = time.monotonic() - t
    t = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    analyze_s = time.monotonic() - t
    summary = dataset_summary()
    integration_pk, package_pk = pick_objects()
    user = bench_user()
    cleanups.append(forget_logins(user))
    key = session_for(user)
    cleanups.append(lambda: Session.objects.filter(session_key=key).delete())
    print(f"database: {args.db}   broker (no worker until the publish): {REDIS_URL}   sandbox: {sandbox.url}")
    print(f"dataset: {summary['integrations']:,} integrations ({summary['paused']} paused), "
          f"{summary['packages']:,} packages, {summary['links']:,} integration-package links, "
          f"{sum(summary['publications'].values()):,} publications")
    print("  sync status: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["sync"].items())))
    print("  publications: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["publications"].items())))
    print(f"setup: collectstatic {collect_s:.1f} s, ANALYZE {analyze_s:.1f} s")
    print(flush=True)

    web = Web(env, log_dir)
    cleanups.append(web.stop)
    web.wait_ready()
    web.login(key)
    timings = Timings()
    pages = page_list(integration_pk, package_pk)
    warmed = set()
    for name, path, target in pages:
        view = path.split("?")[0]
        time_get(web, timings, name, path, target, args.requests, warm=view not in warmed)
        warmed.add(view)
    out["flow"] = run_publish_flows(web, timings, user, args.requests)
    out["web_rss"] = [(pid, c.proc_status_kib(pid, "VmHWM")) for pid in [web.popen.pid, *web.worker_pids()]]
    web.stop()
    out["timings"] = timings
    out["web_s"] = time.monotonic() - out["started"]

    # The slowest page, again in this process, and its slowest query; then, for orientation, the
    # slowest query of the worst page of every other view that misses its target.
    paths = {name: path for name, path, _ in pages}
    slowest = max(timings.rows, key=lambda n: statistics.median(timings.rows[n]["server"]))
    seconds, queries = replay_in_process(slowest, paths.get(slowest), user)
    worst = max(queries, key=lambda q: float(q["time"]))
    out["slowest"] = {"name": slowest, "seconds": seconds, "queries": queries, "worst": worst,
                      "plan": explain(worst["sql"])}
    out["also"] = []
    for name in worst_page_per_view(timings, paths, (paths.get(slowest) or slowest).split("?")[0]):
        seconds, queries = replay_in_process(name, paths.get(name), user)
        out["also"].append((name, seconds, queries, max(queries, key=lambda q: float(q["time"]))))
    out["publish"] = None if args.skip_publish else run_publish(env, sandbox, log_dir, args.keep_publications,
                                                                args.db)
    return out


def query_ms(queries):
    return sum(float(q["time"]) for q in queries) * 1000


def report(args, out):
    timings, flow, publish = out["timings"], out["flow"], out["publish"]
    rows, fails = [], []
    for name, row in timings.rows.items():
        server, wall, target = row["server"], row["wall"], row["target"]
        p95 = c.percentile(server, 95)
        result = verdict(p95, target)
        if row["problems"]:
            result = "FAIL (" + row["problems"][0] + ")"
        if result.startswith("FAIL"):
            fails.append(name)
        rows.append([name, c.ms(statistics.median(server)), c.ms(p95), c.ms(c.percentile(wall, 95)),
                     f"<= {c.ms(target)}" if target else "—", result])
    if publish:
        product, bares = publish["product"], publish["bare"]
        bare_rate = statistics.mean(b["n"] / b["seconds"] for b in bares)
        product_rate = product["n"] / product["seconds"]
        ratio = product_rate / bare_rate
        complete = (product["counts"].get("succeeded", 0) == product["n"]
                    and all(b["ok"] == b["n"] for b in bares) and publish["foreign"] == 0)
        result = verdict(ratio, PUBLISH_TARGET, higher_is_better=True) if complete else "FAIL (incomplete)"
        if result.startswith("FAIL"):
            fails.append("publish")
        rows.append([f"publish {product['n']:,}: product / bare loop ({product_rate:.0f} / {bare_rate:.0f} per s)",
                     f"{ratio:.2f}", "", "", f">= {PUBLISH_TARGET:.2f}", result])
    (_, arbiter_kib), (web_pid, web_kib) = out["web_rss"][0], out["web_rss"][-1]
    rows.append([f"peak RSS, gunicorn worker (pid {web_pid}; arbiter {arbiter_kib / 1024:.0f} MiB)",
                 f"{web_kib / 1024:.0f} MiB", "", "", "—", "—"])
    if publish:
        (main_pid, main_kib), children = publish["worker_rss"][0], publish["worker_rss"][1:]
        rows.append([f"peak RSS, Celery worker main process (pid {main_pid})", f"{main_kib / 1024:.0f} MiB",
                     "", "", "—", "—"])
        rows.append([f"peak RSS, Celery pool processes ({len(children)})",
                     " / ".join(f"{k / 1024:.0f}" for _, k in children) + " MiB", "", "", "—", "—"])
    c.print_table(["figure (server time: gunicorn's access log)", "median", "p95", "p95 wall", "target", "result"],
                  rows)

    print(f"confirmation page: {flow['figures']}; {flow['page_bytes']:,} bytes of HTML")
    if flow.get("form"):
        form = flow["form"]
        print(f"confirming POST: fields {', '.join(form['fields'])} ({form['bytes']:,} bytes), ticked: "
              f"{', '.join(form['ticked']) or 'nothing'}; publications created by each: "
              f"{', '.join(f'{n:,}' for n in flow['created'])} (then deleted)")
    if flow.get("post_error"):
        print(f"confirming POST answered with an error: {flow['post_error'][0].strip()[:500]}")
    print()

    if publish:
        product, bares, cpu = publish["product"], publish["bare"], publish["cpu_ms"]

        def bare_row(label, b):
            return [label, f"{b['seconds']:.2f}", f"{b['n'] / b['seconds']:.1f}", f"{b['ok']:,}/{b['n']:,} HTTP 200"]

        c.print_table([f"publish (pacing off, sandbox latency {args.latency_ms:g} ms)", "seconds", "per second",
                       "outcome"], [
            bare_row(f"bare loop before, {THREADS} threads", bares[0]),
            [f"product: publications_create -> worker --concurrency {THREADS} -> all final",
             f"{product['seconds']:.2f}", f"{product['n'] / product['seconds']:.1f}",
             ", ".join(f"{k} {v:,}" for k, v in sorted(product["counts"].items()))],
            bare_row(f"bare loop after, {THREADS} threads", bares[1]),
        ])
        print(f"publications_create took {product['create_s']:.2f} s of the product's time; PUTs received "
              f"{product['puts']:,}; at most {product['in_flight']} in flight at the sandbox; not queued "
              f"{product['not_enqueued']}; foreign tasks {publish['foreign']} (must be 0); load average before "
              f"it {publish['load']}, machine CPU busy during it {publish['busy'] * 100:.0f} %; bodies "
              f"{publish['bytes']:,} bytes; the publications were "
              f"{'kept' if publish['kept'] else 'deleted afterwards'}")
        print(f"CPU per publication: worker (main + {THREADS} pool processes) {cpu['worker']:.1f} ms, database "
              f"backends serving it and publications_create {cpu['database']:.1f} ms, sandbox {cpu['sandbox']:.1f} ms, "
              f"this process {cpu['bench']:.1f} ms; bare loop per PUT: client "
              f"{statistics.mean(b['client_cpu'] / b['n'] for b in bares) * 1000:.1f} ms, sandbox "
              f"{statistics.mean(b['server_cpu'] / b['n'] for b in bares) * 1000:.1f} ms")
        print()

    slow = out["slowest"]
    queries, worst = slow["queries"], slow["worst"]
    print(f"slowest page: {slow['name']} (median {c.ms(statistics.median(timings.rows[slow['name']]['server']))} "
          f"in gunicorn). Again in this process: {c.ms(slow['seconds'])}, of which {len(queries)} queries "
          f"{query_ms(queries):.0f} ms; the slowest query took {float(worst['time']) * 1000:.1f} ms:")
    print("  " + shorten_sql(worst["sql"]))
    others = sorted(queries, key=lambda q: float(q["time"]), reverse=True)[1:4]
    if others:
        print("next slowest: " + "; ".join(f"{float(q['time']) * 1000:.1f} ms {shorten_sql(q['sql'], 90)}"
                                           for q in others))
    print()
    print("EXPLAIN (ANALYZE, BUFFERS) of it, in a transaction rolled back:")
    for line in slow["plan"]:
        print("  " + shorten_sql(line, 400))
    print()
    for name, seconds, page_queries, top in out["also"]:
        print(f"also over its target: {name}: again in this process {c.ms(seconds)}, of which {len(page_queries)} "
              f"queries {query_ms(page_queries):.0f} ms; the slowest {float(top['time']) * 1000:.1f} ms: "
              f"{shorten_sql(top['sql'], 300)}")
    if out["also"]:
        print()
    print(f"verdict: {len(fails)} target(s) missed" + (f": {'; '.join(fails)}" if fails else ""))
    print(f"load average at the end: {c.loadavg()}   web part {out['web_s']:.0f} s, whole run "
          f"{time.monotonic() - out['started']:.0f} s")
    print("rerun:", c.rerun_command())


def main():
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="kombo_seed", help="an existing, migrated database (default kombo_seed)")
    parser.add_argument("--skip-publish", action="store_true", help="leave out the publish through workers")
    parser.add_argument("--latency-ms", type=float, default=200.0,
                        help="the sandbox's delay per PUT for the publish (default 200)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="worker pool processes and bare-loop threads for the publish (default 16)")
    parser.add_argument("--requests", type=int, default=5, help="timed requests per page (default 5)")
    parser.add_argument("--keep-publications", action="store_true",
                        help="keep the publications of the publish to the sandbox in the database")
    args = parser.parse_args()
    THREADS = args.concurrency

    c.header(f"scale: the admin on {args.db}, gunicorn (1 sync worker, DEBUG off), {args.requests} requests a "
             f"page; publish through a worker --concurrency {THREADS} vs a bare loop of {THREADS} threads, "
             f"sandbox latency {args.latency_ms:g} ms")
    log_dir = Path(tempfile.gettempdir()) / "bench_kombo_logs"
    log_dir.mkdir(exist_ok=True)
    cleanups = []
    with tempfile.TemporaryDirectory(prefix="bench_kombo_scale_") as tmp:
        sandbox = c.SandboxProcess(latency_ms=args.latency_ms, log_path=log_dir / f"{c.DB_PREFIX}scale-sandbox.log")
        cleanups.append(sandbox.stop)
        try:
            out = measure(args, sandbox, tmp, log_dir, cleanups)
        finally:
            for fn in reversed(cleanups):
                try:
                    fn()
                except Exception as error:  # cleanup must not hide the real error
                    print(f"(cleanup: {type(error).__name__}: {error})", file=sys.stderr)
            try:
                from django.db import connections

                connections.close_all()
            except Exception:
                pass
    report(args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
