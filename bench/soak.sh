#!/usr/bin/env bash
# Soak test (not in CI): runs the sliding-window job over a long generated
# stream on a real cluster (development broker, master, two workers, each a
# process) and samples it as it goes, to show that what a long-running job
# leaves stays flat once the retention fills: state rows (closed windows
# leave), checkpoint files (spate.checkpoint.retained_batches), the sink's
# manifests (compacted every job.manifest_compaction batches), the time a
# query over the sink takes, and the master's and workers' memory.
#
#   bash bench/soak.sh [batches] [records per second]
#
# Defaults: 20,000 batches at 2,000 records/s with a 1 s trigger, which takes
# about 6 hours; SOAK_TRIGGER=100ms gets there sooner. Samples every
# SOAK_SAMPLE_SECONDS (30). Uses target/release binaries when present, else
# target/debug. Prints one line per sample and a verdict comparing the
# second half of the run with the first.
set -euo pipefail

batches=${1:-20000}
rate=${2:-2000}
trigger=${SOAK_TRIGGER:-1s}
sample_every=${SOAK_SAMPLE_SECONDS:-30}
# shellcheck source=bench/cluster.sh
source "$(dirname "$0")/cluster.sh"
job=sliding_revenue
mkdir -p "$work/workspace/jobs"
sed "s/SET spate.trigger.interval = '1s';/SET spate.trigger.interval = '$trigger';/" \
    workspace/jobs/$job.sql >"$work/workspace/jobs/$job.sql"
grep -q "interval = '$trigger'" "$work/workspace/jobs/$job.sql" || { echo "soak: cannot set the trigger" >&2; exit 2; }
start_cluster 4
for i in 1 2; do start_worker "soak-$i"; done
$bin/driver produce --bootstrap "$kafka" --topic sales --rate "$rate" >"$work/produce.log" 2>&1 & pids+=($!)
sleep 2
SPATE_MASTER="http://$grpc" $bin/driver submit "$work/workspace/jobs/$job.sql"
master_pid=${pids[1]}
# A query over the sink, as a user's REPL would run it: its time is the
# manifests' read time plus a constant (the REPL's start, the scan).
cat >"$work/scan.sql" <<'SQL'
CREATE EXTERNAL TABLE revenue STORED AS PARQUET LOCATION 'output/sliding_revenue/';
SELECT count(*) AS n FROM revenue;
SQL
echo "soak: $batches batches of $trigger at $rate records/s; web UI on http://$ui"
columns='%-8s %-7s %-11s %-10s %-10s %-9s %-8s %-10s %s\n'
printf "$columns" elapsed batch input_rows state_rows ckpt_files manifests scan_ms master_mb workers_mb

rss_mb() { ps -o rss= -p "$@" 2>/dev/null | awk '{ s += $1 } END { printf "%d", s / 1024 }'; }
declare -a s_state s_files s_manifests s_scan s_master s_workers
batch=0
while ((batch < batches)); do
    sleep "$sample_every"
    read -r batch state_rows < <(curl -fsS "http://$ui/api/v1/jobs/$job/progress" | python3 -c '
import json, sys
p = json.load(sys.stdin) or {}
ops = p.get("stateOperators") or [{}]
print(p.get("batchId", 0), sum(o.get("numRowsTotal", 0) for o in ops))')
    total=$(curl -fsS "http://$ui/api/v1/jobs/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["input_rows"])')
    files=$(find "$work/workspace/_spate/checkpoints/$job" -type f | wc -l)
    manifests=$(find "$work/workspace/output/$job/_spate/manifests" -type f 2>/dev/null | wc -l)
    began=$(date +%s%N)
    $bin/driver repl --master "http://$grpc" --format csv -f "$work/scan.sql" >/dev/null 2>&1 || true
    scan_ms=$((($(date +%s%N) - began) / 1000000))
    master_mb=$(rss_mb "$master_pid")
    workers_mb=$(rss_mb "${workers[@]}")
    printf "$columns" "${SECONDS}s" "$batch" "$total" "$state_rows" "$files" "$manifests" "$scan_ms" "$master_mb" "$workers_mb"
    s_state+=("$state_rows") s_files+=("$files") s_manifests+=("$manifests")
    s_scan+=("$scan_ms") s_master+=("$master_mb") s_workers+=("$workers_mb")
done

n=${#s_state[@]}
if ((n < 4)); then echo "soak: too few samples for a verdict"; exit 0; fi
# The largest value of each half of the run; a figure grew where the second
# half's exceeds the first's by half and a little more.
grew=0
verdict() {
    local name=$1 slack=$2; shift 2
    local values=("$@") half=$((${#values[@]} / 2)) first=0 second=0 i
    for ((i = 0; i < ${#values[@]}; i++)); do
        if ((i < half)); then ((values[i] > first)) && first=${values[i]}
        else ((values[i] > second)) && second=${values[i]}; fi
    done
    local flat=flat
    ((second > first * 3 / 2 + slack)) && { flat=GREW; grew=1; }
    printf 'soak: %-16s first half at most %-8s second half at most %-8s %s\n' "$name" "$first" "$second" "$flat"
}
verdict "state rows" 10 "${s_state[@]}"
verdict "checkpoint files" 10 "${s_files[@]}"
verdict "manifests" 10 "${s_manifests[@]}"
verdict "scan ms" 200 "${s_scan[@]}"
verdict "master MB" 20 "${s_master[@]}"
verdict "workers MB" 40 "${s_workers[@]}"
exit $grew
