#!/usr/bin/env bash
# Run a manage.py command with the settings scripts/run.sh uses (SQLite and the broker under
# var/, the sandbox as Kombo), e.g. beside a running run.sh:
#
#     bash scripts/manage.sh publish_packages --help
#     bash scripts/manage.sh seed_demo --integrations 500
set -euo pipefail
PYTHON=${PYTHON:-python3}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '[manage] %s\n' "$*" >&2; }
die() { printf '[manage] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv requirements.txt >&2
# shellcheck source=scripts/local_env.sh
source scripts/local_env.sh
exec python manage.py "$@"
