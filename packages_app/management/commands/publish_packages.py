"""Publish integrations from a script or cron: the same publishing engine and guards as the admin,
and the same review of what Kombo would delete (publish_review: Kombo's current list, open orders)."""
import time

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import ngettext

from packages_app import publishing, selectors
from packages_app.models import Integration, Publication
from packages_app.publish_review import publish_review


def _count(count, noun):
    """"1 package", "2,500 packages"."""
    return ngettext("%(count)s " + noun, "%(count)s " + noun + "s", count) % {"count": f"{count:,}"}


class Command(BaseCommand):
    help = (
        "Publish the package lists of integrations to Kombo. Prints what each publish changes; "
        "exits non-zero if anything is refused or fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("--integration", action="append", default=[], metavar="ID",
                            help="Kombo integration id (tool:identifier). Repeatable.")
        parser.add_argument("--all-out-of-sync", action="store_true",
                            help="Every active integration whose packages differ from the last publish.")
        parser.add_argument("--dry-run", action="store_true", help="Print the changes, send nothing.")
        parser.add_argument("--force", action="store_true",
                            help="Publish integrations that are already in sync too.")
        parser.add_argument("--allow-removals", action="store_true",
                            help="Allow publishes that remove many packages, send an empty list, remove "
                                 "packages only Kombo had or packages with open orders (or whose open "
                                 "orders could not be read).")
        parser.add_argument("--wait", action="store_true",
                            help="Wait for each publication to end and print its final state.")
        parser.add_argument("--timeout", type=float, default=600.0,
                            help="Seconds --wait waits at most (default 600).")

    def handle(self, *args, **options):
        queryset = self._select(options)
        previews = selectors.integrations_preview(queryset)
        if not previews:
            self.stdout.write("No integrations to publish.")
            return
        review = publish_review(previews, publish_anyway=options["force"])
        summary = review.summary
        for preview in review.previews:
            self._print_preview(preview)
        if not review.read:
            self.stdout.write(f"Compared with what we last published: Kombo's current lists were not read "
                              f"because {review.not_read_reason}")
        elif review.unread:
            asked = sum(1 for p in review.previews if p.readback is not None)
            self.stdout.write(f"Kombo's current list could not be read for {len(review.unread)} of "
                              f"{_count(asked, 'integration')}: compared with what we last published (see each).")
        open_orders = sum(p.open_orders_total for p in summary.chosen)
        if open_orders:
            self.stdout.write(f"Open orders on the packages to remove: {open_orders:,}.")
        refused = [] if options["allow_removals"] else summary.risky
        refused_pks = {p.integration.pk for p in refused}
        chosen = [p for p in summary.chosen if p.integration.pk not in refused_pks]
        # The totals last, where a long listing ends.
        in_sync = 0 if options["force"] else len(summary.in_sync)
        self.stdout.write(
            f"In all: {_count(summary.count, 'integration')}, "
            f"{len(summary.chosen):,} to publish ({_count(summary.additions, 'package')} to add, "
            f"{summary.changes:,} to change, {summary.removals:,} to remove); skipped {in_sync:,} in sync, "
            f"{len(summary.paused):,} paused."
        )
        if refused:
            for p in refused:
                self.stderr.write(f"Refused: {p.integration.kombo_integration_id} "
                                  f"{'; '.join(p.tick_reason_texts)}.")
            self.stderr.write("Run again with --allow-removals to confirm.")
        if options["dry_run"]:
            self.stdout.write(f"Dry run: {_count(len(chosen), 'integration')} would be published; nothing sent.")
            if refused:
                raise CommandError("Some publishes need --allow-removals.", returncode=2)
            return
        publications = []
        if chosen:
            try:
                publications = publishing.publications_create(
                    integrations=[p.integration for p in chosen],
                    expected_sha256={p.integration.pk: p.plan.sha256 for p in chosen},
                )
            except (publishing.CatalogueChanged, publishing.IntegrationPaused) as exc:
                raise CommandError(f"{exc} Nothing was published.")
        for publication in publications:
            note = "" if publication.enqueued else " (broker unreachable: the sweep will send it)"
            self.stdout.write(
                f"Queued publication #{publication.pk} for {publication.integration.kombo_integration_id}{note}"
            )
        failed = self._wait(publications, options["timeout"]) if options["wait"] else []
        if refused or failed:
            raise CommandError(
                f"{_count(len(failed), 'publication')} failed, {len(refused)} refused.", returncode=1
            )

    def _select(self, options):
        ids = options["integration"]
        if not ids and not options["all_out_of_sync"]:
            raise CommandError("Name integrations with --integration, or use --all-out-of-sync.")
        if ids:
            found = set(Integration.objects.filter(kombo_integration_id__in=ids)
                        .values_list("kombo_integration_id", flat=True))
            missing = [i for i in ids if i not in found]
            if missing:
                raise CommandError(ngettext("Unknown integration: %(ids)s", "Unknown integrations: %(ids)s",
                                            len(missing)) % {"ids": ", ".join(missing)})
            queryset = Integration.objects.filter(kombo_integration_id__in=ids)
        else:
            queryset = Integration.objects.none()
        if options["all_out_of_sync"]:
            queryset = queryset | selectors.out_of_sync_integrations()
        return queryset

    def _print_preview(self, p):
        i = p.integration
        head = f"{i.kombo_integration_id} ({i.name}):"
        if p.paused:
            self.stdout.write(f"{head} paused, skipped")
            return
        if p.in_sync:
            self.stdout.write(f"{head} no changes ({p.diff.unchanged_count} unchanged)")
            return
        d = p.diff
        self.stdout.write(f"{head} {len(d.added)} added, {len(d.changed)} changed, "
                          f"{len(d.removed)} removed, {d.unchanged_count} unchanged")
        self.stdout.write(f"  {p.compared_with_text}")
        for a in d.added:
            self.stdout.write(f"  + {a['id']}  {a['name']} ({a['type']})")
        for c in d.changed:
            for f in c.changes:
                self.stdout.write(f"  ~ {c.id}  {f.field}: {f.old!r} -> {f.new!r}")
        for r in p.removal_rows:
            notes = ["Kombo will mark it deleted"]
            if r.kombo_only:
                notes.append("only at Kombo: never published by us")
            if r.open_orders:
                notes.append(f"{r.open_orders:,} open order{'s' if r.open_orders != 1 else ''}")
            elif r.open_orders is None and p.orders_error:
                notes.append(f"open orders not read: {p.orders_error}")
            self.stdout.write(f"  - {r.entry['id']}  {r.entry['name']}  ({'; '.join(notes)})")
        if not p.plan.body["packages"]:
            self.stdout.write("  ! empty list: Kombo will mark every package deleted")

    def _wait(self, publications, timeout):
        pending = {p.pk for p in publications}
        failed = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for p in Publication.objects.filter(pk__in=pending, status__in=Publication.FINAL_STATUSES) \
                    .select_related("integration"):
                pending.discard(p.pk)
                line = f"#{p.pk} {p.integration.kombo_integration_id}: {p.status}"
                if p.warnings:
                    line += f" with {_count(len(p.warnings), 'warning')}: " + "; ".join(p.warnings)
                if p.status == Publication.Status.FAILED:
                    failed.append(p)
                    self.stderr.write(f"{line}: {p.failure_reason}")
                else:
                    self.stdout.write(line)
            if pending:
                time.sleep(0.2)
        for pk in sorted(pending):
            failed.append(pk)
            self.stderr.write(f"#{pk}: still not final after {timeout:g} s")
        return failed
