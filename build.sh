#!/usr/bin/env bash
# Builds Spate's Docker images: the binaries with cargo on the host, then the
# image from docker/Dockerfile and JupyterLab's from docker/jupyterlab/. Each
# step is skipped when its result is already there and current, so a second
# run is quick.
#
#   ./build.sh                      release binaries, image spate:latest
#   SPATE_PROFILE=debug ./build.sh  debug binaries (CI, docker/e2e.sh)
#
# Settings: SPATE_PROFILE (release | debug, default release), SPATE_IMAGE
# (default spate:latest), SPATE_JUPYTER_IMAGE (JupyterLab with the kernel,
# default spate-jupyterlab:latest), SPATE_DEBIAN_MIRROR (for the offline base
# image), SPATE_PREBUILT=1 (use the binaries in target/ without running cargo).
set -euo pipefail
cd "$(dirname "$0")"

profile=${SPATE_PROFILE:-release}
image=${SPATE_IMAGE:-spate:latest}
base=debian:bookworm-slim
mirror=${SPATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { echo "build.sh: $*"; }
# took WHAT: says how long WHAT took since the last call.
mark=$SECONDS
took() {
    say "$1 took $((SECONDS - mark)) s"
    mark=$SECONDS
}
die() { echo "build.sh: error: $*" >&2; exit 1; }

case "$profile" in
    release) cargo_flags=(--release); target_dir=target/release ;;
    debug) cargo_flags=(); target_dir=target/debug ;;
    *) die "SPATE_PROFILE must be release or debug, not '$profile'" ;;
esac
command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info fails)"

# 1. Binaries. Cargo rebuilds only what changed. SPATE_PREBUILT=1 takes the
# binaries already in target/ as they are: `cargo test` builds them with the
# dev-dependencies' features unified in, so a plain `cargo build` would
# recompile most of the dependency tree (minutes) for the same programs.
if [ "${SPATE_PREBUILT:-0}" = 1 ]; then
    for bin in master worker driver; do
        [ -x "$target_dir/$bin" ] || die "SPATE_PREBUILT=1, but $target_dir/$bin is missing: build it first"
    done
    say "using the binaries already in $target_dir (SPATE_PREBUILT=1)"
else
    say "cargo build --bins (${profile}); cargo skips what is up to date"
    cargo build --bins "${cargo_flags[@]}"
    took "cargo build"
fi

# 2. Stage the binaries in the build context. A copy keeps its source's mtime,
# so an unchanged binary is not copied again (and the image not rebuilt).
# Debug binaries lose their line tables (about 200 MB each): CI's image needs
# no source lines in backtraces. Release binaries keep what Cargo.toml asks for.
mkdir -p docker/bin
copied=no
for bin in master worker driver; do
    src=$target_dir/$bin
    dst=docker/bin/$bin
    if [ -e "$dst" ] && ! [ "$src" -nt "$dst" ] && ! [ "$dst" -nt "$src" ]; then
        say "docker/bin/$bin is up to date"
        continue
    fi
    say "copying $src to docker/bin/"
    if [ "$profile" = debug ]; then
        strip --strip-debug -o "$dst.tmp" "$src"
    else
        cp "$src" "$dst.tmp"
    fi
    touch -r "$src" "$dst.tmp"
    mv "$dst.tmp" "$dst"
    copied=yes
done
[ "$copied" = no ] || took "staging the binaries"

