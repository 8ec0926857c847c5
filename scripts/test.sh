#!/usr/bin/env bash
# Install and run all the tests. Extra arguments go to pytest:
#
#     bash scripts/test.sh                      # everything
#     bash scripts/test.sh -x tests/test_diff.py -k removed
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, or TEST_DATABASE_URL), Redis on
# 127.0.0.1:6379 (or TEST_CELERY_BROKER_URL), RabbitMQ on 127.0.0.1:5672 (guest/guest, or
# TEST_AMQP_BROKER_URL) and Debian's chromium. Nothing is skipped: when a service is missing this
# script says so and fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}

say() { printf '[test] %s\n' "$*"; }
die() { printf '[test] ERROR: %s\n' "$*" >&2; exit 1; }

# --- Python environment -------------------------------------------------------------------------
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv requirements-dev.txt requirements.txt

# --- Chromium for the browser tests (Playwright drives Debian's package, no download) -----------
if [[ ! -x /usr/bin/chromium ]]; then
    if [[ $(id -u) == 0 ]]; then
        say "Installing chromium (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    else
        die "/usr/bin/chromium is missing; the browser tests need it. Install it: sudo apt-get install chromium"
    fi
fi

# --- PostgreSQL, Redis and RabbitMQ must answer --------------------------------------------------
python - <<'EOF'
import os
import sys
from urllib.parse import urlsplit

db_url = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kombo_admin")
broker_url = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
amqp_url = os.environ.get("TEST_AMQP_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
problems = []


def where(url):
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or ''}".rstrip(":")


try:
    import psycopg
    from psycopg.conninfo import make_conninfo

    # django-environ spells it several ways; libpq knows postgres:// and postgresql://.
    scheme, rest = db_url.split("://", 1)
    if scheme in {"pgsql", "postgis", "psql"}:
        db_url = "postgres://" + rest
    # The server and the credentials, on the maintenance database: pytest-django creates its own.
    with psycopg.connect(make_conninfo(db_url, dbname="postgres"), connect_timeout=5) as conn:
        conn.execute("SELECT 1")
except Exception as exc:
    problems.append(
        f"PostgreSQL is not reachable at {where(db_url)} ({type(exc).__name__}: {str(exc).strip()[:200]}).\n"
        "    Start it, e.g. on Debian: sudo pg_ctlcluster $(ls /etc/postgresql) main start\n"
        "    (install: sudo apt-get install postgresql; the tests connect as user postgres\n"
        "    without a password on 127.0.0.1, or set TEST_DATABASE_URL=postgres://USER:PASS@HOST:PORT/NAME)"
    )

try:
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        redis.Redis.from_url(broker_url, socket_connect_timeout=5, socket_timeout=5).ping()
    else:
        from kombu import Connection

        with Connection(broker_url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
except Exception as exc:
    problems.append(
        f"The broker is not reachable at {where(broker_url)} ({type(exc).__name__}: {str(exc).strip()[:200]}).\n"
        "    Start Redis, e.g. on Debian: sudo systemctl start redis-server, or\n"
        "    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no\n"
        "    (install: sudo apt-get install redis-server; or set TEST_CELERY_BROKER_URL)"
    )

try:
    from kombu import Connection

    with Connection(amqp_url, connect_timeout=5) as conn:
        conn.ensure_connection(max_retries=1)
except Exception as exc:
    problems.append(
        f"RabbitMQ is not reachable at {where(amqp_url)} ({type(exc).__name__}: {str(exc).strip()[:200]}).\n"
        "    The AMQP broker tests (tests/test_pacing_brokers.py) need it. Start it, e.g. on Debian:\n"
        "    sudo rabbitmq-server -detached  (it takes a few seconds to answer)\n"
        "    (install: sudo apt-get install rabbitmq-server; the tests connect as guest/guest on\n"
        "    127.0.0.1, or set TEST_AMQP_BROKER_URL=amqp://USER:PASS@HOST:5672/VHOST)"
    )

if problems:
    print("[test] ERROR: the tests need these services; none is ever skipped:", file=sys.stderr)
    for problem in problems:
        print("  - " + problem, file=sys.stderr)
    sys.exit(1)
print(f"[test] PostgreSQL at {where(db_url)}, the broker at {where(broker_url)} and RabbitMQ at "
      f"{where(amqp_url)} answer.")
EOF

# --- The tests ----------------------------------------------------------------------------------
status=0
python -m pytest "$@" || status=$?

# --- The state machine again on SQLite (the embedded default) -----------------------------------
# The publishing engine has one path on every database; its tests run on both. Only on a full run
# (no arguments). Tests that need PostgreSQL itself (row locks seen from a second connection) are
# marked `postgresql` and left out here, by name, not skipped.
if [[ $# -eq 0 ]]; then
    say "State-machine tests on SQLite"
    TEST_DATABASE_URL="sqlite:///$(mktemp -d)/state-machine.sqlite3" \
        python -m pytest -q -m "not postgresql" tests/test_services.py tests/test_batches.py \
            tests/test_cancel.py tests/test_faults.py || status=$?
fi
exit "$status"
