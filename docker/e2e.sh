#!/usr/bin/env bash
# End-to-end test of the Docker packaging on this machine's Docker engine,
# offline: builds the image (../build.sh, debug binaries), starts the compose
# cluster with Spate's development broker as Kafka, over TLS with
# docker/tls.sh's certificates and a cluster secret, submits the sample job,
# scales the workers to 3, kills one, and checks that the job commits on.
# Prints one `ok:` line per check, with the seconds it took. Run by .ci/run.
#
# Settings: SPATE_E2E_TIMEOUT, the most seconds any one wait may take (120).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
    echo "docker e2e: skipped, no Docker engine answers"
    exit 0
fi

fail() {
    echo "docker e2e: FAILED: $*" >&2
    exit 1
}
# Any other command that fails ends the script (set -e): say which.
trap 'echo "docker e2e: FAILED at line $LINENO: $BASH_COMMAND exited with $?" >&2' ERR

if docker compose version >/dev/null 2>&1; then
    compose_bin=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose_bin=(docker-compose)
else
    fail "a Docker engine answers, but neither 'docker compose' nor docker-compose is installed"
fi
command -v python3 >/dev/null || fail "python3 is needed to read the master's JSON API"

timeout_s=${SPATE_E2E_TIMEOUT:-120}
job=sales_filter
sink=output/sales_filter

began=$SECONDS
step_began=$SECONDS
ok() {
    echo "ok: $* ($((SECONDS - step_began)) s)"
    step_began=$SECONDS
}

# Checks against the master's API (UI) and the workspace's sink manifests.
# Exit 0: satisfied; 1: not yet; 3: never will be (the wait stops at once).
read -r -d '' checks <<'PYTHON' || true
import json, os, ssl, sys, urllib.error, urllib.request

tls = ssl.create_default_context(cafile=os.environ["CA"])

def api(path, secret=os.environ["SECRET"]):
    request = urllib.request.Request(os.environ["UI"] + path, headers={"X-Spate-Secret": secret})
    with urllib.request.urlopen(request, timeout=5, context=tls) as answer:
        return json.load(answer)

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "guarded":  # the API refuses a wrong secret, plain HTTP gets nothing
    try:
        api("/api/v1/jobs", secret="guess")
        sys.exit("the API answered a wrong secret")
    except urllib.error.HTTPError as refused:
        if refused.code != 401:
            sys.exit(f"a wrong secret got {refused.code}, not 401")
    try:
        urllib.request.urlopen(os.environ["UI"].replace("https:", "http:") + "/healthz", timeout=5)
        answered = True
    except Exception:  # refused, reset or garbled: anything but an answer
        answered = False
    if answered:
        sys.exit("the UI answered plain HTTP")
    print("401 without the secret; plain HTTP refused")
elif cmd == "alive":  # alive N [DEAD_HOST]
    workers = api("/api/v1/workers")
    print(" ".join(f"{w['host']}:{w['state']}" for w in workers))
    alive = sum(w["state"] == "ALIVE" for w in workers)
    dead_ok = len(args) < 2 or any(
        w["host"] == args[1] and w["state"] == "DEAD" for w in workers)
    sys.exit(0 if alive == int(args[0]) and dead_ok else 1)
elif cmd == "job":  # job ID MIN_BATCHES MIN_INPUT_ROWS: it must be RUNNING
    job = next((j for j in api("/api/v1/jobs") if j["id"] == args[0]), None)
    if job is None:
        sys.exit(f"no job {args[0]} yet")
    print(job["state"], job["batches"], job["input_rows"])
    if job["state"] != "RUNNING":
        print("error:", job.get("error"))
        sys.exit(3)
    sys.exit(0 if job["batches"] >= int(args[1]) and job["input_rows"] >= int(args[2]) else 1)
elif cmd == "sink":  # sink WORKSPACE DIR MIN_BATCHES: committed batches and rows
    workspace, sink, min_batches = args[0], args[1], int(args[2])
    manifests = os.path.join(workspace, sink, "_spate", "manifests")
    batches = rows = 0
    for name in os.listdir(manifests) if os.path.isdir(manifests) else []:
        if name.startswith("compact-"):
            continue
        with open(os.path.join(manifests, name)) as f:
            manifest = json.load(f)
        missing = [p for p in manifest["files"]
                   if not os.path.isfile(os.path.join(workspace, p))]
        if missing:
            print(f"batch {manifest['batch']} names missing files: {missing}")
            sys.exit(3)
        batches += 1
        rows += manifest["rows"]
    print(batches, rows)
    sys.exit(0 if batches >= min_batches and rows > 0 else 1)
