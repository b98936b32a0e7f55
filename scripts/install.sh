#!/usr/bin/env bash
# The one installer behind CI (.ci/run), both Dockerfiles and scripts/install-pi.sh, so every
# place installs the same system packages and the same Python environment.
#
#   scripts/install.sh --system                      runtime libraries (apt)
#   scripts/install.sh --system --test-system        ... plus what the test suite runs for real
#   scripts/install.sh --venv .venv --extras test --editable
#   scripts/install.sh --venv /opt/edgeblur/venv --extras blazeface --models \
#                      --model-dir /opt/edgeblur/models
#
# Idempotent: installed apt packages are not fetched again (no apt-get update either), an
# existing virtual environment is reused, and cached models are only re-verified. Every command
# is printed before it runs; --dry-run prints them without running anything.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# What the pip wheels load from the system at run time, found with ldd on slim Debian:
# opencv-contrib-python needs libGL.so.1, libgthread/libglib-2.0 and libxcb.so.1; mediapipe
# (the blazeface extra) needs libEGL.so.1 and libGLESv2.so.2. PyAV bundles its own FFmpeg.
# ca-certificates: `edgeblur models fetch` downloads over HTTPS.
# The RTSP server of `edgeblur serve` (rtsp://HOST:8554/<camera>) is GStreamer's
# gst-rtsp-server, run by Debian's python3 through PyGObject: python3-gi, its typelib, and the
# plugins its pipeline uses (appsrc from -base, rtph264pay and the RTP session from -good).
RUNTIME_PACKAGES="ca-certificates libgl1 libglib2.0-0 libxcb1 libegl1 libgles2 \
python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
# What CI and the tests run for real: make (`make test`), the ffmpeg CLI, a GStreamer RTSP
# server on loopback (through PyGObject), and Chromium with its driver for the dashboard's
# Selenium tests.
TEST_PACKAGES="make ffmpeg gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good \
gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav chromium chromium-driver"

usage() {
    cat <<USAGE
usage: scripts/install.sh [options]

  --system            install the runtime system packages (apt):
                      $RUNTIME_PACKAGES
  --test-system       install the packages the test suite needs (apt):
                      $TEST_PACKAGES
  --venv DIR          create (or reuse) a virtual environment in DIR and pip install edgeblur
  --extras LIST       optional dependency groups, comma-separated (e.g. test or blazeface)
  --editable          install the repository in editable mode (development, CI)
  --python PYTHON     interpreter for the venv (default: python3)
  --models            fetch and verify the default models (edgeblur models fetch)
  --model NAME        fetch this model instead of the default set (repeatable; implies --models)
  --model-dir DIR     model cache directory for --models (default: \$EDGEBLUR_MODEL_DIR or the
                      user's cache directory)
  --dry-run           print the commands without running them
  -h, --help          this help
USAGE
}

want_system=false want_test_system=false want_models=false editable=false dry_run=false
venv="" extras="" model_dir="" python=python3
models=()
while [ $# -gt 0 ]; do
    case "$1" in
        --system) want_system=true ;;
        --test-system) want_test_system=true ;;
        --venv) venv=${2:?--venv needs a directory}; shift ;;
        --extras) extras=${2?--extras needs a list (may be empty)}; shift ;;
        --editable) editable=true ;;
        --python) python=${2:?--python needs an interpreter}; shift ;;
        --models) want_models=true ;;
        --model) models+=("${2:?--model needs a name}"); want_models=true; shift ;;
        --model-dir) model_dir=${2:?--model-dir needs a directory}; shift ;;
        --dry-run) dry_run=true ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if ! $want_system && ! $want_test_system && [ -z "$venv" ] && ! $want_models; then
    echo "install.sh: nothing to do" >&2
    usage >&2
    exit 2
fi

step() { echo "::: $*"; }
run() {
    echo "+ $*"
    if ! $dry_run; then "$@"; fi
}

SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
    SUDO=(sudo)
fi

install_apt() {
    local wanted=("$@") missing=() package
    for package in "${wanted[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
            missing+=("$package")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "already installed: ${wanted[*]}"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    run "${SUDO[@]}" apt-get update -q
    local unknown=()
    for package in "${missing[@]}"; do
        # A candidate of "(none)" means the name exists nowhere in the configured archives.
        if ! $dry_run && ! apt-cache policy "$package" | grep -q 'Candidate: [^(]'; then
            unknown+=("$package")
        fi
    done
    if [ ${#unknown[@]} -gt 0 ]; then
        echo "install.sh: no such apt package(s) here: ${unknown[*]}" >&2
        exit 1
    fi
    run "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

if $want_system || $want_test_system; then
    packages=()
    if $want_system; then
        # shellcheck disable=SC2206  # split into package names on purpose
        packages+=($RUNTIME_PACKAGES)
        # Debian's python3 creates venvs only with python3-venv (ensurepip) installed.
        if ! "$python" -c 'import ensurepip' 2>/dev/null; then
            packages+=(python3-venv)
        fi
    fi
    if $want_test_system; then
        # shellcheck disable=SC2206
        packages+=($TEST_PACKAGES)
    fi
    step "system packages"
    install_apt "${packages[@]}"
fi

edgeblur=edgeblur
if [ -n "$venv" ]; then
    step "python environment in $venv"
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' 2>/dev/null; then
        echo "reusing $venv ($("$venv/bin/python" --version 2>&1))"
    else
        run "$python" -m venv "$venv"
        # Distribution pips can be too old for the manylinux_2_28 wheels (mediapipe on arm64).
        run "$venv/bin/python" -m pip install --quiet --upgrade pip
    fi
    target="$REPO"
    if [ -n "$extras" ]; then
        target="${REPO}[${extras}]"
    fi
    if $editable; then
        run "$venv/bin/python" -m pip install --quiet -e "$target"
    else
        run "$venv/bin/python" -m pip install --quiet "$target"
    fi
    edgeblur="$venv/bin/edgeblur"
fi

if $want_models; then
    step "models"
    fetch=("$edgeblur" models fetch)
    if [ -n "$model_dir" ]; then
        fetch+=(--cache-dir "$model_dir")
    fi
    fetch+=(${models[@]+"${models[@]}"})
    run "${fetch[@]}"
fi

step "install.sh done"
