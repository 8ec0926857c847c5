#!/usr/bin/env bash
# Install and run everything on this machine: the Kombo sandbox, the admin, a Celery worker and
# beat, on SQLite and the embedded filesystem broker under var/ (no PostgreSQL, no Redis needed).
#
#     bash scripts/run.sh                 # then open the printed URL; Ctrl-C stops everything
#     PORT=8001 SANDBOX_PORT=8766 bash scripts/run.sh
#
# Environment (each only if not already set, so it can point elsewhere): DJANGO_DEBUG=true,
# DJANGO_SECRET_KEY (generated once into var/secret_key), KOMBO_API_URL (the sandbox),
# KOMBO_API_KEY (generated once into var/sandbox_key), KOMBO_WEBHOOK_SECRET (generated once into
# var/webhook_secret; the sandbox signs its webhooks with it). Logs: var/log/<name>.log.
set -euo pipefail
PYTHON=${PYTHON:-python3}

# Started in the background by a non-interactive shell (`bash scripts/run.sh &` in a script),
# bash ignores SIGINT for good and cannot trap it. Start again with SIGINT restored, so that
# `kill -INT` stops everything just like Ctrl-C does.
if [[ -n "$(trap -p INT)" && -z "${RUN_SH_SIGINT_RESTORED:-}" ]] && command -v "$PYTHON" >/dev/null; then
    export RUN_SH_SIGINT_RESTORED=1
    exec "$PYTHON" -c 'import os, signal, sys
for name in ("SIGINT", "SIGPIPE", "SIGXFSZ"):  # Python itself ignores the last two
    signal.signal(getattr(signal, name), signal.SIG_DFL)
os.execvp("bash", ["bash", *sys.argv[1:]])' "$0" "$@"
fi
unset RUN_SH_SIGINT_RESTORED

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT=${PORT:-8000}
SANDBOX_PORT=${SANDBOX_PORT:-8765}

say() { printf '[run] %s\n' "$*"; }
die() { printf '[run] ERROR: %s\n' "$*" >&2; exit 1; }

# --- Python environment -------------------------------------------------------------------------
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv requirements.txt

