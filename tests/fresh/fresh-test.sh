#!/usr/bin/env bash
# A newcomer's fresh machine: a new container from a bare Debian base (python3, git and make
# only) clones this repository, with ../shared mounted read-only beside it, and runs the
# README's `make test` as the only command. A missing install step fails here.
#
#   tests/fresh/fresh-test.sh [--suite bookworm] [--keep] [--make-run] [-- COMMAND...]
#
# --make-run: instead of `make test`, type `make run` and wait (up to 10 minutes, set-up
# included) for the demo camera's /readyz 200; then check that the OpenCV installed loads no
# X11 or GL library. (libxcb itself is on the machine: mediapipe's libEGL pulls it in.)
# What is tested is HEAD plus any uncommitted changes to tracked files (git stash create).
# COMMAND replaces `make test` (e.g. `-- make run` with a time limit of your own).
# Environment: IMAGE_CACHE (base tarball and pip download cache, default
# /var/tmp/edgeblur-images), FRESH_PIP_CACHE=0 to download every wheel again.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
suite=bookworm keep=false label="make test"
# `make run` in the background; the harness, not the newcomer, polls /readyz from inside.
# shellcheck disable=SC2016  # expanded by the container's shell
MAKE_RUN_CHECK='make run >/tmp/make-run.log 2>&1 & run=$!
for second in $(seq 1 600); do
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import urllib.request as u
u.urlopen(\"http://127.0.0.1:8080/readyz\", timeout=2)" 2>/dev/null; then
        echo "make run: /readyz 200 after $second s"
        cv2=$(.venv/bin/python -c "import cv2, os; print(os.path.dirname(cv2.__file__))")
        if find "$cv2" "$cv2"/../opencv*.libs -name "*.so*" | xargs ldd | grep -E "xcb|X11|libGL[.]"
        then
            echo "FAIL: this OpenCV loads X11 or GL libraries; the server build needs none" >&2
            exit 1
        fi
        echo "OpenCV loads no X11 or GL library: the headless build"
        kill $run; wait $run || true; exit 0
    fi
    if ! kill -0 $run 2>/dev/null; then
        tail -40 /tmp/make-run.log; echo "FAIL: make run ended" >&2; exit 1
    fi
    sleep 1
done
tail -40 /tmp/make-run.log; echo "FAIL: no /readyz 200 within 600 s" >&2; exit 1'
command=(make test)
while [ $# -gt 0 ]; do
    case "$1" in
        --suite) suite=${2:?--suite needs a Debian suite}; shift ;;
        --keep) keep=true ;;
        --make-run) command=(bash -c "$MAKE_RUN_CHECK") label="make run, until /readyz 200" ;;
        --) shift; command=("$@"); label="$*"; break ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "fresh-test.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
cache=${IMAGE_CACHE:-/var/tmp/edgeblur-images}
started=$(date +%s)
seconds() { echo "$(( $(date +%s) - started )) s"; }

image=$("$REPO/tests/fresh/base-image.sh" --suite "$suite" | tail -n1)
echo "::: base image $image ready after $(seconds)"

# The commit under test travels as a git bundle: a clone needs no network and no access to
# this checkout's object store (a worktree keeps it elsewhere).
work=$(mktemp -d "$cache/fresh.XXXXXX")
name=edgeblur-fresh-$$
cleanup() {
    podman --runtime runc rm -f "$name" >/dev/null 2>&1 || true
    git -C "$REPO" update-ref -d refs/fresh-test/head 2>/dev/null || true
    $keep || rm -rf "$work"
}
trap cleanup EXIT
commit=$(git -C "$REPO" stash create)
commit=${commit:-$(git -C "$REPO" rev-parse HEAD)}  # stash create prints nothing when clean
git -C "$REPO" update-ref refs/fresh-test/head "$commit"
git -C "$REPO" bundle create --quiet "$work/edgeblur.bundle" refs/fresh-test/head
head=$(git -C "$REPO" rev-parse HEAD)
echo "::: testing ${head:0:7}$([ "$commit" = "$head" ] || echo ' plus uncommitted changes')"

mounts=(-v "$work/edgeblur.bundle:/src/edgeblur.bundle:ro")
if [ -d "$REPO/../shared" ]; then
    mounts+=(-v "$(cd "$REPO/../shared" && pwd -P):/work/shared:ro")
fi
# A machine whose egress re-signs TLS (as this CI's does) has its own CA; hand its bundle in
# for pip and the model downloads. A machine on the open internet needs nothing.
environment=(-e CI=true)
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/host-ca.pem:ro)
    environment+=(-e PIP_CERT=/etc/host-ca.pem -e SSL_CERT_FILE=/etc/host-ca.pem
        -e REQUESTS_CA_BUNDLE=/etc/host-ca.pem)
fi
if [ "${FRESH_PIP_CACHE:-1}" = 1 ]; then
    mkdir -p "$cache/pip-cache"
    mounts+=(-v "$cache/pip-cache:/root/.cache/pip")
fi

clone='git init -q /work/edgeblur && cd /work/edgeblur
git fetch -q /src/edgeblur.bundle refs/fresh-test/head && git checkout -q -b fresh FETCH_HEAD'
echo "::: in a new $image container: $label"
podman --runtime runc run --name "$name" --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
    --shm-size 1g "${mounts[@]}" "${environment[@]}" "$image" \
    bash -c "set -e; $clone; cd /work/edgeblur; exec \"\$@\"" fresh "${command[@]}"
echo "::: fresh-machine test passed in $(seconds)"
