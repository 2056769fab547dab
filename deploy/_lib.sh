# Shared helpers for the deploy/ scripts (sourced, never run on its own).
# Each script sets USAGE before sourcing this file.

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$DEPLOY_DIR/.." && pwd)"

# Flower must never phone home, check for updates, or `uv sync` app dependencies at run
# time (the machines may be offline; every machine already has the same environment).
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export PYTHONUNBUFFERED=1

die() {
    echo "error: $*" >&2
    exit 1
}

usage() {
    echo "usage: $USAGE" >&2
    exit 2
}

need_cmd() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is not installed (needed by $(basename "$0")): $2"
}

# A Flower or Python executable: $FLOWER_BIN_DIR, then the checkout's .venv, then PATH,
# so a stray global flwr never runs with a different version than the app.
find_tool() {
    local name="$1" dir
    for dir in "${FLOWER_BIN_DIR:-}" "$REPO_DIR/.venv/bin"; do
        if [[ -n "$dir" && -x "$dir/$name" ]]; then
            echo "$dir/$name"
            return 0
        fi
    done
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    die "$name not found: run \`make setup\` in $REPO_DIR (or activate the environment holding fedforget and flwr, or set FLOWER_BIN_DIR)"
}

python_bin() {
    if [[ -n "${FEDFORGET_PYTHON:-}" ]]; then
        echo "$FEDFORGET_PYTHON"
    else
        find_tool python
    fi
}

need_file() {
    [[ -f "$1" ]] || die "$1 does not exist: $2"
}

# Site names end up inside TOML strings and file names: keep them plain.
check_site_name() {
    [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] \
        || die "site name '$1' must be letters, digits, '.', '_' or '-' (e.g. knee-0)"
}

check_port() {
    [[ "$1" =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= 65535 )) \
        || die "port '$1' must be a number between 1 and 65535"
}

# `python -m fedforget.launch.deploy ...` from this checkout (also when fedforget is not pip-installed).
fedforget_deploy() {
    local python
    python="$(python_bin)"
    PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m fedforget.launch.deploy "$@"
}
