#!/usr/bin/env bash
# Allow one site's SuperNode to join a SuperLink started with TLS + node authentication:
# `flwr supernode register KEYDIR/SITE.pub CONNECTION --name SITE`. A SuperNode whose key
# is not registered is refused when it connects. Registering a key twice is not an error.
set -euo pipefail
USAGE="deploy/register-site.sh CONNECTION SITE KEYDIR
  CONNECTION  connection name written by deploy/connect.sh
  SITE        the site's name (KEYDIR/SITE.pub from deploy/make-site-key.sh is registered)
  env: FLWR_HOME (default ~/.flwr)"
source "$(dirname "$0")/_lib.sh"

[[ $# -eq 3 ]] || usage
check_site_name "$2"
fedforget_deploy register "$@"
