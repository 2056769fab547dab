#!/usr/bin/env bash
# The coordinator's flower-superlink, in the foreground (run it under systemd, tmux or
# nohup). One port serves the Fleet API (SuperNodes), the Control API (flwr run / ls /
# supernode register) and the Runtime API (the ServerApp, which runs on this machine).
set -euo pipefail
USAGE="deploy/start-superlink.sh CERTDIR [PORT]       TLS + SuperNode authentication
       deploy/start-superlink.sh --insecure [PORT]   no TLS, any node may join (trusted networks only)
  CERTDIR holds ca.crt, server.pem, server.key from deploy/make-certs.sh. PORT defaults to 9092.
  env: SUPERLINK_HOST      address to listen on (default 0.0.0.0: every interface)
       SUPERLINK_DATABASE  state file (default: in memory, so registered keys are lost on restart)
       SUPERLINK_LOG_FILE  also write the log to this file (rotated daily)"
source "$(dirname "$0")/_lib.sh"

[[ $# -ge 1 && $# -le 2 ]] || usage
HOST="${SUPERLINK_HOST:-0.0.0.0}"
PORT="${2:-9092}"
check_port "$PORT"
SUPERLINK="$(find_tool flower-superlink)"
# The SuperLink starts flower-superexec and flwr-serverapp by name: same environment.
export PATH="$(dirname "$SUPERLINK"):$PATH"

declare -a ARGS=(--host "$HOST" --port "$PORT" --disable-runtime-dependency-installation)
if [[ "$1" == "--insecure" ]]; then
    echo "warning: starting the SuperLink WITHOUT TLS and without node authentication:" \
         "traffic is unencrypted and any machine that reaches port $PORT can join or submit runs" >&2
    ARGS+=(--insecure)
else
    CERTDIR="$1"
    [[ -d "$CERTDIR" ]] || die "certificate folder $CERTDIR does not exist (make it with deploy/make-certs.sh OUTDIR HOST)"
    for name in ca.crt server.pem server.key; do
        need_file "$CERTDIR/$name" "expected ca.crt, server.pem and server.key from deploy/make-certs.sh in $CERTDIR"
    done
    CERTDIR="$(cd "$CERTDIR" && pwd)"
    ARGS+=(--ssl-ca-certfile "$CERTDIR/ca.crt" --ssl-certfile "$CERTDIR/server.pem"
           --ssl-keyfile "$CERTDIR/server.key" --enable-supernode-auth)
fi
if [[ -n "${SUPERLINK_DATABASE:-}" ]]; then
    mkdir -p "$(dirname "$SUPERLINK_DATABASE")"
    ARGS+=(--database "$SUPERLINK_DATABASE")
fi
if [[ -n "${SUPERLINK_LOG_FILE:-}" ]]; then
    ARGS+=(--log-file "$SUPERLINK_LOG_FILE")
fi

echo "starting $SUPERLINK ${ARGS[*]}" >&2
# exec a supervisor: the script's PID becomes its PID, and a SIGTERM or SIGINT to it stops the
# SuperLink and every process it started (its flower-superexec runs in a session of its own).
fedforget_deploy supervise -- "$SUPERLINK" "${ARGS[@]}"
