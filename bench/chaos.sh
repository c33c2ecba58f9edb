#!/usr/bin/env bash
# Chaos test (not in CI): a cluster of processes (development broker, master,
# three workers) runs a job that writes every record's partition and offset,
# while a random worker is killed with SIGKILL every few seconds and started
# again. At the end it reads the committed sink and reports records lost and
# records written twice: both must be zero.
#
#   bash bench/chaos.sh [minutes] [records per second]
#
# Uses target/release binaries when present, else target/debug.
set -euo pipefail

minutes=${1:-3}
rate=${2:-2000}
kill_every=${CHAOS_KILL_SECONDS:-5}
# shellcheck source=bench/cluster.sh
source "$(dirname "$0")/cluster.sh"
start_cluster 6
for w in chaos-1 chaos-2 chaos-3; do start_worker "$w"; done

cat >"$work/workspace/positions.sql" <<'SQL'
CREATE EXTERNAL TABLE sales (customer VARCHAR, revenue DOUBLE) STORED AS KAFKA LOCATION 'sales';
CREATE EXTERNAL TABLE positions (p INT, o BIGINT, customer VARCHAR) STORED AS JSON LOCATION 'output/positions/';
SET spate.trigger.interval = '300ms';
INSERT INTO positions SELECT _partition, _offset, customer FROM sales;
SQL
SPATE_MASTER="http://$grpc" $bin/driver submit "$work/workspace/positions.sql"
records=$((minutes * 60 * rate))
$bin/driver produce --bootstrap "$kafka" --topic sales --rate "$rate" --count "$records" >"$work/produce.log" 2>&1 &
producer=$!
pids+=("$producer")
echo "chaos: ${records} records over ${minutes} min; a worker killed every ${kill_every}s; web UI on http://$ui"

kills=0
while kill -0 "$producer" 2>/dev/null; do
    sleep "$kill_every"
    victim=chaos-$((RANDOM % 3 + 1))
    kill -9 "${workers[$victim]}" 2>/dev/null || true
    wait "${workers[$victim]}" 2>/dev/null || true
    kills=$((kills + 1))
    sleep 1
    start_worker "$victim"
done
wait "$producer" || { echo "chaos: the producer failed" >&2; exit 1; }
echo "chaos: ${kills} workers killed; waiting for the job to read all ${records} records"

job_rows() { curl -fsS "http://$ui/api/v1/jobs/positions" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["input_rows"])'; }
for _ in $(seq 1 600); do
    [[ $(job_rows) -ge $records ]] && break
    sleep 1
done

python3 - "$work/workspace" "$records" <<'PY'
import collections, json, os, sys
root, expected = sys.argv[1], int(sys.argv[2])
manifests = os.path.join(root, "output/positions/_spate/manifests")
count = collections.Counter()
for name in os.listdir(manifests):
    for f in json.load(open(os.path.join(manifests, name)))["files"]:
        for line in open(os.path.join(root, f)):
            row = json.loads(line)
            count[(row["p"], row["o"])] += 1
twice = sum(n - 1 for n in count.values() if n > 1)
per_partition = collections.defaultdict(list)
for p, o in count:
    per_partition[p].append(o)
# Offsets of a partition are 0..n: a gap is a record lost in the middle.
gaps = sum(max(offsets) + 1 - len(offsets) for offsets in per_partition.values())
lost = max(0, expected - len(count))
print(f"chaos: {len(count)} distinct records committed of {expected}; "
      f"lost {lost} (gaps {gaps}), written twice {twice}")
sys.exit(0 if lost == 0 and gaps == 0 and twice == 0 else 1)
PY
