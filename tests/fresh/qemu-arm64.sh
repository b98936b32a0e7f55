#!/usr/bin/env bash
# Lets this amd64 machine run arm64 containers (the Raspberry Pi and Jetson architecture)
# under qemu user emulation: installs qemu-user-static and arch-test if needed, mounts
# binfmt_misc if absent and registers the aarch64 handler, then checks with arch-test.
# Needs root. Idempotent. Emulation is for functional checks only, never for speed figures.
set -euo pipefail

if ! command -v arch-test >/dev/null || [ ! -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
    echo "::: installing qemu-user-static and arch-test"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        qemu-user-static arch-test
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # The F flag (in Debian's file) loads the interpreter now, so it works inside containers.
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
fi
arch-test arm64 >/dev/null || { echo "qemu-arm64.sh: arm64 binaries do not run here" >&2; exit 1; }
echo "arm64 emulation: ready"
