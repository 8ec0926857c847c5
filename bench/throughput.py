"""Publications per second: the product (publications_create -> Redis -> a Celery worker with 4
prefork processes -> PUT) against a bare loop of 4 threads sending the same PUT bodies to the same
server, at 20 ms and at 200 ms per PUT.

    python bench/throughput.py [--small] [--rounds N] [--latency-ms MS ...] [--integrations N]

The server is the Kombo sandbox in its own process (`manage.py kombo_sandbox --latency-ms MS`), so
no client shares its CPU slice or GIL. By default two sections run one after the other: 20 ms per
PUT with 500 integrations x 50 packages (target: product / bare >= 0.80) and 200 ms per PUT with
200 integrations (target >= 0.97; fewer integrations keep its rounds about 10 s each). --small:
100 and 50 integrations. Rounds alternate bare loop and product (this machine is noisy; every figure
comes from this one run). The product runs with production settings (DEBUG off, persistent database
connections) and with KOMBO_RATE_LIMIT_PER_SECOND=0, since this server has no rate limit; at 20 ms
one more product run with the shared pacing on, set far above what the server can take, shows what
the Redis schedule costs. (c) times publication_execute called directly in this process, one at a
time, without Celery.

The product's time runs from the call to publications_create to the latest finished_at of its
publications (the moment the worker took the last answer, on this machine's clock), read once all
are final; the bench polls for that every 0.25 s, so that its polling costs the run nothing.

CPU per publication: the worker (main + pool processes) and the PostgreSQL backends serving the
run, both from the scheduler's run time in /proc/<pid>/task/*/schedstat (nanoseconds), sampled
after the warm-up and again when every publication is final. The database's backends are those of
pg_stat_activity on this run's database; a backend whose client port is a socket of a worker
process serves the worker, and the bench process's own backend is counted only while
publications_create runs (its polling for the end is not the engine's work). Backends of other
databases (other people's tests) are never counted.

Runs either engine: packages_app/publishing (HEAD) or packages_app/services.py (git bf49d56 and
before), so the same script measures both; see bench/README.md for the "before" worktree.
"""
import argparse
import statistics
import sys
import time
import types

import _common as c  # bench/ is on sys.path when run as a script

LATENCIES_MS = (20, 200)
THREADS = 4
PACKAGES_PER_INTEGRATION = 50
CATALOGUE_SIZE = 100
DIRECT_PUTS_SECONDS = 2.0  # (c): about this long of measured PUTs (plus one warm-up), at most 100
PACED_RATE = 1000   # per second: pacing on, but never the limit here
WARM_UP = 12        # publications through a new worker before the clock runs


def gap_between_puts(puts, processes=THREADS):
    """Mean time a sender (thread or pool process) spent between the end of one PUT and the start
    of its next, over the span from the first PUT to the last: what it does besides waiting for
    the server. (processes x span - time inside PUTs) / PUTs."""
    if not puts:
        return float("nan")
    first = min(r["started_at"] for r in puts)
    last = max(r["ended_at"] or r["started_at"] for r in puts)
    inside = sum((r["ended_at"] or r["started_at"]) - r["started_at"] for r in puts)
    return (processes * (last - first) - inside) / len(puts)


def run_bare(sandbox, items):
    sandbox.reset()
    cpu0 = sandbox.cpu_seconds()
    seconds, statuses, cpu = c.bare_loop(sandbox.url, items, THREADS)
    server_cpu = sandbox.cpu_seconds() - cpu0
    return {"n": len(items), "seconds": seconds, "ok": statuses.count(200), "client_cpu": cpu,
            "server_cpu": server_cpu, "gap_s": gap_between_puts(sandbox.requests("PUT"))}


def engine():
    """(the module with the engine's public names, the module whose _enqueue_all publications_create
    calls after commit, a label): packages_app/publishing at HEAD, packages_app/services.py at
    git bf49d56 and before."""
    try:
        from packages_app import publishing
        from packages_app.publishing import planning
    except ImportError:
        from packages_app import services

        return services, services, "packages_app/services.py + attempt_sql.py"
    return publishing, planning, "packages_app/publishing/"


def size_for(latency_ms, small):
    """Integrations per section: 500 (--small 100) at low latency; at 200 ms and above 200 (50),
    so that a round stays near 10 s (a bare loop of 4 threads does 4 / 0.2 s = 20 PUTs/s)."""
    if latency_ms >= 100:
        return 50 if small else 200
    return 100 if small else 500


def target_for(latency_ms):
    """The issue's targets: >= 0.80 of the bare loop at 20 ms per PUT, >= 0.97 at 200 ms."""
    return 0.97 if latency_ms >= 200 else 0.80


