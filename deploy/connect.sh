#!/usr/bin/env bash
# Tell the flwr CLI (flwr run / ls / supernode register) where the SuperLink is. The entry
# goes into $FLWR_HOME/config.toml (default ~/.flwr/config.toml) and becomes the default;
# never into pyproject.toml, which `flwr run` would rewrite.
set -euo pipefail
USAGE="deploy/connect.sh NAME ADDRESS [CA_CERT]
  NAME     connection name used by the other scripts (e.g. hospitals)
  ADDRESS  host:port of the SuperLink (the host must be in its certificate)
  CA_CERT  the ca.crt that signed the SuperLink's certificate; omit for an --insecure SuperLink
  env: FLWR_HOME (default ~/.flwr)"
source "$(dirname "$0")/_lib.sh"

[[ $# -eq 2 || $# -eq 3 ]] || usage
fedforget_deploy connect "$@"