PYTHON
check() {
    UI="https://127.0.0.1:$ui_port" CA="$tmp/tls/ca.pem" SECRET="$SPATE_SECRET" \
        python3 -c "$checks" "$@"
}

# wait_for WHAT COMMAND...: runs COMMAND every second until it succeeds, for
# at most $timeout_s seconds. Its last output is kept in $last.
last=
wait_for() {
    local what=$1 deadline=$((SECONDS + timeout_s)) rc
    shift
    while :; do
        rc=0
        last=$("$@" 2>&1) || rc=$?
        [ "$rc" -eq 0 ] && return 0
        [ "$rc" -eq 3 ] && fail "$what: $last"
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within $timeout_s s (last: $last)"
        sleep 1
    done
}

echo "docker e2e: using ${compose_bin[*]}"

# The real-Kafka file cannot run here (no registry for apache/kafka), but it
# must at least be valid.
"${compose_bin[@]}" --file docker-compose.yml config --quiet ||
    fail "docker-compose.yml is not a valid compose file"
ok "docker-compose.yml (with apache/kafka) is valid: ${compose_bin[*]} config"

# 1. The image, offline: build.sh makes debian:bookworm-slim with debootstrap
# when it cannot pull it.
SPATE_PROFILE=debug ./build.sh
image=${SPATE_IMAGE:-spate:latest}
[ "$(docker image inspect --format '{{.Config.User}}' "$image")" = spate ] ||
    fail "the image $image does not run as the user spate"
ok "build.sh made $image (debug binaries), which runs as the non-root user spate"

# 2. A scratch workspace, so that the repository's workspace/ stays clean. The
# containers run as a non-root uid that must own it: the caller's own, or 1000
# when the caller is root.
tmp=$(mktemp -d)
workspace=$tmp/workspace
mkdir "$workspace"
cp -r workspace/jobs workspace/data "$workspace"/
# TLS as a team would deploy it: docker/tls.sh's certificates, and a secret.
sh docker/tls.sh "$tmp/tls" >/dev/null
export SPATE_TLS_DIR=$tmp/tls SPATE_SECRET=e2e-secret-$$
if [ "$(id -u)" -eq 0 ]; then
    export SPATE_UID=1000 SPATE_GID=1000
    chown -R "$SPATE_UID:$SPATE_GID" "$workspace" "$tmp/tls"
else
    SPATE_UID=$(id -u) SPATE_GID=$(id -g)
    export SPATE_UID SPATE_GID
fi
# Free host ports, so that parallel runs (and a cluster on 8080) do not clash.
read -r ui_port master_port redis_port postgres_port jupyter_port s3_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
export SPATE_WORKSPACE_DIR=$workspace SPATE_UI_PORT=$ui_port SPATE_MASTER_PORT=$master_port \
    SPATE_REDIS_PORT=$redis_port SPATE_POSTGRES_PORT=$postgres_port SPATE_JUPYTER_PORT=$jupyter_port \
    SPATE_S3_PORT=$s3_port
# A dead worker is noticed sooner than the default 10 s.
export SPATE_WORKER_TIMEOUT=4

project=spate-e2e-$$
compose=("${compose_bin[@]}" --project-name "$project"
    --file docker-compose.yml --file docker/compose.offline.yml --file docker/compose.tls.yml)