def run_direct(sandbox, integrations, count):
    """publication_execute called in this process for `count` publications, sequentially, pacing
    off. Their queue messages are flushed unread afterwards (claim_redis before the product)."""
    from django.conf import settings

    publishing, _, _ = engine()
    sandbox.reset()
    saved = settings.KOMBO_RATE_LIMIT_PER_SECOND
    settings.KOMBO_RATE_LIMIT_PER_SECOND = 0
    try:
        publications = publishing.publications_create(integrations=integrations[:count])
        publishing.publication_execute(publication_id=publications[0].pk)  # warm-up: connection, client
        rest = publications[1:]
        cpu0, t0 = time.thread_time(), time.monotonic()
        results = [publishing.publication_execute(publication_id=p.pk).status for p in rest]
        seconds, cpu = time.monotonic() - t0, time.thread_time() - cpu0
    finally:
        settings.KOMBO_RATE_LIMIT_PER_SECOND = saved
    return {"n": len(rest), "seconds": seconds, "cpu": cpu, "succeeded": results.count("succeeded")}


def warm_up(integrations, sandbox):
    """A running worker has its connections open: publish a few integrations one message each
    (spread over the pool processes), outside the clock, then forget them at the server."""
    from packages_app.models import Publication

    publishing, _, _ = engine()
    with c.settings_override(KOMBO_PUBLISH_BATCH_SIZE=1):
        pks = [p.pk for p in publishing.publications_create(integrations=integrations)]
    c.wait_all_final(pks, timeout=60)
    Publication.objects.filter(pk__in=pks).delete()
    sandbox.reset()


def own_backend_pid():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def run_product(run, env, sandbox, label, extra_env, integrations, timeout=150):
    """Worker first (ready), then time publications_create -> every publication final."""
    from django.db.models import Count, Max

    from packages_app.models import Publication

    publishing, create_module, _ = engine()
    sandbox.reset()
    c.claim_redis()  # the queue and any pacing state of an earlier run
    worker = c.Worker({**env, **extra_env}, run.log_dir / f"{c.DB_PREFIX}throughput-worker-{label}.log",
                      pool="prefork", concurrency=THREADS)
    try:
        worker.wait_ready()
        warm_up(integrations[:WARM_UP], sandbox)
        own_backend = own_backend_pid()
        backends0 = c.database_backends(run.db_name)
        db_ns0 = c.pids_cpu_ns(backends0)
        worker_ns0, own_cpu0, server_cpu0 = worker.cpu_ns(), time.process_time(), sandbox.cpu_seconds()
        main_ns0 = c.proc_cpu_ns(worker.pid)
        system0, redis_cpu0 = c.system_cpu(), c.named_processes_cpu("redis-server")
        committed = []
        enqueue_all = create_module._enqueue_all
        create_module._enqueue_all = lambda pubs: (committed.append(time.monotonic()), enqueue_all(pubs))
        try:
            own_db_ns0 = c.proc_cpu_ns(own_backend)
            t0, t0_wall = time.monotonic(), time.time()
            publications = publishing.publications_create(integrations=integrations)
            t_created = time.monotonic()
            create_db_ns = c.proc_cpu_ns(own_backend) - own_db_ns0
        finally:
            create_module._enqueue_all = enqueue_all
        pks = [p.pk for p in publications]
        # Polled now and then (a poll every 20 ms cost the machine's CPU and skewed the run); the
        # end is when the worker took the last answer: the latest finished_at, on this clock.
        c.wait_all_final(pks, timeout=timeout, interval=0.25)
        last = Publication.objects.filter(pk__in=pks).aggregate(last=Max("finished_at"))["last"]
        t_final = t0 + (last.timestamp() - t0_wall)
        worker_ns, own_cpu = worker.cpu_ns() - worker_ns0, time.process_time() - own_cpu0
        main_ns = c.proc_cpu_ns(worker.pid) - main_ns0
        server_cpu, system_share = sandbox.cpu_seconds() - server_cpu0, c.cpu_share(system0, c.system_cpu())
        redis_cpu = c.named_processes_cpu("redis-server") - redis_cpu0
        backends1 = c.database_backends(run.db_name)
        db_ns1 = c.pids_cpu_ns(backends1)
        worker_ports = c.local_ports([worker.pid, *worker.children()])
    finally:
        worker.stop()
    # Per backend: what it used since the first sample (all of it if it connected since).
    db_delta = {pid: ns - db_ns0.get(pid, 0) for pid, ns in db_ns1.items()}
    worker_backends = [pid for pid, port in backends1.items() if port in worker_ports and pid in db_delta]
    lost = [pid for pid in backends0 if pid not in db_ns1]  # exited meanwhile: their time is not seen
    # A task for a row that is not in our database came from someone else on the same broker DB.
    foreign = worker.output().count("does not exist; nothing to do")
    puts = sandbox.requests("PUT")
    counts = dict(Publication.objects.filter(pk__in=pks).values_list("status")
                  .annotate(n=Count("pk")).order_by())
    first_put = min(r["started_at"] for r in puts) - t0
    last_put_end = max(r["ended_at"] or r["started_at"] for r in puts) - t0
    n = len(pks)
    worker_db_ns = sum(db_delta[pid] for pid in worker_backends)
    return {
        "label": label, "n": n, "seconds": t_final - t0, "create_s": t_created - t0,
        "committed_s": committed[0] - t0,
        "first_put_s": first_put, "last_put_end_s": last_put_end, "puts": len(puts),
        "steady_rate": len(puts) / (last_put_end - first_put) if last_put_end > first_put else float("nan"),
        "counts": counts, "succeeded": counts.get("succeeded", 0),
        "not_enqueued": sum(1 for p in publications if p.enqueued is not True),
        "gap_s": gap_between_puts(puts),
        "max_in_flight": c.max_overlap([(r["started_at"], r["ended_at"] or r["started_at"]) for r in puts]),
        "foreign": foreign,
        "worker_cpu_ms": worker_ns / 1e6 / n, "worker_main_ms": main_ns / 1e6 / n, "bench_cpu_ms": own_cpu * 1000 / n,
        "server_cpu_ms": server_cpu * 1000 / n, "system_busy": system_share,
        "db_worker_ms": worker_db_ns / 1e6 / n, "db_create_ms": create_db_ns / 1e6 / n,
        "db_engine_ms": (worker_db_ns + create_db_ns) / 1e6 / n,
        "db_all_ms": sum(db_delta.values()) / 1e6 / n,
        "db_backends": f"{len(worker_backends)} + 1 / {len(backends1)}", "db_lost": len(lost),
        "redis_cpu_ms": redis_cpu * 1000 / n,
    }


