"""Publications per second: the product (publications_create -> Redis -> 4 prefork Celery
processes -> PUT) against a bare loop of 4 threads sending the same PUT bodies to the same sandbox.

    python bench/throughput.py [--small]

500 integrations x 50 packages (--small: 100 x 50); KomboSandbox in this process, latency 20 ms.
The product runs twice: with the app's settings as they are (KOMBO_RATE_LIMIT_PER_SECOND at its
default, if the app has that setting) and with KOMBO_RATE_LIMIT_PER_SECOND=0 (pacing off), so the
machinery's own cost can be told apart from the deliberate pacing. For the same reason it also
times (c): services.publication_execute called directly in this process, one at a time (no Celery),
and prints the CPU time each path spends per publication.
"""
import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import _common as c  # bench/ is on sys.path when run as a script

LATENCY = 0.02
THREADS = 4
PACKAGES_PER_INTEGRATION = 50
CATALOGUE_SIZE = 100
DIRECT_COUNT = 101  # (c): one warm-up + 100 measured


def bare_loop(url, items, threads=THREADS):
    """PUT every (integration_id, body) once with `threads` threads, one requests.Session each,
    the headers the app's KomboClient sends. Returns (seconds, statuses)."""
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
    started = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.monotonic() - started, statuses


def bare_child(bodies_path, url):
    """--bare-child: the same loop from a separate process (no GIL shared with the sandbox)."""
    items = [(iid, body.encode("utf-8")) for iid, body in json.loads(Path(bodies_path).read_text())]
    cpu0 = time.process_time()
    seconds, statuses = bare_loop(url, items)
    c.emit_json({"seconds": seconds, "ok": sum(1 for s in statuses if s == 200), "n": len(statuses),
                 "cpu": time.process_time() - cpu0})


def run_direct(sandbox, count):
    """publication_execute called in this process for `count` publications, sequentially, pacing
    off. Their queue messages are flushed unread afterwards (claim_redis before the product)."""
    from django.conf import settings

    from packages_app import services
    from packages_app.models import Integration

    sandbox.reset()
    saved = getattr(settings, "KOMBO_RATE_LIMIT_PER_SECOND", None)
    settings.KOMBO_RATE_LIMIT_PER_SECOND = 0
    try:
        publications = services.publications_create(integrations=list(Integration.objects.order_by("pk")[:count]))
        services.publication_execute(publication_id=publications[0].pk)  # warm-up: connection, client
        rest = publications[1:]
        cpu0, t0 = time.thread_time(), time.monotonic()
        results = [services.publication_execute(publication_id=p.pk).status for p in rest]
        seconds, cpu = time.monotonic() - t0, time.thread_time() - cpu0
    finally:
        settings.KOMBO_RATE_LIMIT_PER_SECOND = saved
    return {"n": len(rest), "seconds": seconds, "cpu": cpu, "succeeded": results.count("succeeded")}


