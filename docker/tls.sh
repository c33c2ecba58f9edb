#!/bin/sh
# docker/tls.sh [DIR] [NAME...]: makes a certificate authority and a
# certificate it signed for the master, for docker/compose.tls.yml:
#
#   DIR/ca.pem          what workers, the driver and browsers trust (--tls-ca)
#   DIR/master.pem      the master's certificate (--tls-cert)
#   DIR/master-key.pem  its private key (--tls-key)
#
# DIR defaults to ./tls. The certificate names `master` (the service, as
# workers dial it), `localhost` and 127.0.0.1 (published ports), and any
# NAME given (a host name or an IP address others reach the master by).
# Keys are EC P-256; the certificates last 825 days. An existing CA in DIR
# is kept, so clients that trust it go on trusting a renewed master.
set -eu
dir=${1:-tls}
[ $# -gt 0 ] && shift
command -v openssl >/dev/null || { echo "tls.sh: openssl is needed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -days 825 -subj "/CN=Spate cluster CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>/dev/null
fi

san="DNS:master,DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
    case $name in
    *[!0-9.]*) san="$san,DNS:$name" ;;
    *) san="$san,IP:$name" ;;
    esac
done
extensions=$(mktemp)
trap 'rm -f "$extensions" "$dir/master.csr"' EXIT
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san" >"$extensions"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=spate master" -keyout "$dir/master-key.pem" -out "$dir/master.csr" 2>/dev/null
openssl x509 -req -in "$dir/master.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
    -CAcreateserial -days 825 -extfile "$extensions" -out "$dir/master.pem" 2>/dev/null
# The containers read the certificates as SPATE_UID; the CA's key stays private.
chmod 644 "$dir/ca.pem" "$dir/master.pem"
chmod 600 "$dir/ca-key.pem"
chmod 640 "$dir/master-key.pem"
echo "tls.sh: $dir/master.pem for $san, signed by $dir/ca.pem"
