"""CPU the engine spends per publication, in this process, without Celery: the steady figure behind
bench/throughput.py's ratios (which move with the machine's load).

    python bench/engine_cpu.py [--messages N] [--profile]

For messages of 1 and of 10 publications, publications_execute runs against an in-process sandbox
answering at once (pacing off, PostgreSQL, production settings: DEBUG off). Reported per
publication: the CPU time of the calling thread and of the engine's sender thread (Django building
and running the statements, requests sending the PUT and reading the answer; the sandbox's threads
are not counted), the statements it ran, and the same CPU for a bare `requests` PUT of the same bodies over
one session, so the engine's own share is the difference. --profile SIZE prints the top functions of a
cProfile run over the messages of SIZE (1 or 10; cumulative time).
"""
import argparse
import cProfile
import pstats
import statistics
import sys
import threading
import time

import _common as c  # bench/ is on sys.path when run as a script

PACKAGES_PER_INTEGRATION = 50
ROUNDS = 5


def engine_cpu_seconds():
    """CPU time of this thread and of the engine's sender thread (the PUTs go from there; the
    in-process sandbox's threads are not counted)."""
    senders = [t for t in threading.enumerate() if t.name.startswith("kombo-put") and t.ident]
    return time.thread_time() + sum(time.clock_gettime(time.pthread_getcpuclockid(t.ident)) for t in senders)


def bare_puts_cpu(url, items):
    """CPU per PUT of a plain requests.Session loop over `items` (kombo id, body bytes)."""
    import requests

    session = requests.Session()
    session.put(f"{url}/assessment/packages", data=items[0][1], timeout=10,
                headers={"Authorization": f"Bearer {c.API_KEY}", "X-Integration-Id": items[0][0],
                         "Content-Type": "application/json"})
    t0, w0 = time.thread_time(), time.monotonic()
    for kombo_id, body in items:
        session.put(f"{url}/assessment/packages", data=body, timeout=10,
                    headers={"Authorization": f"Bearer {c.API_KEY}", "X-Integration-Id": kombo_id,
                             "Content-Type": "application/json"})
    return (time.thread_time() - t0) / len(items), (time.monotonic() - w0) / len(items)


def run_messages(integrations, size, messages):
    """publications_execute over `messages` messages of `size`: (CPU per publication, wall time per
    publication, statements per message, every status)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from packages_app import publishing

    pubs = publishing.publications_create(integrations=integrations[:size * messages])
    ids = [p.pk for p in pubs]
    chunks = [ids[i:i + size] for i in range(0, len(ids), size)]
    statuses, statements = [], []
    t0, w0 = engine_cpu_seconds(), time.monotonic()
    for chunk in chunks:
        with CaptureQueriesContext(connection) as ctx:
            results = publishing.publications_execute(publication_ids=chunk, time_budget=60, time_limit=300)
        statements.append(len(ctx.captured_queries))
        statuses += [r.status for r in results]
    cpu, wall = (engine_cpu_seconds() - t0) / len(ids), (time.monotonic() - w0) / len(ids)
    return cpu, wall, statistics.median(statements) if statements else 0, statuses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10, help="messages per size and round (default 10)")
    parser.add_argument("--profile", type=int, choices=(1, 10), help="print a cProfile of the messages of this size")
    args = parser.parse_args()
    c.header("Engine CPU per publication, in process (bench/engine_cpu.py)")

    from packages_app.sandbox import KomboSandbox

    sandbox = KomboSandbox(api_key=c.API_KEY).start()
    with c.BenchRun("engine_cpu") as run:
        run.on_exit(sandbox.stop)
        run.start_django(sandbox, KOMBO_RATE_LIMIT_PER_SECOND=0, DJANGO_DEBUG="false",
                         DJANGO_SECRET_KEY="bench-engine-cpu-" + "x" * 40)
        from django.conf import settings

        from packages_app.models import Integration, Publication

        needed = 10 * args.messages * ROUNDS + 1 * args.messages * ROUNDS + 20
        packages = c.make_packages(100)
        c.make_integrations(needed, lambda i: packages[i % 50:i % 50 + PACKAGES_PER_INTEGRATION])
        c.analyze()
        integrations = list(Integration.objects.order_by("pk"))
        settings.KOMBO_RATE_LIMIT_PER_SECOND = 0
        # Warm-up: connections, the client's session, Django's caches.
        run_messages(integrations[:20], 10, 2)
        integrations = integrations[20:]
        items = [(kombo_id, body.encode()) for kombo_id, body in Publication.objects.order_by("pk")
                 .values_list("integration__kombo_integration_id", "body")[:20]]
        figures, walls = {1: [], 10: []}, {1: [], 10: []}
        statements = {}
        profile = cProfile.Profile() if args.profile else None
        for _ in range(ROUNDS):
            for size in (1, 10):
                take = size * args.messages
                batch, integrations = integrations[:take], integrations[take:]
                if profile and size == args.profile:
                    profile.enable()
                cpu, wall, stmts, statuses = run_messages(batch, size, args.messages)
                if profile and size == args.profile:
                    profile.disable()
                bad = [s for s in statuses if s != "succeeded"]
                if bad:
                    raise RuntimeError(f"messages of {size} ended {sorted(set(bad))}")
                figures[size].append(cpu)
                walls[size].append(wall)
                statements[size] = stmts
        bare_runs = [bare_puts_cpu(sandbox.url, items) for _ in range(3)]
        bare = statistics.median(cpu for cpu, _ in bare_runs)
        bare_wall = statistics.median(wall for _, wall in bare_runs)
        rows = []
        for size in (1, 10):
            med, wall = statistics.median(figures[size]), statistics.median(walls[size])
            rows.append([f"message of {size}", f"{med * 1000:.2f} ms",
                         f"{min(figures[size]) * 1000:.2f}-{max(figures[size]) * 1000:.2f} ms",
                         f"{(med - bare) * 1000:.2f} ms", f"{wall * 1000:.2f} ms",
                         f"{(wall - bare_wall) * 1000:.2f} ms", f"{statements[size]:g}"])
        rows.append(["bare requests PUT (same server)", f"{bare * 1000:.2f} ms", "", "",
                     f"{bare_wall * 1000:.2f} ms", "", ""])
        c.print_table(["", "CPU per publication (median)", f"range over {ROUNDS} rounds",
                       "engine's own CPU (minus bare PUT)", "wall time per publication",
                       "engine's own wall time", "statements per message"], rows)
        if profile:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(35)
    print(f"Rerun: {c.rerun_command()}")


if __name__ == "__main__":
    sys.exit(main())
