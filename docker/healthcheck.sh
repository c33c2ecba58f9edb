#!/bin/sh
# spate-healthcheck ROLE: exits 0 when this container serves its role.
# Uses only the driver (no curl in the image); it exits 1 when it cannot
# reach what it asks.
set -eu
case "${1:-}" in
master)
    # The master answers on its gRPC port (TLS when it has a certificate,
    # whose names include 127.0.0.1).
    bind=${SPATE_MASTER_BIND:-0.0.0.0:7077}
    scheme=http
    [ -n "${SPATE_MASTER_TLS_CERT:-}" ] && scheme=https
    exec driver workers --master "$scheme://127.0.0.1:${bind##*:}" >/dev/null
    ;;
worker)
    # A running process is not enough: the master must list this worker as
    # ALIVE. The master shows a worker's host as its hostname.
    driver workers | grep -q "$(cat /etc/hostname).*ALIVE"
    ;;
broker)
    exec driver topics list --bootstrap 127.0.0.1:9092 >/dev/null
    ;;
redis)
    [ "$(redis-cli -h 127.0.0.1 ping)" = PONG ]
    ;;
postgres)
    exec pg_isready -q -h 127.0.0.1 -U "${POSTGRES_USER:-spate}"
    ;;
jupyterlab)
    # Jupyter's /api answers without the token once the server is up.
    exec python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8888/api', timeout=5)"
    ;;
s3)
    # The workspace's bucket answers (moto's server makes it at start).
    exec python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/spate', timeout=5)"
    ;;
*)
    echo "usage: spate-healthcheck master|worker|broker|redis|postgres|jupyterlab|s3" >&2
    exit 2
    ;;
esac