passed=no
cleanup() {
    if [ "$passed" != yes ]; then
        echo "--- containers of $project"
        "${compose[@]}" ps || true
        echo "--- their logs (last 80 lines each)"
        "${compose[@]}" logs --no-color --tail=80 || true
    fi
    "${compose[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 3. The cluster. `up` starts each service once what it depends on is healthy.
"${compose[@]}" up --detach --scale worker=2 2>&1 | sed 's/^/  /'
healthy() {
    local ids
    ids=$("${compose[@]}" ps -q)
    [ "$(wc -w <<<"$ids")" -eq "$1" ] || return 1
    # shellcheck disable=SC2086 # one argument per container id
    docker inspect --format \
        '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}' \
        $ids | awk '{ print } $2 != "running" || $3 != "healthy" { bad = 1 } END { exit bad }'
}
wait_for "kafka (offline broker), master, 2 workers, producer, redis, postgres and jupyterlab healthy" healthy 8
ok "up: offline broker, master, 2 workers, producer, redis, postgres and jupyterlab running and healthy (UI on :$ui_port)"
wait_for "2 workers ALIVE in /api/v1/workers" check alive 2
ok "2 workers ALIVE in /api/v1/workers"
wait_for "the UI to refuse outsiders" check guarded
ok "over TLS with a secret: $last"

# JupyterLab: its log prints the URL with its token, with which its API
# lists the Spate SQL kernel; a kernel started from that kernelspec in the
# container (by jupyter_client, as the server starts it) runs a query over
# the sales topic on the cluster, through TLS and the secret.
jupyter_token() {
    "${compose[@]}" logs --no-color jupyterlab 2>/dev/null |
        grep -o 'token=[0-9a-f]*' | sed -n 1p | cut -d= -f2 | grep .
}
wait_for "jupyterlab to print its token" jupyter_token
token=$last
read -r -d '' kernelspecs <<'PYTHON' || true
import json, os, sys, urllib.request
request = urllib.request.Request(os.environ["JUPYTER"] + "/api/kernelspecs",
                                 headers={"Authorization": "token " + os.environ["TOKEN"]})
with urllib.request.urlopen(request, timeout=10) as answer:
    specs = json.load(answer)["kernelspecs"]
name = specs.get("spate", {}).get("spec", {}).get("display_name")
if name != "Spate SQL":
    sys.exit(f"no Spate SQL kernelspec among {sorted(specs)}")
print(name)
PYTHON
JUPYTER="http://127.0.0.1:$jupyter_port" TOKEN="$token" python3 -c "$kernelspecs" ||
    fail "jupyterlab's /api/kernelspecs on :$jupyter_port"
ok "jupyterlab on :$jupyter_port printed its token, and its /api/kernelspecs lists Spate SQL"
read -r -d '' cell <<'PYTHON' || true
import sys
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name="spate", startup_timeout=60)
try:
    reply = kc.execute_interactive(
        "CREATE EXTERNAL TABLE sales (id BIGINT, customer VARCHAR, revenue DOUBLE)\n"
        "STORED AS KAFKA LOCATION 'sales' OPTIONS ('format' 'json');\n"
        "\\set format csv\n"
        "SELECT count(*) AS n FROM sales;",
        timeout=60, output_hook=lambda m: m["msg_type"] == "execute_result" and
            print(m["content"]["data"]["text/plain"].splitlines()[-1]))
finally:
    km.shutdown_kernel()
sys.exit(0 if reply["content"]["status"] == "ok" else reply["content"].get("evalue"))
PYTHON
out=$("${compose[@]}" exec -T jupyterlab python3 -c "$cell" 2>&1) || fail "a cell on the kernel: $out"
records=$(tail -n1 <<<"$out")
[ "$records" -gt 0 ] 2>/dev/null || fail "a cell on the kernel counted no sales: $out"
ok "a Spate SQL kernel in the jupyterlab container counted $records sales on the cluster"

# 4. The sample job, submitted from inside the master's container.
out=$("${compose[@]}" exec -T master driver submit /workspace/jobs/$job.sql 2>&1) ||
    fail "driver submit: $out"
wait_for "job $job RUNNING" check job "$job" 0 0
ok "submitted jobs/$job.sql; the job is RUNNING"
wait_for "rows committed to $sink" check sink "$workspace" "$sink" 1
read -r batches rows <<<"$last"
ok "the sink has rows: $batches committed batches, $rows rows in $sink/_spate/manifests/"
owner_uid=$(find "$workspace/$sink" -name '*.parquet' -printf '%U' -quit)
[ "$owner_uid" = "$SPATE_UID" ] || fail "sink files belong to uid $owner_uid, not $SPATE_UID"
ok "sink files belong to uid $SPATE_UID on the host, not root"

# The store sample jobs: running totals per id in Redis and PostgreSQL.
for store in redis postgres; do
    out=$("${compose[@]}" exec -T master driver submit "/workspace/jobs/running_revenue_$store.sql" 2>&1) ||
        fail "driver submit running_revenue_$store.sql: $out"