def run_section(run, env, latency_ms, integrations, items, rounds, paced_too):
    """Rounds of (bare loop, product) against a sandbox answering after `latency_ms`, then the
    paced product run (if asked) and (c). Returns what report() prints."""
    sandbox = c.SandboxProcess(latency_ms=latency_ms,
                               log_path=run.log_dir / f"{c.DB_PREFIX}throughput-sandbox-{latency_ms}ms.log")
    try:
        section_env = {**env, "KOMBO_API_URL": sandbox.url}
        with c.settings_override(KOMBO_API_URL=sandbox.url):
            unpaced = {"KOMBO_RATE_LIMIT_PER_SECOND": "0"}
            bare_runs, product_runs = [], []
            for round_no in range(1, rounds + 1):
                bare_runs.append(run_bare(sandbox, items))
                product_runs.append(run_product(run, section_env, sandbox, f"{latency_ms}ms-unpaced-{round_no}",
                                                unpaced, integrations))
            paced = (run_product(run, section_env, sandbox, f"{latency_ms}ms-paced",
                                 {"KOMBO_RATE_LIMIT_PER_SECOND": str(PACED_RATE)}, integrations)
                     if paced_too else None)
            direct_count = 1 + max(5, min(100, round(DIRECT_PUTS_SECONDS * 1000 / latency_ms)))
            direct = run_direct(sandbox, integrations, min(len(integrations), direct_count))
    finally:
        sandbox.stop()
    return {"latency_ms": latency_ms, "bare": bare_runs, "product": product_runs, "paced": paced,
            "direct": direct, "body_bytes": sum(len(b) for _, b in items), "n": len(integrations)}


def rate(r):
    return r["n"] / r["seconds"]


