"""Publications per second: the product (publications_create -> Redis -> a Celery worker with 4
prefork processes -> PUT) against a bare loop of 4 threads sending the same PUT bodies to the same
server.

    python bench/throughput.py [--small] [--rounds N]

500 integrations x 50 packages (--small: 100 x 50). The server is the Kombo sandbox in its own
process (`manage.py kombo_sandbox --latency-ms 20`), so no client shares its CPU slice or GIL.
Rounds alternate bare loop and product (this machine is noisy; every figure comes from this one
run). The product runs with production settings (DEBUG off, persistent database connections) and
with KOMBO_RATE_LIMIT_PER_SECOND=0, since this server has no rate limit; one more product run with
the shared pacing on, set far above what the server can take, shows what the Redis schedule costs.
(c) times publishing.publication_execute called directly in this process, one at a time, without
Celery, and every path's CPU time per publication is printed.
"""
import argparse
import statistics
import sys
import threading
import time

import _common as c  # bench/ is on sys.path when run as a script

LATENCY_MS = 20
THREADS = 4
PACKAGES_PER_INTEGRATION = 50
CATALOGUE_SIZE = 100
DIRECT_COUNT = 101  # (c): one warm-up + 100 measured
PACED_RATE = 1000   # per second: pacing on, but never the limit here
WARM_UP = 12        # publications through a new worker before the clock runs


