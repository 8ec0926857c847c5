# Sourced by run.sh and test.sh (which define PYTHON, say and die): create .venv if it is
# missing, activate it, and install a requirements file when it, or a file it includes, changed
# since the last successful install.
#
#     ensure_venv requirements-dev.txt requirements.txt   # install the first; hash them all

ensure_venv() {
    local requirements=$1
    if [[ ! -x .venv/bin/python ]]; then
        command -v "$PYTHON" >/dev/null || die "$PYTHON not found. Install Python 3.11 (Debian: apt-get install python3 python3-venv)."
        say "Creating .venv with $("$PYTHON" --version 2>&1)"
        if ! "$PYTHON" -m venv .venv; then
            rm -rf .venv
            die "Could not create a virtual environment. On Debian/Ubuntu: sudo apt-get install python3-venv"
        fi
    fi
    # shellcheck disable=SC1091
    source .venv/bin/activate

    local stamp=".venv/.${requirements}.sha256" want
    want=$(cat "$@" | sha256sum | cut -d' ' -f1)
    if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
        say "Installing $requirements into .venv (quietly)"
        python -m pip install --quiet -r "$requirements"
        echo "$want" > "$stamp"
    fi
}
