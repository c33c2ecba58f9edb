# Sourced by soak.sh and chaos.sh: a cluster of processes on free loopback
# ports in a temporary workspace, stopped and removed on exit.
#
# After `start_cluster PARTITIONS`: $bin, $work, $kafka, $grpc, $ui are set,
# the development broker (topic `sales`) and the master run, and
# `start_worker ID` starts a worker whose pid is ${workers[ID]}.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=target/release
[[ -x $bin/master ]] || bin=target/debug
for b in master worker driver; do
    [[ -x $bin/$b ]] || { echo "$(basename "$0"): build first: cargo build (missing $bin/$b)" >&2; exit 2; }
done

work=$(mktemp -d)
mkdir -p "$work/workspace"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kafka=127.0.0.1:$(port)
grpc=127.0.0.1:$(port)
ui=127.0.0.1:$(port)
declare -A workers
pids=()
cleanup() {
    kill "${pids[@]}" "${workers[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_worker() {
    $bin/worker --master "http://$grpc" --workspace "$work/workspace" --id "$1" --slots 2 >>"$work/$1.log" 2>&1 &
    workers[$1]=$!
}

start_cluster() {
    $bin/driver broker --listen "$kafka" --topic "sales:$1" >"$work/broker.log" 2>&1 &
    pids+=($!)
    sleep 1
    $bin/master --bind "$grpc" --ui-bind "$ui" --workspace "$work/workspace" --kafka-bootstrap "$kafka" >"$work/master.log" 2>&1 &
    pids+=($!)
    sleep 1
}
