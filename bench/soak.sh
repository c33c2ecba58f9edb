#!/usr/bin/env bash
# Soak test (not in CI): runs the sliding-window job over a long generated
# stream on a real cluster (development broker, master, two workers, each a
# process) and samples the job's state every interval, to show that state
# stays flat: windows the watermark closed leave it.
#
#   bash bench/soak.sh [minutes] [records per second]
#
# Uses target/release binaries when present, else target/debug. Prints one
# line per sample and a verdict comparing the second half with the first.
set -euo pipefail

minutes=${1:-10}
rate=${2:-2000}
sample_every=${SOAK_SAMPLE_SECONDS:-30}
# shellcheck source=bench/cluster.sh
source "$(dirname "$0")/cluster.sh"
mkdir -p "$work/workspace/jobs"
cp workspace/jobs/sliding_revenue.sql "$work/workspace/jobs/"
start_cluster 4
for i in 1 2; do start_worker "soak-$i"; done
$bin/driver produce --bootstrap "$kafka" --topic sales --rate "$rate" >"$work/produce.log" 2>&1 & pids+=($!)
sleep 2
SPATE_MASTER="http://$grpc" $bin/driver submit "$work/workspace/jobs/sliding_revenue.sql"
echo "soak: ${minutes} min at ${rate} records/s; web UI on http://$ui"
printf '%-8s %-8s %-12s %-12s %-12s %-10s %s\n' elapsed batch input_rows state_rows state_bytes late watermark

samples=()
end=$((SECONDS + minutes * 60))
while ((SECONDS < end)); do
    sleep "$sample_every"
    line=$(curl -fsS "http://$ui/api/v1/jobs/sliding_revenue/progress" | python3 -c '
import json, sys
p = json.load(sys.stdin) or {}
ops = p.get("stateOperators") or [{}]
print(p.get("batchId", "-"), sum(o.get("numRowsTotal", 0) for o in ops),
      sum(o.get("memoryUsedBytes", 0) for o in ops), p.get("lateRowsDropped", 0),
      (p.get("eventTime") or {}).get("watermark", "-"))')
    read -r batch state_rows state_bytes late watermark <<<"$line"
    total=$(curl -fsS "http://$ui/api/v1/jobs/sliding_revenue" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["input_rows"])')
    printf '%-8s %-8s %-12s %-12s %-12s %-10s %s\n' "${SECONDS}s" "$batch" "$total" "$state_rows" "$state_bytes" "$late" "$watermark"
    samples+=("$state_rows")
done

n=${#samples[@]}
if ((n < 4)); then echo "soak: too few samples for a verdict"; exit 0; fi
half=$((n / 2))
max_first=0; max_second=0
for ((i = 0; i < n; i++)); do
    v=${samples[$i]}
    if ((i < half)); then ((v > max_first)) && max_first=$v; else ((v > max_second)) && max_second=$v; fi
done
echo "soak: largest state in the first half ${max_first} rows, in the second half ${max_second} rows"
if ((max_second > max_first * 3 / 2 + 10)); then
    echo "soak: STATE GREW"; exit 1
fi
echo "soak: state is flat"
