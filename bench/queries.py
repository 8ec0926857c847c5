"""Database queries per operation, at a small and a large size: a constant count means no N+1.

    python bench/queries.py [--small]

Counted with django.test.utils.CaptureQueriesContext: one publication_execute (10 vs 10,000
packages, against an in-process KomboSandbox), one batch message's publications_execute (1 vs 10
publications), and admin pages through Django's test Client as a
superuser: the integrations changelist (10 vs 1,000 integrations), the publish confirmation
page (5 vs 50 integrations) and the publications changelist (10 vs 1,000 rows). --small uses
2,000 packages and 200 rows for the large sizes.
"""
import argparse
import statistics
import sys
import time

import _common as c  # bench/ is on sys.path when run as a script

PACKAGES_PER_INTEGRATION = 5
REPEAT = 5  # calls per case: the query count must be the same for all; the time is their median


def counted(*calls):
    """Run each call once, counting its queries: (queries of the first call, median seconds,
    result of the last call, SQL of the first call). Every call must run the same number."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts, times, sql, result = [], [], None, None
    for fn in calls:
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - started)
        counts.append(len(ctx.captured_queries))
        sql = sql or [q["sql"] for q in ctx.captured_queries]
    if len(set(counts)) != 1:
        raise RuntimeError(f"the same call ran different numbers of queries: {counts}")
    return counts[0], statistics.median(times), result, sql


def get(client, url, params=None):
    def call():
        response = client.get(url, params or {})
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} {params} -> {response.status_code}")
        return response
    return call


def add_integrations_with_history(start, count, catalogue, user):
    """`count` integrations offering 5 packages each, with one publication each: every fourth
    failed, the others succeeded with an older body (one package fewer), so pages show diffs,
    badges and sync states."""
    from django.utils import timezone

    from packages_app import payloads
    from packages_app.models import Publication

    integrations = c.make_integrations(
        count, lambda i: catalogue[i % (len(catalogue) - PACKAGES_PER_INTEGRATION):][:PACKAGES_PER_INTEGRATION],
        start=start)
    now = timezone.now()
    rows = []
    for n, integration in enumerate(integrations, start):
        older = catalogue[n % (len(catalogue) - PACKAGES_PER_INTEGRATION):][:PACKAGES_PER_INTEGRATION - 1]
        data = payloads.canonical_bytes(payloads.build_body(older))
        failed = n % 4 == 3
        rows.append(Publication(
            integration=integration, requested_by=user, body=data.decode("utf-8"),
            body_sha256=payloads.body_sha256(data), package_count=len(older),
            status="failed" if failed else "succeeded", attempts=1,
            http_status=400 if failed else 200, error_code="PLATFORM.INPUT_INVALID" if failed else "",
            warnings=[] if failed else ["A warning."], started_at=now, finished_at=now,
        ))
    Publication.objects.bulk_create(rows, batch_size=1000)
    return integrations


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="smaller large sizes (2,000 packages, 200 rows)")
    parser.add_argument("--sql", action="store_true", help="also print the queries of each large-N case")
    args = parser.parse_args()
    big_packages = 2000 if args.small else 10000
    big_rows = 200 if args.small else 1000
    c.header("queries per operation (CaptureQueriesContext)")

    from packages_app.sandbox import KomboSandbox

    sandbox = KomboSandbox(api_key=c.API_KEY).start()
    with c.BenchRun("queries") as run:
        run.on_exit(sandbox.stop)
        # Pacing off: it waits in Redis, not in the database, and would only blur the times.
        run.start_django(sandbox, KOMBO_RATE_LIMIT_PER_SECOND=0)

        from django.test import Client
        from django.urls import reverse

        from packages_app import publishing
        from packages_app.models import Integration, Publication

        user = c.make_superuser()
        client = Client()
        client.force_login(user)
        integrations_url = reverse("admin:packages_app_integration_changelist")
        publications_url = reverse("admin:packages_app_publication_changelist")
        publish_url = reverse("admin:packages_app_integration_publish")

        catalogue = c.make_packages(100)
        rows = []

        # --- changelists at the small size (after one warm-up request each) -----------------
        small = add_integrations_with_history(0, 10, catalogue, user)
        c.analyze()
        for url in (integrations_url, publications_url):
            get(client, url)()
        int_small = counted(*[get(client, integrations_url)] * REPEAT)
        pub_small = counted(*[get(client, publications_url)] * REPEAT)

        # --- and at the large size -----------------------------------------------------------
        large = add_integrations_with_history(10, big_rows - 10, catalogue, user)
        c.analyze()
        int_large = counted(*[get(client, integrations_url)] * REPEAT)
        pub_large = counted(*[get(client, publications_url)] * REPEAT)

        # --- publish confirmation: 5 vs 50 integrations ------------------------------------------
        ids = [i.pk for i in small + large]
        get(client, publish_url, {"ids": ",".join(map(str, ids[:5]))})()
        conf_small = counted(*[get(client, publish_url, {"ids": ",".join(map(str, ids[:5]))})] * REPEAT)
        conf_large = counted(*[get(client, publish_url, {"ids": ",".join(map(str, ids[:50]))})] * REPEAT)

        # --- one publication_execute: 10 vs 10,000 packages -----------------------------------
        many = c.make_packages(big_packages, prefix="big")
        few = c.make_integrations(REPEAT, lambda i: many[:10], prefix="Exec10-")
        big = c.make_integrations(REPEAT, lambda i: many, prefix="ExecBig-")
        warm_int, = c.make_integrations(1, lambda i: many[:3], prefix="ExecWarm-")
        c.analyze()
        pubs = publishing.publications_create(integrations=[warm_int, *few, *big])
        pk = {p.integration_id: p.pk for p in pubs}
        # Nothing consumes the broker here: run them in this process, one publication per call.
        def execute(integration):
            return lambda: publishing.publication_execute(publication_id=pk[integration.pk])
        counted(execute(warm_int))  # warm-up
        exec_small = counted(*[execute(i) for i in few])
        exec_large = counted(*[execute(i) for i in big])
        # --- one batch message (publications_execute): 1 vs 10 publications ------------------
        batch_ints = c.make_integrations(REPEAT + 10 * REPEAT, lambda i: many[:10], prefix="Batch-")
        c.analyze()
        batch_pks = [p.pk for p in publishing.publications_create(integrations=batch_ints)]
        def execute_batch(pks):
            return lambda: publishing.publications_execute(publication_ids=pks)
        batch_small = counted(*[execute_batch([pk]) for pk in batch_pks[:REPEAT]])
        batch_large = counted(*[execute_batch(batch_pks[REPEAT + 10 * i:REPEAT + 10 * (i + 1)])
                                for i in range(REPEAT)])
        statuses = [r.status for r in sandbox.requests("PUT")]
        outcomes = set(Publication.objects.values_list("status", flat=True).filter(
            pk__in=[pk[i.pk] for i in few + big] + batch_pks[:REPEAT + 10 * REPEAT]))
        if outcomes != {"succeeded"}:
            raise RuntimeError(f"publication_execute ended {outcomes} (sandbox said {statuses})")
        integration_count = Integration.objects.count()

    def row(what, small_n, large_n, a, b):
        return [what, small_n, a[0], large_n, b[0], "yes" if a[0] == b[0] else f"NO (+{b[0] - a[0]})",
                c.ms(a[1]), c.ms(b[1])]

    rows = [
        row("publication_execute (packages)", 10, f"{big_packages:,}", exec_small, exec_large),
        row("publications_execute, one batch message (publications)", 1, 10, batch_small, batch_large),
        row("integrations changelist (integrations)", 10, f"{big_rows:,}", int_small, int_large),
        row("publish confirmation ?ids= (integrations)", 5, 50, conf_small, conf_large),
        row("publications changelist (rows)", 10, f"{big_rows:,}", pub_small, pub_large),
    ]
    c.print_table(["what (N counts)", "small N", "queries", "large N", "queries", "equal?",
                   "time small", "time large"], rows)
    print(f"Changelists show 100 rows a page; {integration_count:,} integrations in the database at the end. "
          f"Times: median of {REPEAT} calls (DEBUG=true; the machine is shared), for orientation only.")
    if args.sql:
        for what, case in (("publication_execute", exec_large), ("publications_execute", batch_large),
                           ("integrations changelist", int_large),
                           ("publish confirmation", conf_large), ("publications changelist", pub_large)):
            print(f"-- {what} (large N): {case[0]} queries")
            for sql in case[3]:
                print("   ", sql[:200] + ("…" if len(sql) > 200 else ""))
        print()
    print("rerun:", c.rerun_command())
    return 0


if __name__ == "__main__":
    sys.exit(main())
