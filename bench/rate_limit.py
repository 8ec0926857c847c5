"""Living within Kombo's rate limit: 400 publications through the real stack (PostgreSQL, Redis,
a Celery worker with 4 processes) to a sandbox that allows 20 requests a second and answers 429
beyond it. Compared side by side: pacing off (retries only) and pacing on (shared GCRA schedule
in Redis at 19 a second, a little under the limit). Target: all succeed within 1.2 x 400/20 = 24 s, at most 5 % of
requests answered 429.

    python bench/rate_limit.py [--small]      (--small: 100 publications)
"""
import argparse
import sys
import time

import _common as c

LIMIT = 20
# Its own Redis database, so it can run beside the other benchmarks.
BROKER = "redis://127.0.0.1:6379/12"
# Pace a little under Kombo's limit: Kombo counts in windows whose edges we cannot see.
PACING_RATE = 19


def run(mode, count):
    from packages_app.sandbox import KomboSandbox

    rate = {"pacing-off": 0, "pacing-on": PACING_RATE}[mode]
    with c.BenchRun(f"rate_{mode.replace('-', '_')}") as bench:
        sandbox = KomboSandbox(api_key=c.API_KEY, rate_limit_per_second=LIMIT).start()
        bench.on_exit(sandbox.stop)
        env = bench.start_django(sandbox, broker_url=BROKER, KOMBO_RATE_LIMIT_PER_SECOND=rate,
                                 KOMBO_MAX_ATTEMPTS=20, KOMBO_RETRY_BASE_SECONDS=0.5,
                                 KOMBO_RETRY_MAX_WAIT_SECONDS=10)
        from packages_app import publishing
        from packages_app.models import Publication

        packages = c.make_packages(5)
        integrations = c.make_integrations(count, lambda n: packages)
        worker = c.Worker(env, bench.log_dir / f"rate_{mode}.log", concurrency=4).wait_ready()
        bench.on_exit(worker.stop)
        sandbox.reset()
        started = time.monotonic()
        pubs = publishing.publications_create(integrations=integrations)
        done_at = c.wait_all_final([p.pk for p in pubs], timeout=180)
        elapsed = done_at - started
        statuses = [r.status for r in sandbox.requests("PUT")]
        succeeded = Publication.objects.filter(status="succeeded").count()
        return {
            "mode": mode, "count": count, "elapsed": elapsed, "succeeded": succeeded,
            "requests": len(statuses), "429": statuses.count(429),
        }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--child", choices=["pacing-off", "pacing-on"])
    args = parser.parse_args()
    count = 100 if args.small else 400
    if args.child:
        c.emit_json(run(args.child, count))
        return
    c.header(f"Rate limit: {count} publications, Kombo allows {LIMIT}/s, worker concurrency 4")
    rows = []
    for mode in ("pacing-off", "pacing-on"):
        r = c.run_child([sys.argv[0], "--child", mode] + (["--small"] if args.small else []), timeout=400)
        ideal = count / LIMIT
        rows.append([mode, f"{r['succeeded']}/{count}", f"{r['elapsed']:.1f} s", f"{r['elapsed'] / ideal:.2f}x",
                     r["requests"], r["429"], f"{100 * r['429'] / max(1, r['requests']):.1f} %"])
    c.print_table(["mode", "succeeded", "time", "vs ideal", "requests", "429s", "429 share"], rows,
                  title=f"ideal time {count}/{LIMIT} = {count / LIMIT:.0f} s; target <= 1.2x and <= 5 % 429s")
    print("rerun:", c.rerun_command())


if __name__ == "__main__":
    main()
