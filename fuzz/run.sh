#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [TARGET...]: runs each fuzz target (all three by
# default) for SECONDS (300) with cargo-fuzz and libFuzzer, and says for
# each whether it found a crash. Not part of CI: the instrumented build is
# a second build of DataFusion (some minutes, in fuzz/target).
#
#   decode_records  Kafka record values through the JSON, CSV and raw
#                   decoders, with every on_error mode (fail, drop, permissive)
#   plan_sql        job SQL as `driver submit` sends it, and statements as the
#                   REPL's are classified
#   decode_plan     plan bytes as a worker receives them (SpateCodec)
#
# Seeds are in fuzz/corpus/<target> (small, in the repository); a run works
# on a copy in fuzz/target/corpus, and a crash leaves its input in
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-300}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode_records plan_sql decode_plan)

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes nightly's -Z flags; a stable toolchain takes them so.
export RUSTC_BOOTSTRAP=1
# The same versions as the main build.
[ -f Cargo.lock ] || cp ../Cargo.lock Cargo.lock
# Unoptimized (a quicker build, and overflow checks on); no sanitizer: the
# code is safe Rust, what is sought is panics and hangs.
flags=(--dev --sanitizer none)
cargo fuzz build "${flags[@]}"

failed=()
for target in "${targets[@]}"; do
    work=target/corpus/$target
    mkdir -p "$work"
    cp -n corpus/"$target"/* "$work"/ 2>/dev/null || true
    if [ "$target" = plan_sql ]; then
        cp -n ../workspace/jobs/*.sql "$work"/
    fi
    echo "fuzz: $target for $seconds s"
    if cargo fuzz run "${flags[@]}" "$target" "$work" -- \
        -max_total_time="$seconds" -timeout=20 -max_len=8192 -rss_limit_mb=4096 \
        -print_final_stats=1 2>&1 | tee "target/$target.log" | grep -E "^#[0-9]+ +(DONE|pulse)|SUMMARY|stat::number_of_executed_units|stat::peak_rss"; then
        :
    fi
    # A panic that Spate catches (and turns into an error) is printed but is
    # no crash; libFuzzer's own summary is what says one happened.
    if grep -qE "SUMMARY: libFuzzer|ERROR: libFuzzer" "target/$target.log"; then
        failed+=("$target")
        echo "fuzz: $target FOUND A CRASH; its input is in fuzz/artifacts/$target/"
    else
        echo "fuzz: $target: no crash in $seconds s"
    fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz: crashes in ${failed[*]}"; exit 1; }
echo "fuzz: every target ran $seconds s with no crash"
