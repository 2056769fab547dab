#!/usr/bin/env bash
# A private CA and a TLS certificate for the SuperLink, signed by it.
#
# The CA is reused when OUTDIR already holds ca.crt and ca.key, so re-issuing the
# server certificate (new host name, expiry) never invalidates the ca.crt copies
# the hospitals already have. Only ca.crt leaves the coordinator; keep ca.key and
# server.key private.
set -euo pipefail
USAGE="deploy/make-certs.sh OUTDIR SERVER_HOST[,MORE_HOSTS...]
  Writes OUTDIR/ca.crt, ca.key, server.pem, server.key. Every host (DNS name or IP
  address) the SuperNodes use to reach the SuperLink must be listed; localhost,
  127.0.0.1 and ::1 are always added (the SuperLink's own processes connect there).
  env: CERT_DAYS (validity, default 825)"
source "$(dirname "$0")/_lib.sh"

[[ $# -eq 2 ]] || usage
OUTDIR="$1"
HOSTS="$2"
DAYS="${CERT_DAYS:-825}"
[[ "$DAYS" =~ ^[0-9]+$ ]] || die "CERT_DAYS='$DAYS' must be a whole number of days"
need_cmd openssl "install it with your package manager (e.g. apt-get install openssl)"

# subjectAltName entries: IPs as IP:, names as DNS:, without duplicates.
declare -a SANS=()
add_san() {
    local entry="$1" existing
    for existing in "${SANS[@]+"${SANS[@]}"}"; do
        [[ "$existing" == "$entry" ]] && return 0
    done
    SANS+=("$entry")
}
IFS=',' read -r -a GIVEN <<< "$HOSTS"
FIRST_HOST=""
for host in "${GIVEN[@]}"; do
    host="${host#"${host%%[![:space:]]*}"}"
    host="${host%"${host##*[![:space:]]}"}"
    host="${host#[}"
    host="${host%]}"
    [[ -n "$host" ]] || continue
    if [[ "$host" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || "$host" == *:* ]]; then
        add_san "IP:$host"
    elif [[ "$host" =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
        add_san "DNS:$host"
    else
        die "'$host' is neither an IP address nor a DNS name (expected e.g. superlink.example.org,10.0.0.5)"
    fi
    [[ -n "$FIRST_HOST" ]] || FIRST_HOST="$host"
done
[[ -n "$FIRST_HOST" ]] || die "no server host given (expected e.g. superlink.example.org,10.0.0.5)"
add_san "DNS:localhost"
add_san "IP:127.0.0.1"
add_san "IP:::1"
SAN_LINE="$(IFS=','; echo "${SANS[*]}")"

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
umask 077
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [[ -f "$OUTDIR/ca.crt" && -f "$OUTDIR/ca.key" ]]; then
    echo "reusing the CA in $OUTDIR (ca.crt, ca.key)"
elif [[ -f "$OUTDIR/ca.crt" || -f "$OUTDIR/ca.key" ]]; then
    die "$OUTDIR holds only one of ca.crt / ca.key: remove it or restore the other"
else
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$OUTDIR/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$OUTDIR/ca.key" -sha384 -days "$DAYS" -subj "/CN=fedforget CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$OUTDIR/ca.crt"
    echo "wrote a new CA: $OUTDIR/ca.crt (give to every site), $OUTDIR/ca.key (keep private)"
fi

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$OUTDIR/server.key" 2>/dev/null
openssl req -new -key "$OUTDIR/server.key" -subj "/CN=${FIRST_HOST:0:64}" -out "$WORK/server.csr"
cat > "$WORK/server.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=$SAN_LINE
EXT
openssl x509 -req -in "$WORK/server.csr" -CA "$OUTDIR/ca.crt" -CAkey "$OUTDIR/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" -sha384 \
    -extfile "$WORK/server.ext" -out "$OUTDIR/server.pem" 2>/dev/null
openssl verify -CAfile "$OUTDIR/ca.crt" "$OUTDIR/server.pem" >/dev/null \
    || die "the new $OUTDIR/server.pem does not verify against $OUTDIR/ca.crt"
chmod 644 "$OUTDIR/ca.crt" "$OUTDIR/server.pem"
echo "wrote $OUTDIR/server.pem and $OUTDIR/server.key (subjectAltName: $SAN_LINE)"
