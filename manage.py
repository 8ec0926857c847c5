#!/usr/bin/env python
"""Django's command-line utility for the Kombo package publisher."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kombo_admin.settings")
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
