#!/usr/bin/env bash
# Spate's tests on a fresh Debian or Ubuntu machine: installs what they
# need, then runs them. The tests start every server they use themselves.
#
#   ./test.sh              every test of the workspace
#   ./test.sh ARGS...      handed to `cargo test --workspace`, e.g.
#                          ./test.sh --test controller
#
# Needs: cargo (https://rustup.rs); apt-get and pip install the rest.
set -euo pipefail
cd "$(dirname "$0")"

say() { echo "test.sh: $*"; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

command -v cargo >/dev/null || { echo "test.sh: error: cargo is not installed (https://rustup.rs)" >&2; exit 1; }

# Debian packages: a C toolchain and make for the bundled librdkafka, kcat
# for the interoperability test, Chromium and its WebDriver for the web
# UI's browser test, Redis and PostgreSQL servers for the sink tests (the
# tests start their own, on free loopback ports); Python and pip for the
# notebook checks, unless a Python with pip is on the PATH already.
packages=(gcc g++ make pkg-config zlib1g-dev kcat chromium chromium-driver redis-server postgresql)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3 python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt-get)"
    # An install cut short earlier (a machine stopped mid-apt) leaves dpkg
    # refusing every later install until it is finished.
    as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PyPI: nbformat validates the notebooks the REPL saves; jupyter_client
# and nbclient (Jupyter's reference client and notebook runner) drive the
# Jupyter kernel; moto's server is the S3-protocol store of the S3
# workspace tests.
pypi=(nbformat jupyter_client nbclient "moto[server]")
if ! python3 -c "import nbformat, jupyter_client, nbclient, moto.server, boto3" >/dev/null 2>&1; then
    say "installing ${pypi[*]} (pip)"
    python3 -m pip install --quiet "${pypi[@]}" 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages "${pypi[@]}"
fi

say "cargo test --workspace $*"
exec cargo test --workspace "$@"
