"""One integration offering 10,000 packages: the cost of building, showing and sending its body.

    python bench/large_catalogue.py [--small]

- publishing.publication_plan(integration=...): build the body and its canonical bytes and hash,
  median of 5, with the packages already prefetched (pure Python) and from a fresh Integration
  (includes loading the 10,000 packages from PostgreSQL);
- the publish confirmation page (Django test Client GET, superuser), median of 5 after a warm-up,
  before the first publish (every package is listed "to add") and after it (in sync);
- publish it with a real worker (celery ... worker --pool solo): peak RSS (VmHWM of the worker
  process from /proc after the publication is final, against VmHWM when it was ready), the time
  from publications_create to final, and the size of the PUT the sandbox received;
- for orientation, the other pages that show the whole list: the publication's page (the pretty
  body) and the integration's change form (the packages selector), median of 3.

--small: 2,000 packages.
"""
import argparse
import statistics
import sys
import time

import _common as c  # bench/ is on sys.path when run as a script


def timed(fn, repeat, warmup=0):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def page(client, url, params=None):
    def call():
        response = client.get(url, params or {})
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} -> {response.status_code}")
        page.size = len(response.content)
        return response
    return call


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="2,000 packages instead of 10,000")
    args = parser.parse_args()
    n_packages = 2000 if args.small else 10000
    c.header(f"large catalogue: one integration offering {n_packages:,} packages")

    from packages_app.sandbox import KomboSandbox

    sandbox = KomboSandbox(api_key=c.API_KEY).start()
    with c.BenchRun("large_catalogue") as run:
        run.on_exit(sandbox.stop)
        env = run.start_django(sandbox)

        from django.test import Client
        from django.urls import reverse

        from packages_app import publishing
        from packages_app.models import Integration

        packages = c.make_packages(n_packages)
        integration, = c.make_integrations(1, lambda i: packages, prefix="Large")
        user = c.make_superuser()
        c.analyze()
        client = Client()
        client.force_login(user)
        publish_url = reverse("admin:packages_app_integration_publish")
        rows, sizes = [], {}

        # --- build and hash --------------------------------------------------------------------
        prefetched = Integration.objects.prefetch_related("packages").get(pk=integration.pk)
        plan_pure, _ = timed(lambda: publishing.publication_plan(integration=prefetched), 5, warmup=1)
        plan_fresh, _ = timed(
            lambda: publishing.publication_plan(integration=Integration.objects.get(pk=integration.pk)), 5)
        plan = publishing.publication_plan(integration=prefetched)
        rows.append(["publication_plan, packages prefetched (build + bytes + sha256)", c.ms(plan_pure), ""])
        rows.append([f"publication_plan, fresh Integration (+ loading {n_packages:,} packages)", c.ms(plan_fresh), ""])

        # --- confirmation page, never published ----------------------------------------------
        confirm_first, _ = timed(page(client, publish_url, {"ids": integration.pk}), 5, warmup=1)
        sizes["confirm_first"] = page.size
        rows.append([f"confirmation page, never published ({n_packages:,} to add)", c.ms(confirm_first),
                     f"{page.size:,} B"])

        # --- publish with a solo worker --------------------------------------------------------
        worker = c.Worker(env, run.log_dir / "large-catalogue-worker.log", pool="solo")
        run.on_exit(worker.stop)
        worker.wait_ready()
        time.sleep(0.3)
        hwm_ready = c.proc_status_kib(worker.pid, "VmHWM")
        t0 = time.monotonic()
        publication, = publishing.publications_create(integrations=[integration], requested_by=user)
        t_created = time.monotonic()
        c.wait_all_final([publication.pk], timeout=120, interval=0.05)
        t_final = time.monotonic()
        hwm_after = c.proc_status_kib(worker.pid, "VmHWM")
        rss_after = c.proc_status_kib(worker.pid, "VmRSS")
        worker.stop()
        publication.refresh_from_db()
        put, = sandbox.requests("PUT")
        if publication.status != "succeeded":
            raise RuntimeError(f"publication ended {publication.status}: {publication.failure_reason}")
        if put.body != plan.body_bytes:
            raise RuntimeError("the PUT body is not the planned body")

        # --- pages after the publish -------------------------------------------------------------
        confirm_again, _ = timed(page(client, publish_url, {"ids": integration.pk}), 5, warmup=1)
        sizes["confirm_again"] = page.size
        rows.append([f"confirmation page, in sync ({n_packages:,} unchanged)", c.ms(confirm_again),
                     f"{page.size:,} B"])
        pub_page, _ = timed(page(client, reverse("admin:packages_app_publication_change",
                                                 args=[publication.pk])), 3, warmup=1)
        rows.append(["publication page (pretty body) [orientation]", c.ms(pub_page), f"{page.size:,} B"])
        int_page, _ = timed(page(client, reverse("admin:packages_app_integration_change",
                                                 args=[integration.pk])), 3, warmup=1)
        rows.append(["integration change form (packages selector) [orientation]", c.ms(int_page),
                     f"{page.size:,} B"])
        publish_rows = [
            ["publications_create (snapshot + enqueue)", c.ms(t_created - t0)],
            ["publications_create -> publication final (solo worker)", c.ms(t_final - t0)],
            ["PUT body size", f"{len(put.body):,} bytes"],
            ["PUT handled by the sandbox in", c.ms((put.ended_at or put.started_at) - put.started_at)],
            ["worker VmHWM when ready", f"{hwm_ready / 1024:.1f} MiB"],
            ["worker VmHWM after the publication (peak RSS)", f"{hwm_after / 1024:.1f} MiB"],
            ["peak RSS increase for this publication", f"{(hwm_after - hwm_ready) / 1024:.1f} MiB"],
            ["worker VmRSS after the publication", f"{rss_after / 1024:.1f} MiB"],
            ["publication status", f"{publication.status} (HTTP {publication.http_status})"],
        ]

    c.print_table(["operation (median)", "time", "response size"], rows)
    c.print_table(["publishing it (one run)", "value"], publish_rows)
    print("rerun:", c.rerun_command())
    return 0


if __name__ == "__main__":
    sys.exit(main())
