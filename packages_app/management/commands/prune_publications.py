"""Delete old publications and their attempts (retention): publishing.publications_prune."""
import argparse

from django.core.management.base import BaseCommand

from packages_app import publishing
from packages_app.publishing.retention import DEFAULT_CHUNK_SIZE


def _whole_number(what):
    def parse(value):
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, 1 or more (got {value!r}).") from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{what} must be 1 or more (got {number}).")
        return number
    return parse


class Command(BaseCommand):
    help = (
        "Delete publications requested more than DAYS days ago, and their attempts, in chunks of "
        "short transactions. Always kept, whatever their age, for each integration: its latest "
        "accepted publication (what Kombo holds: the baseline of every diff and of the sync "
        "status), its latest publication whatever its status (it decides the sync status "
        "\"publishing\" / \"last publish did not complete\"), and every active one (queued, "
        "sending, retrying, waiting). Prints what each chunk removed and the total."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", dest="days", required=True, metavar="DAYS",
                            type=_whole_number("DAYS"),
                            help="Delete publications requested more than this many days ago (1 or more).")
        parser.add_argument("--dry-run", action="store_true",
                            help="Print what would be deleted, chunk by chunk; delete nothing.")
        parser.add_argument("--chunk-size", type=_whole_number("--chunk-size"), default=DEFAULT_CHUNK_SIZE,
                            metavar="N", help=f"Publications per transaction (default {DEFAULT_CHUNK_SIZE}).")

    def handle(self, *args, **options):
        publishing.publications_prune(
            older_than_days=options["days"], dry_run=options["dry_run"],
            chunk_size=options["chunk_size"], log=self.stdout.write,
        )
