#!/usr/bin/env bash
# One hospital's flower-supernode, in the foreground. The site's data never leaves this
# machine: the ClientApp reads DATA_PATH/train and DATA_PATH/test here and only model
# arrays and metrics travel to the SuperLink.
set -euo pipefail
USAGE="deploy/start-supernode.sh SUPERLINK_ADDR SITE DATA_PATH [CA_CERT KEY]
  SUPERLINK_ADDR  host:port of the SuperLink (the host must be in its certificate)
  SITE            this site's name in the experiment (e.g. knee-0)
  DATA_PATH       absolute folder with train/ and test/ folders of fastMRI multicoil .h5 files
  CA_CERT KEY     the coordinator's ca.crt and this site's private key (deploy/make-site-key.sh);
                  without them the node connects WITHOUT TLS (SuperLink started with --insecure)
  env: SUPERNODE_PORT        local port of this node's Runtime API (default 9094); every SuperNode
                             on one machine needs its own
       SUPERNODE_MAX_WAIT    give up after this many seconds without reaching the SuperLink
                             (default: retry forever)
       SUPERNODE_POLL_SECONDS  poll the SuperLink for work every N seconds instead of Flower's fixed
                             3 s (patches Flower 1.42's SuperNode loop; see deploy/README.md)
       SUPERNODE_WARM_CLIENTAPP=1  fork each message's ClientApp process from a template that imported
                             torch and Flower once (~3 s less per message; Flower 1.42 only; see deploy/README.md)"
source "$(dirname "$0")/_lib.sh"

[[ $# -eq 3 || $# -eq 5 ]] || usage
ADDRESS="$1"
SITE="$2"
DATA_PATH="$3"
check_site_name "$SITE"
[[ "$ADDRESS" =~ ^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]+$ ]] \
    || die "SuperLink address '$ADDRESS' must be host:port (e.g. superlink.example.org:9092 or [::1]:9092)"
check_port "${ADDRESS##*:}"
[[ "$DATA_PATH" == /* ]] || die "DATA_PATH '$DATA_PATH' must be absolute (Flower never changes directory)"
[[ "$DATA_PATH" != *'"'* && "$DATA_PATH" != *'\'* ]] || die "DATA_PATH '$DATA_PATH' must not contain quotes or backslashes"
for split in train test; do
    [[ -d "$DATA_PATH/$split" ]] || die "$DATA_PATH/$split does not exist: DATA_PATH must hold train/ and test/ folders of fastMRI multicoil .h5 files"
    compgen -G "$DATA_PATH/$split/*.h5" >/dev/null || die "$DATA_PATH/$split holds no .h5 files (expected fastMRI multicoil volumes)"
done
PORT="${SUPERNODE_PORT:-9094}"
check_port "$PORT"

declare -a ARGS=(--superlink "$ADDRESS" --port "$PORT" --node-config "site=\"$SITE\" data-path=\"$DATA_PATH\"")
if [[ $# -eq 5 ]]; then
    need_file "$4" "expected the coordinator's ca.crt (from deploy/make-certs.sh)"
    need_file "$5" "expected this site's private key (from deploy/make-site-key.sh OUTDIR $SITE)"
    head -n1 "$5" | grep -q "BEGIN OPENSSH PRIVATE KEY" \
        || die "$5 is not an OpenSSH private key (expected the file without .pub from deploy/make-site-key.sh)"
    ARGS+=(--root-certificates "$4" --auth-supernode-private-key "$5")
else
    echo "warning: connecting WITHOUT TLS (no CA_CERT/KEY given): use only with a SuperLink started with --insecure on a trusted network" >&2
    ARGS+=(--insecure)
fi
if [[ -n "${SUPERNODE_MAX_WAIT:-}" ]]; then
    ARGS+=(--max-wait-time "$SUPERNODE_MAX_WAIT")
fi

declare -a PATCHES=()
if [[ -n "${SUPERNODE_POLL_SECONDS:-}" ]]; then
    [[ "$SUPERNODE_POLL_SECONDS" =~ ^[0-9]*\.?[0-9]+$ ]] \
        || die "SUPERNODE_POLL_SECONDS='$SUPERNODE_POLL_SECONDS' must be a number of seconds (e.g. 0.2)"
    PATCHES+=(--poll-seconds "$SUPERNODE_POLL_SECONDS")
fi
case "${SUPERNODE_WARM_CLIENTAPP:-}" in
    ""|0) ;;
    1) PATCHES+=(--warm-clientapp) ;;
    *) die "SUPERNODE_WARM_CLIENTAPP='$SUPERNODE_WARM_CLIENTAPP' must be 1 (on) or 0 (off)" ;;
esac
if [[ ${#PATCHES[@]} -gt 0 ]]; then
    # The SuperNode starts flower-superexec by name: it must come from the same environment.
    PYTHON_BIN="$(python_bin)"
    export PATH="$(dirname "$PYTHON_BIN"):$PATH"
    echo "starting flower-supernode (${PATCHES[*]}) ${ARGS[*]}" >&2
    # exec (inside fedforget_deploy) a supervisor: the script's PID becomes its PID, and a SIGTERM or
    # SIGINT to it stops the SuperNode and every process it started (flower-superexec, ClientApps).
    fedforget_deploy supervise -- "$PYTHON_BIN" -m fedforget.launch.deploy supernode "${PATCHES[@]}" -- "${ARGS[@]}"
fi
SUPERNODE="$(find_tool flower-supernode)"
export PATH="$(dirname "$SUPERNODE"):$PATH"
echo "starting $SUPERNODE ${ARGS[*]}" >&2
# exec a supervisor: the script's PID becomes its PID, and a SIGTERM or SIGINT to it stops the
# SuperNode and every process it started (flower-superexec outlives a SuperNode signalled alone).
fedforget_deploy supervise -- "$SUPERNODE" "${ARGS[@]}"