def report(section):
    """Print one section's tables; returns its summary line."""
    latency, n = section["latency_ms"], section["n"]
    bare_runs, product_runs, paced, direct = section["bare"], section["product"], section["paced"], section["direct"]
    target = target_for(latency)
    print(f"-- {latency} ms per PUT: {n} integrations x {PACKAGES_PER_INTEGRATION} packages, "
          f"{len(bare_runs)} round(s), target product / bare >= {target:.2f} --")
    print()
    rows = []
    for i, (bare, product) in enumerate(zip(bare_runs, product_runs), 1):
        rows.append([f"round {i}: (a) bare loop, {THREADS} threads", f"{bare['seconds']:.2f}", f"{rate(bare):.1f}",
                     f"{bare['ok']}/{bare['n']} HTTP 200"])
        rows.append([f"round {i}: (b) product, pacing off", f"{product['seconds']:.2f}", f"{rate(product):.1f}",
                     f"{product['succeeded']}/{product['n']} succeeded"])
    if paced:
        rows.append([f"(b') product, shared pacing on at {PACED_RATE}/s", f"{paced['seconds']:.2f}",
                     f"{rate(paced):.1f}", f"{paced['succeeded']}/{paced['n']} succeeded"])
    rows.append([f"(c) publication_execute in this process, 1 at a time ({direct['n']})",
                 f"{direct['seconds']:.2f}", f"{direct['n'] / direct['seconds']:.1f}",
                 f"{direct['succeeded']}/{direct['n']} succeeded"])
    c.print_table(["run", "seconds", "publications/s", "outcome"], rows)

    # Each round's product run is compared with the bare loop run just before it.
    ratios = [rate(p) / rate(b) for b, p in zip(bare_runs, product_runs)]
    bare_rate = statistics.median(rate(r) for r in bare_runs)
    ratio_rows = [[f"round {i}", f"{rate(b):.1f}", f"{rate(p):.1f}", f"{r:.3f}"]
                  for i, (b, p, r) in enumerate(zip(bare_runs, product_runs, ratios), 1)]
    if paced:
        ratio_rows.append(["(b') pacing on / median bare", f"{bare_rate:.1f}", f"{rate(paced):.1f}",
                           f"{rate(paced) / bare_rate:.3f}"])
    c.print_table([f"product / bare at {latency} ms (target >= {target:.2f})", "bare /s", "product /s", "ratio"],
                  ratio_rows)
    median_ratio = statistics.median(ratios)
    verdict = "meets the target" if median_ratio >= target else "BELOW THE TARGET"
    print(f"verdict at {latency} ms: median of the rounds' ratios {median_ratio:.3f} (lowest {min(ratios):.3f}), "
          f"{verdict} of {target:.2f}")
    print()

    def med(key):
        return statistics.median(r[key] for r in product_runs)

    cpu_rows = [
        ["(a) bare client (requests, 4 threads), per PUT",
         c.ms(statistics.median(r["client_cpu"] / r["n"] for r in bare_runs))],
        ["server (sandbox process) during (a), per PUT",
         c.ms(statistics.median(r["server_cpu"] / r["n"] for r in bare_runs))],
        ["(b) worker, main + 4 pool processes, per publication", f"{med('worker_cpu_ms'):.2f} ms"],
        ["(b) database: backends serving the worker, per publication", f"{med('db_worker_ms'):.2f} ms"],
        ["(b) database: publications_create's backend during the call, per publication",
         f"{med('db_create_ms'):.2f} ms"],
        ["(b) database: the engine (the two above), per publication", f"{med('db_engine_ms'):.2f} ms"],
        ["(b) database: every backend of this run (+ the bench's polling), per publication",
         f"{med('db_all_ms'):.2f} ms"],
        ["(b) server (sandbox process), per publication", f"{med('server_cpu_ms'):.2f} ms"],
        ["(b) this process (publications_create, polling), per publication", f"{med('bench_cpu_ms'):.2f} ms"],
        ["(b) Redis (the whole server, shared with other users), per publication", f"{med('redis_cpu_ms'):.2f} ms"],
    ]
    if paced:
        cpu_rows.append(["(b') worker with pacing on, per publication", f"{paced['worker_cpu_ms']:.2f} ms"])
    cpu_rows.append(["(c) publication_execute, per publication (calling thread only)",
                     c.ms(direct["cpu"] / direct["n"])])
    c.print_table([f"CPU time at {latency} ms (medians over the rounds)", "value"], cpu_rows)

    detail_rows = [
        ["publications_create: rows committed (queueing starts) after"],
        ["publications_create, one call (inserts, then queues after commit)"],
        ["first PUT reached the server after"],
        ["last PUT finished after"],
        ["all publications final after"],
        ["rate from first PUT to last PUT (/s)"],
        ["per pool process, between one PUT and its next (mean; bare loop: its threads)"],
        ["PUTs received by the server"],
        ["final states"],
        ["not queued by publications_create"],
        ["most requests in flight at the server"],
        ["foreign tasks on the broker (must be 0)"],
        ["worker CPU per publication"],
        ["  of which the main process (consumer)"],
        ["database CPU per publication (engine)"],
        ["database backends: worker's + create's / all at the end"],
        ["database backends gone during the run (not counted)"],
        ["machine CPU busy during the run (2 cores, all processes)"],
    ]
    shown = product_runs + ([paced] if paced else [])
    bare_gap = statistics.median(r["gap_s"] for r in bare_runs)
    for p in shown:
        values = [c.ms(p["committed_s"]), c.ms(p["create_s"]), c.ms(p["first_put_s"]), c.ms(p["last_put_end_s"]),
                  c.ms(p["seconds"]), f"{p['steady_rate']:.1f}",
                  f"{c.ms(p['gap_s'])} ({c.ms(bare_gap)})", p["puts"],
                  ", ".join(f"{k} {v}" for k, v in sorted(p["counts"].items())),
                  p["not_enqueued"], p["max_in_flight"], p["foreign"], f"{p['worker_cpu_ms']:.2f} ms",
                  f"{p['worker_main_ms']:.2f} ms", f"{p['db_engine_ms']:.2f} ms", p["db_backends"], p["db_lost"], f"{p['system_busy'] * 100:.0f} %"]
        for row, value in zip(detail_rows, values):
            row.append(value)
    c.print_table(["product detail"] + [p["label"] for p in shown], detail_rows)
    print(f"PUT bodies: {n} x {PACKAGES_PER_INTEGRATION} packages, {section['body_bytes']:,} bytes in all")
    print()
    worker_each = " ".join(f"{r['worker_cpu_ms']:.2f}" for r in product_runs)
    db_each = " ".join(f"{r['db_engine_ms']:.2f}" for r in product_runs)
    return (f"summary {latency} ms: ratios {' '.join(f'{r:.3f}' for r in ratios)} (median {median_ratio:.3f}, "
            f"target {target:.2f}); CPU per publication: worker {med('worker_cpu_ms'):.2f} ms (rounds {worker_each}), "
            f"database {med('db_engine_ms'):.2f} ms (rounds {db_each})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="100 integrations at 20 ms, 50 at 200 ms")
    parser.add_argument("--rounds", type=int, default=3, help="bare/product pairs per latency (default 3)")
    parser.add_argument("--latency-ms", type=int, action="append", metavar="MS",
                        help="server latency per PUT; repeat for several sections (default: 20 and 200)")
    parser.add_argument("--integrations", type=int, default=None,
                        help="integrations in every section (default: 500 below 100 ms, 200 from 100 ms)")
    args = parser.parse_args()

    latencies = args.latency_ms or list(LATENCIES_MS)
    sizes = {ms: args.integrations or size_for(ms, args.small) for ms in latencies}
    c.header(f"throughput: server latency {', '.join(f'{ms} ms ({sizes[ms]} integrations)' for ms in latencies)}"
             f" x {PACKAGES_PER_INTEGRATION} packages, bare loop {THREADS} threads vs worker "
             f"--concurrency {THREADS} prefork")
    sections = []
    with c.BenchRun("throughput") as run:
        # Production settings for the worker: DEBUG off, persistent connections (the default). Each
        # section points KOMBO_API_URL at its own sandbox (workers by environment, this process by
        # settings), so Django starts with a placeholder that is never called.
        placeholder = types.SimpleNamespace(url="http://127.0.0.1:9/v1")
        env = run.start_django(placeholder, DJANGO_DEBUG="false",
                               DJANGO_SECRET_KEY="bench-secret-key-not-for-production-0123456789abcdef")
        env["LOG_LEVEL"] = "INFO"  # the worker logs as in production; this process stays quiet

        from packages_app.models import Integration

        publishing, _, engine_label = engine()
        print(f"engine: {engine_label}   database: {run.db_name}   broker: {c.REDIS_URL}")
        print()
        catalogue = c.make_packages(CATALOGUE_SIZE)
        c.make_integrations(
            max(sizes.values()),
            lambda i: catalogue[i % (CATALOGUE_SIZE - PACKAGES_PER_INTEGRATION + 1):][:PACKAGES_PER_INTEGRATION],
        )
        c.analyze()
        integrations = list(Integration.objects.prefetch_related("packages").order_by("pk"))
        items = [(i.kombo_integration_id, publishing.publication_plan(integration=i).body_bytes)
                 for i in integrations]
        integrations = list(Integration.objects.order_by("pk"))  # plain instances, as the admin passes them
        for latency in latencies:
            size = sizes[latency]
            sections.append(run_section(run, env, latency, integrations[:size], items[:size], args.rounds,
                                        paced_too=latency < 100))

    summaries = [report(section) for section in sections]
    for line in summaries:
        print(line)
    print("rerun:", c.rerun_command())
    return 0


if __name__ == "__main__":
    sys.exit(main())
