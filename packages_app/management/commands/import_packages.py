"""Import the catalogue from a JSON or CSV file: all rows checked first, all or nothing."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from packages_app import catalogue_io


class Command(BaseCommand):
    help = ("Add and update packages (and, from JSON, plans) from a JSON ({\"packages\": [...], \"plans\": [...]}) "
            "or CSV (id,type,name,description) file.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path to the file, or - for standard input.")
        parser.add_argument("--format", choices=["json", "csv"], help="Default: from the file name or content.")

    def handle(self, *args, file, format=None, **options):
        import sys

        if file == "-":
            data, name = sys.stdin.buffer.read(), "stdin"
        else:
            path = Path(file)
            if not path.is_file():
                raise CommandError(f"No such file: {file}")
            data, name = path.read_bytes(), path.name
        try:
            result = catalogue_io.catalogue_import(data=data, filename=name, fmt=format,
                                                   via=f"import_packages {name}")
        except catalogue_io.ImportFormatError as exc:
            raise CommandError(f"{name}: {exc} Nothing was imported.")
        if not result.ok:
            for error in result.errors:
                self.stderr.write(f"{name} {error}")
            raise CommandError(result.summary())
        self.stdout.write(f"{name}: {result.summary()}")
