#!/usr/bin/env bash
# Bootstraps a bare Debian base image for podman from Debian packages, since no registry image
# can be pulled here, and caches it: podman keeps the image and IMAGE_CACHE keeps the tarball.
#
#   tests/fresh/base-image.sh [--arch amd64|arm64] [--suite bookworm] [--rebuild]
#
# Prints the image name on the last line. The base holds what a newcomer's machine is assumed
# to have and no more: python3, git and make (on a minimal Debian: apt, dpkg, coreutils, bash).
# DEBIAN_MIRROR overrides the mirror, which is otherwise the first Debian archive in this
# machine's apt sources.
set -euo pipefail

arch=amd64 suite=bookworm rebuild=false
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=${2:?--arch needs amd64 or arm64}; shift ;;
        --suite) suite=${2:?--suite needs a Debian suite}; shift ;;
        --rebuild) rebuild=true ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "base-image.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

cache=${IMAGE_CACHE:-/var/tmp/edgeblur-images}
image=localhost/edgeblur-base:$suite-$arch
tarball=$cache/base-$suite-$arch.tar

host_mirror() {
    local uri
    uri=$(grep -rhoE '(URIs:|^deb) +[^ ]+/debian/?( |$)' /etc/apt/sources.list \
        /etc/apt/sources.list.d/ 2>/dev/null | awk '{print $2}' | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

for tool in podman mmdebstrap; do
    if ! command -v "$tool" >/dev/null; then
        echo "base-image.sh: $tool is missing: apt-get install -y podman mmdebstrap" >&2
        exit 1
    fi
done

if ! $rebuild && podman image exists "$image"; then
    echo "base image $image: cached" >&2
    echo "$image"
    exit 0
fi
mkdir -p "$cache"
if $rebuild || [ ! -s "$tarball" ]; then
    mirror=${DEBIAN_MIRROR:-$(host_mirror)}
    security=${mirror%/debian}/debian-security
    echo "::: bootstrapping Debian $suite $arch from $mirror" >&2
    started=$(date +%s)
    mmdebstrap --variant=minbase --format=tar --arch="$arch" --include=python3,git,make \
        "$suite" "$tarball.partial" \
        "deb $mirror $suite main" "deb $mirror $suite-updates main" \
        "deb $security $suite-security main" >&2
    mv "$tarball.partial" "$tarball"
    echo "bootstrapped in $(( $(date +%s) - started )) s" >&2
fi
podman import --arch "$arch" --change 'CMD ["/bin/bash"]' "$tarball" "$image" >&2
echo "$image"
