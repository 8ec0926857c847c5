"""Run the local Kombo sandbox (packages_app.sandbox) until Ctrl-C or SIGTERM.

    python manage.py kombo_sandbox --port 8765
    KOMBO_API_URL=http://127.0.0.1:8765/v1 python manage.py runserver   # in another terminal

Drive it from another shell through its control endpoints, e.g.
    curl -X POST http://127.0.0.1:8765/_sandbox/faults -d '{"status": 503, "body": "<html>503</html>"}'
    curl http://127.0.0.1:8765/_sandbox/state

A package added at Kombo outside the product, and open orders (listed by GET /assessment/orders):
    curl -X POST http://127.0.0.1:8765/_sandbox/packages \
        -d '{"integration_id": "recruitee:Demo1", "packages": [{"id": "legacy-7", "name": "Old test"}]}'
    curl -X POST http://127.0.0.1:8765/_sandbox/orders \
        -d '{"integration_id": "recruitee:Demo1", "package_id": "legacy-7", "count": 3}'

Send Kombo's signed `integration-created` webhook to the app (the secret is read from the named
environment variable, never from the command line, and never printed):
    KOMBO_WEBHOOK_SECRET=... python manage.py kombo_sandbox \
        --webhook-url http://127.0.0.1:8000/webhooks/kombo/ --webhook-secret-env KOMBO_WEBHOOK_SECRET
    curl -X POST http://127.0.0.1:8765/_sandbox/webhooks/integration-created -d '{"organization_name": "Acme"}'
"""
import os
import re
import signal
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from packages_app.kombo import is_loopback_host
from packages_app.sandbox import KomboSandbox


class Command(BaseCommand):
    help = "Serve a local stand-in for Kombo's assessment-packages API on a loopback address."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Loopback address to listen on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8765, help="Port (default 8765; 0 picks a free one).")
        parser.add_argument("--api-key", default=None,
                            help="Bearer token the sandbox accepts (default: settings.KOMBO_API_KEY; "
                                 "if neither is set, any non-empty token is accepted).")
        parser.add_argument("--latency-ms", type=float, default=0.0, help="Sleep this long on every PUT.")
        parser.add_argument("--rate-limit", type=float, default=None, metavar="N",
                            help="Answer 429 beyond N requests per 1-second window (default: no limit).")
        parser.add_argument("--quiet", action="store_true", help="Do not log one line per request.")
        parser.add_argument("--webhook-url", default=None, metavar="URL",
                            help="Where POST /_sandbox/webhooks/integration-created sends Kombo's webhook "
                                 "(the app's /webhooks/kombo/).")
        parser.add_argument("--webhook-secret-env", default=None, metavar="NAME",
                            help="Name of the environment variable holding the webhook secret the sandbox "
                                 "signs with (the app's KOMBO_WEBHOOK_SECRET). Never the secret itself.")

    def handle(self, *args, host, port, api_key, latency_ms, rate_limit, quiet, webhook_url=None,
               webhook_secret_env=None, **options):
        if not is_loopback_host(host):
            raise CommandError(f"Refusing to listen on {host!r}: the sandbox only serves a loopback address "
                               "(127.0.0.1, ::1 or localhost).")
        if host == "localhost":
            host = "127.0.0.1"
        if latency_ms < 0:
            raise CommandError("--latency-ms must not be negative.")
        if rate_limit is not None and rate_limit <= 0:
            raise CommandError("--rate-limit must be positive.")
        if api_key is None:
            api_key = getattr(settings, "KOMBO_API_KEY", None) or None
        if webhook_url is not None:
            parts = urlsplit(webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise CommandError("--webhook-url must be an http:// or https:// URL.")
        webhook_secret = None
        if webhook_secret_env is not None:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", webhook_secret_env):
                raise CommandError("--webhook-secret-env takes the NAME of an environment variable "
                                   "(the secret itself never goes on the command line).")
            webhook_secret = os.environ.get(webhook_secret_env) or None
            if webhook_secret is None:
                raise CommandError(f"The environment variable {webhook_secret_env} (--webhook-secret-env) "
                                   "is not set or empty.")
        try:
            sandbox = KomboSandbox(host, port, api_key=api_key, latency=latency_ms / 1000,
                                   rate_limit_per_second=rate_limit, verbose=not quiet,
                                   webhook_url=webhook_url, webhook_secret=webhook_secret)
        except OSError as exc:
            raise CommandError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}") from None

        def on_sigterm(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        self.stdout.write(f"Kombo sandbox listening on {sandbox.url}")
        self.stdout.write("API key: " + ("the configured one" if api_key else "any non-empty Bearer token")
                          + ". Stop with Ctrl-C.")
        if webhook_url:
            self.stdout.write(
                f"Webhooks: POST {sandbox.base_url}/_sandbox/webhooks/integration-created sends a signed "
                f"integration-created to {webhook_url} (secret: "
                + (f"${webhook_secret_env}" if webhook_secret else 'none configured; pass "secret"') + ").")
        self.stdout.flush()
        try:
            sandbox.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            sandbox.stop()
            signal.signal(signal.SIGTERM, previous)
        self.stdout.write("Kombo sandbox stopped.")