# --- Configuration for the child processes ------------------------------------------------------
# shellcheck source=scripts/local_env.sh
source scripts/local_env.sh
ADMIN_PASSWORD=$(secret_file var/admin_password '' 18)
ADMIN_PATH=${DJANGO_ADMIN_URL:-admin/}
ADMIN_PATH=${ADMIN_PATH#/}; ADMIN_PATH=${ADMIN_PATH%/}/

# --- Database and the admin user ----------------------------------------------------------------
say "Migrating the database (${DATABASE_URL:-SQLite in var/db.sqlite3})"
python manage.py migrate --noinput 2>&1 | sed -u 's/^/[migrate] /'

# The password goes through the environment, not the command line (visible in ps).
RUN_ADMIN_PASSWORD=$ADMIN_PASSWORD python manage.py shell --verbosity 0 -c '
import os
from django.contrib.auth import get_user_model
User = get_user_model()
user, created = User.objects.get_or_create(username="admin", defaults={"email": "admin@localhost"})
user.is_active = user.is_staff = user.is_superuser = True
user.set_password(os.environ["RUN_ADMIN_PASSWORD"])
user.save()
try:  # a lockout from earlier failed logins would make the printed login fail
    from axes.utils import reset
    reset(username="admin")
except Exception:
    pass
print("[run] Superuser admin " + ("created" if created else "exists; password reset to var/admin_password"))
'

# --- Processes ----------------------------------------------------------------------------------
# Each child runs in its own process group (set -m while forking it), so stopping it also stops
# what it forked (Celery's pool processes), and Ctrl-C reaches this script, which stops them in
# order. Output: prefixed on this terminal, and in full in var/log/<name>.log.
NAMES=()
PIDS=()
start() {
    local name=$1; shift
    : > "var/log/$name.log"
    set -m
    "$@" < /dev/null > >(tee -a "var/log/$name.log" | sed -u "s/^/[$name] /") 2>&1 &
    set +m
    NAMES+=("$name")
    PIDS+=("$!")
}

alive() { kill -0 -- "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null; }

stopping=0
stop_all() {
    [[ $stopping == 1 ]] && return
    stopping=1
    trap '' INT TERM HUP
    local pid i deadline
    say "Stopping ${NAMES[*]} ..."
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # Celery finishes (or hands back) its running task on TERM; give everyone a moment.
    deadline=$((SECONDS + 20))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    done
    for i in "${!PIDS[@]}"; do
        if kill -0 "${PIDS[$i]}" 2>/dev/null; then
            say "${NAMES[$i]} did not stop within 20 s: killing it"
            kill -KILL -- "-${PIDS[$i]}" 2>/dev/null || kill -KILL "${PIDS[$i]}" 2>/dev/null || true
        fi
    done
    # Whatever is left in their process groups (pool processes, the log pipes draining): a short
    # grace, then gone.
    deadline=$((SECONDS + 3))
    for pid in "${PIDS[@]}"; do
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    say "Everything stopped."
}

on_signal() {
    echo
    stop_all
    exit 0
}
trap on_signal INT TERM HUP
trap 'stop_all' EXIT

# If a child has exited: say which, show its last log lines, stop the others, exit non-zero.
check_children() {
    local i pid rc
    for i in "${!PIDS[@]}"; do
        pid=${PIDS[$i]}
        if ! kill -0 "$pid" 2>/dev/null; then
            rc=0; wait "$pid" 2>/dev/null || rc=$?
            sleep 0.3  # let its last output drain into the log
            printf '\n[run] ERROR: %s exited early (status %s). Last lines of var/log/%s.log:\n' \
                "${NAMES[$i]}" "$rc" "${NAMES[$i]}" >&2
            tail -n 25 "var/log/${NAMES[$i]}.log" | sed 's/^/    /' >&2
            stop_all
            trap - EXIT
            exit 1
        fi
    done
}

# The API key (KOMBO_API_KEY) and the webhook secret come from the environment, never the command line.
start sandbox python manage.py kombo_sandbox --host 127.0.0.1 --port "$SANDBOX_PORT" \
    --webhook-url "http://127.0.0.1:$PORT/webhooks/kombo/" --webhook-secret-env KOMBO_WEBHOOK_SECRET
start web python manage.py runserver "127.0.0.1:$PORT" --noreload
start worker celery -A kombo_admin worker --loglevel INFO --concurrency 2 \
    --without-gossip --without-mingle --without-heartbeat
start beat celery -A kombo_admin beat --loglevel INFO -s var/celerybeat-schedule

# --- Wait for the web server --------------------------------------------------------------------
LOGIN_URL="http://127.0.0.1:$PORT/${ADMIN_PATH}login/"
ready=0
for _ in $(seq 1 120); do
    check_children
    if python - "$LOGIN_URL" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
EOF
    then ready=1; break; fi
    sleep 0.5 & wait $! || true
done
if [[ $ready != 1 ]]; then
    say "ERROR: the web server did not answer $LOGIN_URL within 60 s. Last lines of var/log/web.log:" >&2
    tail -n 25 var/log/web.log | sed 's/^/    /' >&2
    stop_all; trap - EXIT; exit 1
fi

sandbox_note="http://127.0.0.1:$SANDBOX_PORT/v1  (state: http://127.0.0.1:$SANDBOX_PORT/_sandbox/state)"
if [[ $KOMBO_API_URL != "http://127.0.0.1:$SANDBOX_PORT/v1" ]]; then
    sandbox_note="$sandbox_note; the app talks to $KOMBO_API_URL"
fi
cat <<EOF

+------------------------------------------------------------------------------+
  Kombo package publisher is running.

  Open:      http://127.0.0.1:$PORT/$ADMIN_PATH
  User:      admin
  Password:  $ADMIN_PASSWORD        (kept in var/admin_password)

  Kombo sandbox: $sandbox_note
  Webhook:   curl -X POST http://127.0.0.1:$SANDBOX_PORT/_sandbox/webhooks/integration-created -d '{"organization_name": "Acme"}'
             (a new integration gets the default plan: tick "default" on a plan first)
  Logs:      var/log/{sandbox,web,worker,beat}.log

  Ctrl-C stops everything.
+------------------------------------------------------------------------------+

EOF

while true; do
    check_children
    sleep 1 & wait $! || true
done
