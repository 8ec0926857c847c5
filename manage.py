#!/usr/bin/env python
"""Django's command-line utility for the Kombo package publisher."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kombo_admin.settings")
    # The settings are read below, before Django parses the command line: honour --settings.
    for index, arg in enumerate(sys.argv):
        if arg.startswith("--settings="):
            os.environ["DJANGO_SETTINGS_MODULE"] = arg.split("=", 1)[1]
        elif arg == "--settings" and index + 1 < len(sys.argv):
            os.environ["DJANGO_SETTINGS_MODULE"] = sys.argv[index + 1]
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.INSTALLED_APPS  # read the settings now: a missing one is one line, not a traceback
    except ImproperlyConfigured as exc:
        sys.exit(f"manage.py: {exc} (locally, `bash scripts/manage.sh ...` sets what run.sh sets)")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
