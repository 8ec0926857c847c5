"""Latency from the confirming POST in the admin to the PUT arriving at Kombo (the sandbox).

    python bench/latency.py [--small]

100 publishes (--small: 20), one at a time, each of its own integration: the confirmation page is
read first (for the sha256 fields, as staff's browser would), then the clock starts, the POST
(post=yes) goes through Django's test Client as a superuser, and the clock stops at the
RecordedRequest.started_at of the PUT in the in-process KomboSandbox (both time.monotonic() in
the same process). Each publish waits for the previous one to be final, and publishes are spaced
at least 250 ms apart so that the app's default pacing (5 requests/s) never adds a wait: this is
the latency of an idle system. One warm-up publish is not counted.

Runs twice, each broker in its own child process (the Celery app reads the broker URL at start):
Redis (DB 13) and the embedded filesystem broker (APP_VAR_DIR in a temp dir, shared with the
worker). Worker: celery -A kombo_admin worker --pool prefork --concurrency 2.
"""
import argparse
import re
import sys
import time

import _common as c  # bench/ is on sys.path when run as a script

SPACING = 0.25
PACKAGES_PER_INTEGRATION = 3


def child(broker, count):
    from packages_app.sandbox import KomboSandbox

    sandbox = KomboSandbox(api_key=c.API_KEY).start()
    with c.BenchRun(f"latency_{broker}") as run:
        run.on_exit(sandbox.stop)
        broker_url = c.REDIS_URL if broker == "redis" else "filesystem://"
        env = c.base_env(db_name=run.db_name, broker_url=broker_url, kombo_url=sandbox.url,
                         var_dir=run.var_dir)
        c.setup_django(env)
        if broker == "redis":
            c.claim_redis()
            run.on_exit(c.release_redis)

        from django.test import Client
        from django.urls import reverse

        from packages_app.models import Publication

        catalogue = c.make_packages(20)
        integrations = c.make_integrations(count + 1, lambda i: catalogue[i % 17:][:PACKAGES_PER_INTEGRATION])
        user = c.make_superuser()
        c.analyze()
        client = Client()
        client.force_login(user)
        url = reverse("admin:packages_app_integration_publish")

        worker = c.Worker(env, run.log_dir / f"latency-worker-{broker}.log", pool="prefork", concurrency=2)
        run.on_exit(worker.stop)
        worker.wait_ready()
        time.sleep(0.5)

        samples = []
        last_post = 0.0
        for n, integration in enumerate(integrations):
            page = client.get(url, {"ids": str(integration.pk)})
            assert page.status_code == 200, page.status_code
            data = {"post": "yes", "ids": str(integration.pk)}
            data.update(dict(re.findall(r'name="(sha256-\d+)" value="([0-9a-f]{64})"', page.content.decode())))
            time.sleep(max(0.0, last_post + SPACING - time.monotonic()))

            t0 = time.monotonic()
            response = client.post(url, data)
            t_posted = time.monotonic()
            last_post = t0
            if response.status_code != 302:
                raise RuntimeError(f"POST answered {response.status_code}")
            put = wait_put(sandbox, integration.kombo_integration_id, timeout=30)
            publication = Publication.objects.get(integration=integration)
            c.wait_all_final([publication.pk], timeout=30, interval=0.01)
            if n == 0:
                continue  # warm-up
            samples.append({"latency": put.started_at - t0, "post": t_posted - t0,
                            "after_post": put.started_at - t_posted})
        statuses = list(Publication.objects.values_list("status", flat=True))
    c.emit_json({"broker": broker, "samples": samples,
                 "succeeded": statuses.count("succeeded"), "total": len(statuses)})


def wait_put(sandbox, integration_id, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sandbox.requests("PUT", integration_id=integration_id)
        if found:
            return found[0]
        time.sleep(0.002)
    raise RuntimeError(f"no PUT for {integration_id} after {timeout} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="20 publishes per broker instead of 100")
    parser.add_argument("--broker", choices=["redis", "filesystem"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    count = 20 if args.small else 100
    if args.broker:
        return child(args.broker, count)

    c.header(f"latency: confirming POST -> PUT at the sandbox, {count} publishes per broker")
    results = []
    for broker in ("redis", "filesystem"):
        argv = [__file__, "--broker", broker] + (["--small"] if args.small else [])
        results.append(c.run_child(argv, timeout=170))

    rows = []
    for r in results:
        lat = [s["latency"] for s in r["samples"]]
        post = [s["post"] for s in r["samples"]]
        after = [s["after_post"] for s in r["samples"]]
        rows.append([r["broker"], len(lat), c.ms(c.median(lat)), c.ms(c.percentile(lat, 95)),
                     c.ms(min(lat)), c.ms(max(lat)), c.ms(c.median(post)), c.ms(c.median(after)),
                     f"{r['succeeded']}/{r['total']}"])
    c.print_table(["broker", "n", "median", "p95", "min", "max", "POST itself (median)",
                   "POST return -> PUT (median)", "succeeded"], rows)
    print("latency = RecordedRequest.started_at of the PUT - time.monotonic() just before client.post().")
    print("rerun:", c.rerun_command())
    return 0


if __name__ == "__main__":
    sys.exit(main())