def bare_loop(url, items, threads=THREADS):
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
                headers={"Authorization": f"Bearer {c.API_KEY}", "X-Integration-Id": integration_id,
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


def run_bare(sandbox, items):
    sandbox.reset()
    cpu0 = sandbox.cpu_seconds()
    seconds, statuses, cpu = bare_loop(sandbox.url, items)
    return {"n": len(items), "seconds": seconds, "ok": statuses.count(200), "client_cpu": cpu,
            "server_cpu": sandbox.cpu_seconds() - cpu0}


def run_direct(sandbox, count):
    """publication_execute called in this process for `count` publications, sequentially, pacing
    off. Their queue messages are flushed unread afterwards (claim_redis before the product)."""
    from django.conf import settings

    from packages_app import publishing
    from packages_app.models import Integration

    sandbox.reset()
    saved = settings.KOMBO_RATE_LIMIT_PER_SECOND
    settings.KOMBO_RATE_LIMIT_PER_SECOND = 0
    try:
        publications = publishing.publications_create(integrations=list(Integration.objects.order_by("pk")[:count]))
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
    from packages_app import publishing
    from packages_app.models import Publication

    with c.settings_override(KOMBO_PUBLISH_BATCH_SIZE=1):
        pks = [p.pk for p in publishing.publications_create(integrations=integrations)]
    c.wait_all_final(pks, timeout=60)
    Publication.objects.filter(pk__in=pks).delete()
    sandbox.reset()


def run_product(run, env, sandbox, label, extra_env, timeout=150):
    """Worker first (ready), then time publications_create -> every publication final."""
    from django.db.models import Count

    from packages_app import publishing
    from packages_app.models import Integration, Publication

    sandbox.reset()
    c.claim_redis()  # the queue and any pacing state of an earlier run
    worker = c.Worker({**env, **extra_env}, run.log_dir / f"throughput-worker-{label}.log",
                      pool="prefork", concurrency=THREADS)
    try:
        worker.wait_ready()
        integrations = list(Integration.objects.order_by("pk"))
        warm_up(integrations[:WARM_UP], sandbox)
        worker_cpu0, own_cpu0, server_cpu0 = worker.cpu_seconds(), time.process_time(), sandbox.cpu_seconds()
        system0, db_cpu0, redis_cpu0 = c.system_cpu(), c.named_processes_cpu("postgres"), c.named_processes_cpu("redis-server")
        committed = []
        enqueue_all = publishing._enqueue_all
        publishing._enqueue_all = lambda pubs: (committed.append(time.monotonic()), enqueue_all(pubs))
        try:
            t0 = time.monotonic()
            publications = publishing.publications_create(integrations=integrations)
            t_created = time.monotonic()
        finally:
            publishing._enqueue_all = enqueue_all
        pks = [p.pk for p in publications]
        t_final = c.wait_all_final(pks, timeout=timeout, interval=0.02)
        worker_cpu, own_cpu = worker.cpu_seconds() - worker_cpu0, time.process_time() - own_cpu0
        server_cpu, system_share = sandbox.cpu_seconds() - server_cpu0, c.cpu_share(system0, c.system_cpu())
        db_cpu = c.named_processes_cpu("postgres") - db_cpu0
        redis_cpu = c.named_processes_cpu("redis-server") - redis_cpu0
    finally:
        worker.stop()
    # A task for a row that is not in our database came from someone else on the same broker DB.
    foreign = worker.output().count("does not exist; nothing to do")
    puts = sandbox.requests("PUT")
    counts = dict(Publication.objects.filter(pk__in=pks).values_list("status")
                  .annotate(n=Count("pk")).order_by())
    first_put = min(r["started_at"] for r in puts) - t0
    last_put_end = max(r["ended_at"] or r["started_at"] for r in puts) - t0
    n = len(pks)
    return {
        "label": label, "n": n, "seconds": t_final - t0, "create_s": t_created - t0,
        "committed_s": committed[0] - t0,
        "first_put_s": first_put, "last_put_end_s": last_put_end, "puts": len(puts),
        "steady_rate": len(puts) / (last_put_end - first_put) if last_put_end > first_put else float("nan"),
        "counts": counts, "succeeded": counts.get("succeeded", 0),
        "not_enqueued": sum(1 for p in publications if p.enqueued is not True),
        "max_in_flight": c.max_overlap([(r["started_at"], r["ended_at"] or r["started_at"]) for r in puts]),
        "foreign": foreign,
        "worker_cpu_ms": worker_cpu * 1000 / n, "bench_cpu_ms": own_cpu * 1000 / n,
        "server_cpu_ms": server_cpu * 1000 / n, "system_busy": system_share,
        "db_cpu_ms": db_cpu * 1000 / n, "redis_cpu_ms": redis_cpu * 1000 / n,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="100 integrations instead of 500")
    parser.add_argument("--rounds", type=int, default=3, help="bare/product pairs (default 3)")
    args = parser.parse_args()

    n = 100 if args.small else 500
    c.header(f"throughput: {n} integrations x {PACKAGES_PER_INTEGRATION} packages, server latency "
             f"{LATENCY_MS} ms, bare loop {THREADS} threads vs worker --concurrency {THREADS} prefork")

    with c.BenchRun("throughput") as run:
        sandbox = c.SandboxProcess(latency_ms=LATENCY_MS, log_path=run.log_dir / "throughput-sandbox.log")
        run.on_exit(sandbox.stop)
        # Production settings for the worker: DEBUG off, persistent connections (the default).
        env = run.start_django(sandbox, DJANGO_DEBUG="false",
                               DJANGO_SECRET_KEY="bench-secret-key-not-for-production-0123456789abcdef")
        env["LOG_LEVEL"] = "INFO"  # the worker logs as in production; this process stays quiet

        from packages_app import publishing
        from packages_app.models import Integration

        catalogue = c.make_packages(CATALOGUE_SIZE)
        c.make_integrations(
            n, lambda i: catalogue[i % (CATALOGUE_SIZE - PACKAGES_PER_INTEGRATION + 1):][:PACKAGES_PER_INTEGRATION],
        )
        c.analyze()
        integrations = list(Integration.objects.prefetch_related("packages").order_by("pk"))
        items = [(i.kombo_integration_id, publishing.publication_plan(integration=i).body_bytes)
                 for i in integrations]
        body_bytes = sum(len(b) for _, b in items)

        unpaced = {"KOMBO_RATE_LIMIT_PER_SECOND": "0"}
        bare_runs, product_runs = [], []
        for round_no in range(1, args.rounds + 1):
            bare_runs.append(run_bare(sandbox, items))
            product_runs.append(run_product(run, env, sandbox, f"unpaced-{round_no}", unpaced))
        paced = run_product(run, env, sandbox, "paced", {"KOMBO_RATE_LIMIT_PER_SECOND": str(PACED_RATE)})
        direct = run_direct(sandbox, min(n, DIRECT_COUNT))

    def rate(r):
        return r["n"] / r["seconds"]

    rows = []
    for i, (bare, product) in enumerate(zip(bare_runs, product_runs), 1):
        rows.append([f"round {i}: (a) bare loop, {THREADS} threads", f"{bare['seconds']:.2f}", f"{rate(bare):.1f}",
                     f"{bare['ok']}/{bare['n']} HTTP 200"])
        rows.append([f"round {i}: (b) product, pacing off", f"{product['seconds']:.2f}", f"{rate(product):.1f}",
                     f"{product['succeeded']}/{product['n']} succeeded"])
    rows.append([f"(b') product, shared pacing on at {PACED_RATE}/s", f"{paced['seconds']:.2f}", f"{rate(paced):.1f}",
                 f"{paced['succeeded']}/{paced['n']} succeeded"])
    rows.append([f"(c) publication_execute in this process, 1 at a time ({direct['n']})",
                 f"{direct['seconds']:.2f}", f"{direct['n'] / direct['seconds']:.1f}",
                 f"{direct['succeeded']}/{direct['n']} succeeded"])
    c.print_table(["run", "seconds", "publications/s", "outcome"], rows)

    # Each round's product run is compared with the bare loop run just before it.
    ratios = [rate(p) / rate(b) for b, p in zip(bare_runs, product_runs)]
    bare_rate = statistics.median(rate(r) for r in bare_runs)
    ratio_rows = [[f"round {i}", f"{rate(b):.1f}", f"{rate(p):.1f}", f"{r:.2f}"]
                  for i, (b, p, r) in enumerate(zip(bare_runs, product_runs, ratios), 1)]
    ratio_rows.append(["(b') pacing on / median bare", f"{bare_rate:.1f}", f"{rate(paced):.1f}",
                       f"{rate(paced) / bare_rate:.2f}"])
    c.print_table(["product / bare (target >= 0.80)", "bare /s", "product /s", "ratio"], ratio_rows)
    median_ratio = statistics.median(ratios)
    verdict = "meets the target" if median_ratio >= 0.8 else "BELOW THE TARGET"
    print(f"verdict: median of the rounds' ratios {median_ratio:.2f} (lowest {min(ratios):.2f}), "
          f"{verdict} of 0.80")
    print()

    cpu_rows = [
        ["(a) bare client (requests, 4 threads), per PUT",
         c.ms(statistics.median(r["client_cpu"] / r["n"] for r in bare_runs))],
        ["server (sandbox process) during (a), per PUT",
         c.ms(statistics.median(r["server_cpu"] / r["n"] for r in bare_runs))],
        ["(b) worker, main + 4 pool processes, per publication",
         f"{statistics.median(r['worker_cpu_ms'] for r in product_runs):.1f} ms"],
        ["(b) server (sandbox process), per publication",
         f"{statistics.median(r['server_cpu_ms'] for r in product_runs):.1f} ms"],
        ["(b) this process (publications_create, polling), per publication",
         f"{statistics.median(r['bench_cpu_ms'] for r in product_runs):.1f} ms"],
        ["(b) PostgreSQL (all its processes), per publication",
         f"{statistics.median(r['db_cpu_ms'] for r in product_runs):.1f} ms"],
        ["(b) Redis, per publication", f"{statistics.median(r['redis_cpu_ms'] for r in product_runs):.2f} ms"],
        ["(b') worker with pacing on, per publication", f"{paced['worker_cpu_ms']:.1f} ms"],
        ["(c) publication_execute, per publication (calling thread only)", c.ms(direct["cpu"] / direct["n"])],
    ]
    c.print_table(["CPU time (medians over the rounds)", "value"], cpu_rows)

    detail_rows = [
        ["publications_create: rows committed (queueing starts) after"],
        ["publications_create, one call (inserts, then queues after commit)"],
        ["first PUT reached the server after"],
        ["last PUT finished after"],
        ["all publications final after"],
        ["rate from first PUT to last PUT (/s)"],
        ["PUTs received by the server"],
        ["final states"],
        ["not queued by publications_create"],
        ["most requests in flight at the server"],
        ["foreign tasks on the broker (must be 0)"],
        ["machine CPU busy during the run (2 cores, all processes)"],
    ]
    shown = product_runs + [paced]
    for p in shown:
        values = [c.ms(p["committed_s"]), c.ms(p["create_s"]), c.ms(p["first_put_s"]), c.ms(p["last_put_end_s"]), c.ms(p["seconds"]),
                  f"{p['steady_rate']:.1f}", p["puts"],
                  ", ".join(f"{k} {v}" for k, v in sorted(p["counts"].items())),
                  p["not_enqueued"], p["max_in_flight"], p["foreign"], f"{p['system_busy'] * 100:.0f} %"]
        for row, value in zip(detail_rows, values):
            row.append(value)
    c.print_table(["product detail"] + [p["label"] for p in shown], detail_rows)
    print(f"PUT bodies: {n} x {PACKAGES_PER_INTEGRATION} packages, {body_bytes:,} bytes in all")
    print("rerun:", c.rerun_command())
    return 0


if __name__ == "__main__":
    sys.exit(main())
