#!/usr/bin/env bash
# One SuperNode authentication key pair per site: ECDSA P-384 in OpenSSH format, the
# form `flower-supernode --auth-supernode-private-key` loads (load_ssh_private_key,
# EC keys only) and `flwr supernode register` accepts (load_ssh_public_key, NIST curve).
set -euo pipefail
USAGE="deploy/make-site-key.sh OUTDIR SITE
  Writes OUTDIR/SITE (private key: copy it to the site's machine only) and
  OUTDIR/SITE.pub (public key: the coordinator registers it with the SuperLink)."
source "$(dirname "$0")/_lib.sh"

[[ $# -eq 2 ]] || usage
OUTDIR="$1"
SITE="$2"
check_site_name "$SITE"
need_cmd ssh-keygen "install OpenSSH's client tools (e.g. apt-get install openssh-client)"

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
# Never overwrite: a registered public key would silently stop matching its private key.
for path in "$OUTDIR/$SITE" "$OUTDIR/$SITE.pub"; do
    [[ ! -e "$path" ]] || die "$path already exists: remove both $OUTDIR/$SITE and $OUTDIR/$SITE.pub to make a new pair"
done
ssh-keygen -q -t ecdsa -b 384 -N "" -C "fedforget-site-$SITE" -f "$OUTDIR/$SITE"
chmod 600 "$OUTDIR/$SITE"
echo "wrote $OUTDIR/$SITE (private: copy to site $SITE only) and $OUTDIR/$SITE.pub (register on the SuperLink)"