done
redis_keys() {
    local n
    n=$("${compose[@]}" exec -T redis redis-cli --scan --pattern 'revenue:*' | wc -l)
    echo "$n keys"
    [ "$n" -gt 0 ]
}
wait_for "running totals in redis" redis_keys
ok "running_revenue_redis.sql keeps totals in the redis service: $last revenue:*"
postgres_rows() {
    local n
    n=$("${compose[@]}" exec -T postgres psql -h /tmp -U spate -tAc \
        'SELECT count(*) FROM revenue_by_id' 2>/dev/null) || return 1
    echo "$n rows"
    [ "$n" -gt 0 ]
}
wait_for "running totals in postgres" postgres_rows
ok "running_revenue_postgres.sql keeps totals in the postgres service: $last in revenue_by_id"

# 5. Scale out.
"${compose[@]}" up --detach --scale worker=3 2>&1 | sed 's/^/  /'
wait_for "3 workers ALIVE in /api/v1/workers" check alive 3
ok "--scale worker=3: 3 workers ALIVE in /api/v1/workers"

# 6. Kill a worker: its tasks run elsewhere, and the job goes on.
# sed, not head: head leaves early, and under pipefail the writer's SIGPIPE
# would end this script without a word.
victim=$("${compose[@]}" ps -q worker | sed -n 1p)
wait_for "job $job status" check job "$job" 0 0
read -r _ batches0 input0 <<<"$last"
wait_for "committed batches" check sink "$workspace" "$sink" 1
read -r committed0 _ <<<"$last"
docker kill "$victim" >/dev/null
wait_for "the killed worker DEAD, 2 ALIVE" check alive 2 "${victim:0:12}"
ok "docker kill of worker ${victim:0:12}: the master lists it DEAD, 2 ALIVE"
wait_for "job $job going on after the kill" check job "$job" $((batches0 + 5)) $((input0 + 1))
read -r _ batches1 input1 <<<"$last"
wait_for "batches committed after the kill" check sink "$workspace" "$sink" $((committed0 + 5))
read -r committed1 rows1 <<<"$last"
ok "after the kill the job stayed RUNNING: batches $batches0 -> $batches1, input rows $input0 -> $input1, committed batches $committed0 -> $committed1"
ok "all $committed1 committed manifests ($rows1 rows) name files that exist"

# 7. The workspace on S3 (docker/compose.s3.yml): moto's server as the s3
# service, and master and workers recreated on its bucket, sharing no folder.
compose_s3=("${compose[@]}" --file docker/compose.s3.yml)
"${compose_s3[@]}" up --detach --scale worker=2 2>&1 | sed 's/^/  /'
wait_for "2 workers ALIVE on the S3 workspace" check alive 2
out=$("${compose_s3[@]}" exec -T master driver submit /workspace/jobs/$job.sql 2>&1) ||
    fail "driver submit on the S3 workspace: $out"
wait_for "job $job committing on the S3 workspace" check job "$job" 3 1
read -r _ batches input <<<"$last"
read -r -d '' bucket <<'PYTHON' || true
import boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:9000", region_name="us-east-1",
                  aws_access_key_id="spate", aws_secret_access_key="spate")
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
    Bucket="spate", Prefix="workspace/output/sales_filter/") for o in page.get("Contents", [])]
parts = sum(k.endswith(".parquet") for k in keys)
manifests = sum("/_spate/manifests/" in k for k in keys)
print(parts, manifests)
assert parts > 0 and manifests > 0, keys
PYTHON
bucket_objects() { "${compose_s3[@]}" exec -T s3 /opt/s3/bin/python3 -c "$bucket"; }
wait_for "sink objects in the bucket" bucket_objects
read -r parts manifests <<<"$last"
ok "on s3://spate/workspace the job ran $batches batches ($input input rows); the bucket holds $parts Parquet parts and $manifests manifests"

# 8. Down, and nothing of the project left behind.
"${compose_s3[@]}" down --volumes --remove-orphans --timeout 10 2>&1 | sed 's/^/  /'
left=$(
    docker ps -aq --filter "label=com.docker.compose.project=$project"
    docker network ls -q --filter "label=com.docker.compose.project=$project"
    docker volume ls -q --filter "label=com.docker.compose.project=$project"
)
[ -z "$left" ] || fail "down left containers, networks or volumes: $left"
ok "down --volumes: no container, network or volume of $project left"

passed=yes
echo "docker e2e: passed in $((SECONDS - began)) s"
