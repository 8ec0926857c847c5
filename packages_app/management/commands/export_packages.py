"""Export the whole catalogue as JSON (Kombo's request shape) or CSV."""
from pathlib import Path

from django.core.management.base import BaseCommand

from packages_app import catalogue_io


class Command(BaseCommand):
    help = ("Write the catalogue as JSON ({\"packages\": [...], \"plans\": [...]}, sorted by id and name) "
            "or CSV (packages only).")

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["json", "csv"], default="json")
        parser.add_argument("--output", "-o", help="File to write (default: standard output).")

    def handle(self, *args, format, output=None, **options):
        content = catalogue_io.export_json() if format == "json" else catalogue_io.export_csv()
        if output:
            Path(output).write_text(content, encoding="utf-8")
            self.stderr.write(f"Wrote {output}")
        else:
            self.stdout.write(content, ending="")
