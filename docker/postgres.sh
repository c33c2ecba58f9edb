#!/bin/sh
# spate-postgres: docker-compose's PostgreSQL for the sample jobs. Makes a
# database cluster on first start (user and password from POSTGRES_USER and
# POSTGRES_PASSWORD, default spate/spate, and a database of the user's name),
# then runs the server in the foreground, reachable from the compose network.
set -eu
data=${PGDATA:-/var/lib/spate-postgres/data}
user=${POSTGRES_USER:-spate}
password=${POSTGRES_PASSWORD:-spate}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -n 1)
if [ ! -s "$data/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$password" >"$pwfile"
    "$bin/initdb" -D "$data" -U "$user" --pwfile="$pwfile" --auth-host=scram-sha-256 \
        --auth-local=trust >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >>"$data/postgresql.conf"
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$data/pg_hba.conf"
    "$bin/postgres" --single -D "$data" postgres <<SQL >/dev/null
CREATE DATABASE "$user" OWNER "$user";
SQL
fi
exec "$bin/postgres" -D "$data" -k /tmp