def run_product(run, env, sandbox, label, extra_env, timeout):
    """Worker first (ready), then time publications_create -> every publication final."""
    from django.db.models import Count

    from packages_app import services
    from packages_app.models import Integration, Publication

    sandbox.reset()
    c.claim_redis()  # the queue and any pacing state of an earlier run
    worker = c.Worker({**env, **extra_env}, run.log_dir / f"throughput-worker-{label}.log",
                      pool="prefork", concurrency=THREADS)
    try:
        worker.wait_ready()
        time.sleep(0.5)  # let the prefork children finish booting
        integrations = list(Integration.objects.order_by("pk"))
        worker_cpu0, own_cpu0, system0 = worker.cpu_seconds(), c.proc_cpu_seconds(os.getpid()), c.system_cpu()
        t0 = time.monotonic()
        publications = services.publications_create(integrations=integrations)
        t_created = time.monotonic()
        pks = [p.pk for p in publications]
        t_final = c.wait_all_final(pks, timeout=timeout)
        worker_cpu, own_cpu = worker.cpu_seconds() - worker_cpu0, c.proc_cpu_seconds(os.getpid()) - own_cpu0
        system_share = c.cpu_share(system0, c.system_cpu())
    finally:
        worker.stop()
    # A task for a row that is not in our database came from someone else on the same broker DB.
    foreign = worker.output().count("does not exist; nothing to do")
    puts = sandbox.requests("PUT")
    counts = dict(Publication.objects.filter(pk__in=pks).values_list("status")
                  .annotate(n=Count("pk")).order_by())
    first_put = min(r.started_at for r in puts) - t0
    last_put_end = max(r.ended_at or r.started_at for r in puts) - t0
    return {
        "n": len(pks), "seconds": t_final - t0, "create_s": t_created - t0,
        "first_put_s": first_put, "last_put_end_s": last_put_end, "puts": len(puts),
        "steady_rate": len(puts) / (last_put_end - first_put) if last_put_end > first_put else float("nan"),
        "counts": counts, "succeeded": counts.get("succeeded", 0),
        "not_enqueued": sum(1 for p in publications if p.enqueued is not True),
        "max_in_flight": sandbox.max_in_flight(), "foreign": foreign,
        "worker_cpu_ms": worker_cpu * 1000 / len(pks), "bench_cpu_ms": own_cpu * 1000 / len(pks),
        "system_busy": system_share,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="100 integrations instead of 500")
    parser.add_argument("--bare-child", nargs=2, metavar=("BODIES_JSON", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        return bare_child(*args.bare_child)

    n = 100 if args.small else 500
    c.header(f"throughput: {n} integrations x {PACKAGES_PER_INTEGRATION} packages, sandbox latency "
             f"{LATENCY * 1000:.0f} ms, bare loop {THREADS} threads vs worker --concurrency {THREADS} prefork")

    from packages_app.sandbox import KomboSandbox

    sandbox = KomboSandbox(api_key=c.API_KEY, latency=LATENCY).start()
    with c.BenchRun("throughput") as run:
        run.on_exit(sandbox.stop)
        env = run.start_django(sandbox)

        from django.conf import settings

        from packages_app import services
        from packages_app.models import Integration

        default_rate = getattr(settings, "KOMBO_RATE_LIMIT_PER_SECOND", None)

        catalogue = c.make_packages(CATALOGUE_SIZE)
        c.make_integrations(
            n, lambda i: catalogue[i % (CATALOGUE_SIZE - PACKAGES_PER_INTEGRATION + 1):][:PACKAGES_PER_INTEGRATION],
        )
        c.analyze()
        integrations = list(Integration.objects.prefetch_related("packages").order_by("pk"))
        items = [(i.kombo_integration_id, services.publication_plan(integration=i).body_bytes)
                 for i in integrations]
        body_bytes = sum(len(b) for _, b in items)

        # (a) bare loop, threads in this process (they share the GIL with the sandbox's threads)
        bare_s, statuses = bare_loop(sandbox.url, items)
        bare_ok = sum(1 for s in statuses if s == 200)

        # (a') the same loop from a child process, as the worker is
        bodies_path = run.var_dir / "bodies.json"
        bodies_path.write_text(json.dumps([[iid, b.decode("utf-8")] for iid, b in items]))
        sandbox.reset()
        parent_cpu0 = time.process_time()
        child = c.run_child([__file__, "--bare-child", str(bodies_path), sandbox.url], timeout=120)
        sandbox_cpu = time.process_time() - parent_cpu0  # this process only serves the sandbox meanwhile

        # (c) the service alone: publication_execute in this process, one at a time, no Celery
        direct = run_direct(sandbox, min(n, DIRECT_COUNT))

        # (b) the product as configured, then (b0) with pacing off
        products = []
        paced_timeout = (n / default_rate + 60) if default_rate else 150
        products.append(("(b) product, app defaults" + (f" (KOMBO_RATE_LIMIT_PER_SECOND={default_rate:g})"
                                                         if default_rate is not None else ""),
                         run_product(run, env, sandbox, "defaults", {}, paced_timeout)))
        if default_rate:
            products.append(("(b0) product, pacing off (KOMBO_RATE_LIMIT_PER_SECOND=0)",
                             run_product(run, env, sandbox, "unpaced", {"KOMBO_RATE_LIMIT_PER_SECOND": "0"}, 150)))

    bare_rate = n / bare_s
    child_rate = child["n"] / child["seconds"]
    rows = [
        ["(a) bare loop, 4 threads in the sandbox's process", f"{bare_s:.2f}", f"{bare_rate:.1f}",
         f"{bare_ok}/{n} HTTP 200"],
        ["(a') bare loop, 4 threads in a child process", f"{child['seconds']:.2f}", f"{child_rate:.1f}",
         f"{child['ok']}/{child['n']} HTTP 200"],
    ]
    for label, p in products:
        rows.append([label, f"{p['seconds']:.2f}", f"{p['n'] / p['seconds']:.1f}",
                     f"{p['succeeded']}/{p['n']} succeeded"])
    rows.append([f"(c) publication_execute in this process, 1 at a time ({direct['n']})",
                 f"{direct['seconds']:.2f}", f"{direct['n'] / direct['seconds']:.1f}",
                 f"{direct['succeeded']}/{direct['n']} succeeded"])
    c.print_table(["run", "seconds", "publications/s", "outcome"], rows)
    cpu_rows = [
        ["(a') bare client (requests), per PUT", f"{child['cpu'] * 1000 / child['n']:.1f} ms"],
        ["sandbox (this process) while serving (a'), per PUT", f"{sandbox_cpu * 1000 / child['n']:.1f} ms"],
        ["(c) publication_execute, per publication (calling thread only)", f"{direct['cpu'] * 1000 / direct['n']:.1f} ms"],
    ] + [[f"{label.split(' ', 1)[0]} worker main + 4 pool processes, per publication", f"{p['worker_cpu_ms']:.1f} ms"]
         for label, p in products]
    c.print_table(["CPU time", "value"], cpu_rows)

    ratio_rows = []
    for label, p in products:
        rate = p["n"] / p["seconds"]
        short = label.split(" ", 1)[0]
        for base_label, base in (("(a)", bare_rate), ("(a')", child_rate)):
            ratio = rate / base
            ratio_rows.append([f"{short} / {base_label}", f"{ratio:.2f}",
                               "meets target" if ratio >= 0.8 else "BELOW TARGET"])
    c.print_table(["product / bare (target >= 0.80)", "ratio", "verdict"], ratio_rows)

    detail_rows = [
        ["publications_create, one call (inserts + enqueues after commit)"],
        ["first PUT reached the sandbox after"],
        ["last PUT finished after"],
        ["rate from first PUT to last PUT (/s)"],
        ["PUTs received by the sandbox"],
        ["final states"],
        ["not enqueued by publications_create"],
        ["max requests in flight at the sandbox"],
        ["foreign tasks on the broker (must be 0)"],
        ["this process's CPU per publication (sandbox, create, polling)"],
        ["machine CPU busy during the run (all cores, all processes)"],
    ]
    for _, p in products:
        values = [c.ms(p["create_s"]), c.ms(p["first_put_s"]), c.ms(p["last_put_end_s"]),
                  f"{p['steady_rate']:.1f}", p["puts"],
                  ", ".join(f"{k} {v}" for k, v in sorted(p["counts"].items())),
                  p["not_enqueued"], p["max_in_flight"], p["foreign"],
                  f"{p['bench_cpu_ms']:.1f} ms", f"{p['system_busy'] * 100:.0f} %"]
        for row, value in zip(detail_rows, values):
            row.append(value)
    c.print_table(["product detail"] + [label.split(" ", 1)[0] for label, _ in products], detail_rows)
    print(f"PUT bodies: {n} x {PACKAGES_PER_INTEGRATION} packages, {body_bytes:,} bytes in all")
    print("rerun:", c.rerun_command())
    return 0


if __name__ == "__main__":
    sys.exit(main())