make_base_image() {
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root: run as root, or pull $base where a registry is reachable"
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        dpkg --configure -a  # finish an install a stopped machine cut short
        apt-get update -qq
        apt-get install -y -qq debootstrap >/dev/null
    fi
    rootfs=$(mktemp -d)
    # mktemp's 0700 would become the image's / and lock out the non-root user.
    chmod 755 "$rootfs"
    # debootstrap mounts /proc and /sys inside the root while it runs: unmount
    # whatever is left before deleting, so that rm never walks into them.
    cleanup_rootfs() {
        grep -o " $rootfs/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l || true
        rm -rf --one-file-system "$rootfs"
    }
    trap cleanup_rootfs EXIT
    say "debootstrap --variant=minbase bookworm (a minute or more; its log: $rootfs.log)"
    if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
        tail -n 30 "$rootfs.log" >&2
        die "debootstrap failed; its log: $rootfs.log"
    fi
    rm -f "$rootfs.log"
    # Like Debian's slim images: no package lists, caches, manuals or docs.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    say "importing the root filesystem as $base"
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase bookworm, by Spate's build.sh" \
        - "$base" >/dev/null
    cleanup_rootfs
    trap - EXIT
    took "making $base offline"
}

# 3. The base image. Without a registry, build it from Debian's package
# mirror, which stays reachable where registries are not.
mark=$SECONDS
if docker image inspect "$base" >/dev/null 2>&1; then
    say "base image $base is present"
else
    say "base image $base is missing: pulling it"
    if timeout 120 docker pull "$base"; then
        say "pulled $base"
    else
        say "cannot pull $base: making it with debootstrap from $mirror instead"
        make_base_image
    fi
fi

# 4. The image. Its label records what it was built from; when nothing changed
# there is nothing to do (the legacy builder would resend the ~750 MB context).
fingerprint=$(
    {
        cat docker/Dockerfile docker/healthcheck.sh docker/postgres.sh
        docker image inspect --format '{{.Id}}' "$base"
        stat --format '%n %s %Y' docker/bin/master docker/bin/worker docker/bin/driver
    } | sha256sum | cut -c1-16
)
current=$(docker image inspect --format '{{index .Config.Labels "spate.fingerprint"}}' "$image" 2>/dev/null || true)
if [ "$current" = "$fingerprint" ]; then
    say "image $image is up to date ($profile binaries, fingerprint $fingerprint)"
else
    say "building image $image from docker/ ($profile binaries)"
    mark=$SECONDS
    docker build --label "spate.fingerprint=$fingerprint" --label "spate.profile=$profile" \
        --tag "$image" docker
    took "building $image"
fi

# 5. JupyterLab with the Spate SQL kernel, on top of the image.
jupyter_image=${SPATE_JUPYTER_IMAGE:-spate-jupyterlab:latest}
jupyter_fingerprint=$(
    {
        cat docker/jupyterlab/Dockerfile docker/jupyterlab/s3.py
        docker image inspect --format '{{.Id}}' "$image"
    } | sha256sum | cut -c1-16
)
current=$(docker image inspect --format '{{index .Config.Labels "spate.fingerprint"}}' "$jupyter_image" 2>/dev/null || true)
if [ "$current" = "$jupyter_fingerprint" ]; then
    say "image $jupyter_image is up to date"
else
    # The wheels come from PyPI through the host's pip, which has the
    # network and certificates the build container may lack; the image
    # installs from them offline. The platform is the image's: Debian
    # bookworm's CPython 3.11 on x86-64 glibc.
    wheels=docker/jupyterlab/wheels
    packages=(jupyterlab "moto[server]")
    if [ "$(cat "$wheels/.complete" 2>/dev/null)" != "${packages[*]}" ]; then
        command -v python3 >/dev/null || die "python3 with pip is needed to fetch JupyterLab's wheels"
        say "downloading the wheels of ${packages[*]} from PyPI into $wheels/"
        rm -rf "$wheels"
        python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
            --implementation cp --python-version 3.11 --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --dest "$wheels" "${packages[@]}" || die "pip download ${packages[*]} failed"
        echo "${packages[*]}" > "$wheels/.complete"
        took "downloading JupyterLab and moto"
    fi
    say "building image $jupyter_image from docker/jupyterlab/"
    mark=$SECONDS
    docker build --label "spate.fingerprint=$jupyter_fingerprint" \
        --build-arg "SPATE_IMAGE=$image" --tag "$jupyter_image" docker/jupyterlab
    took "building $jupyter_image"
fi
