# The local, embedded configuration shared by run.sh and manage.sh (sourced, from the repository
# root, with the venv active): DJANGO_DEBUG=true, SQLite and the filesystem broker under var/,
# the sandbox as Kombo. Each variable only if not already set, so it can point elsewhere.
SANDBOX_PORT=${SANDBOX_PORT:-8765}
mkdir -p var/log
umask_before=$(umask)
umask 077
# A secret generated once and kept in var/<name> (0600), so restarts keep sessions and logins.
secret_file() {
    local file=$1 prefix=$2
    if [[ ! -s $file ]]; then
        python -c "import secrets; print('$prefix' + secrets.token_urlsafe(${3:-32}))" > "$file"
    fi
    chmod 600 "$file"
    cat "$file"
}
: "${DJANGO_DEBUG:=true}"
: "${DJANGO_SECRET_KEY:=$(secret_file var/secret_key '' 50)}"
: "${KOMBO_API_URL:=http://127.0.0.1:${SANDBOX_PORT}/v1}"
: "${KOMBO_API_KEY:=$(secret_file var/sandbox_key sandbox-key- 24)}"
# The webhook secret the app checks and the sandbox signs with (run.sh passes the sandbox only
# the variable's name, never the value).
: "${KOMBO_WEBHOOK_SECRET:=$(secret_file var/webhook_secret whsec_local_ 32)}"
umask "$umask_before"
export DJANGO_DEBUG DJANGO_SECRET_KEY KOMBO_API_URL KOMBO_API_KEY KOMBO_WEBHOOK_SECRET
export DJANGO_SETTINGS_MODULE=kombo_admin.settings PYTHONUNBUFFERED=1
