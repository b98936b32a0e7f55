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

# What the pip wheels load from the system at run time, found with ldd on a bare Debian 12:
# mediapipe (the blazeface extra) needs libEGL.so.1 and libGLESv2.so.2. The headless OpenCV
# wheel needs no X11 or GL library, and PyAV bundles its own FFmpeg.
# ca-certificates: `edgeblur models fetch` downloads over HTTPS.
# The RTSP server of `edgeblur serve` (rtsp://HOST:8554/<camera>) is GStreamer's
# gst-rtsp-server, run by Debian's python3 through PyGObject: python3-gi, its typelib, and the
# plugins its pipeline uses (appsrc from -base, rtph264pay and the RTP session from -good).
RUNTIME_PACKAGES="ca-certificates libegl1 libgles2 \
python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
# What CI and the tests run for real: make (`make test`), the ffmpeg CLI, a GStreamer RTSP
# server on loopback (through PyGObject), and Chromium with its driver for the dashboard's
# Selenium tests; Prometheus (promtool and a real scrape) and the mosquitto MQTT broker for the
# fleet tests (deploy/).
TEST_PACKAGES="make ffmpeg gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good \
gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav chromium chromium-driver \
prometheus mosquitto"
# What `make fresh-test` and `make image-test` need to bootstrap Debian and run containers.
CONTAINER_PACKAGES="podman runc mmdebstrap slirp4netns uidmap"

usage() {
    cat <<USAGE
usage: scripts/install.sh [options]

  --system            install the runtime system packages (apt):
                      $RUNTIME_PACKAGES
  --test-system       install the packages the test suite needs (apt):
                      $TEST_PACKAGES
  --container-system  install what the container checks need (apt):
                      $CONTAINER_PACKAGES
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

want_system=false want_test_system=false want_container_system=false
want_models=false editable=false dry_run=false
venv="" extras="" model_dir="" python=python3
models=()
while [ $# -gt 0 ]; do
    case "$1" in
        --system) want_system=true ;;
        --test-system) want_test_system=true ;;
        --container-system) want_container_system=true ;;
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
if ! $want_system && ! $want_test_system && ! $want_container_system && [ -z "$venv" ] \
    && ! $want_models; then
    echo "install.sh: nothing to do" >&2
    usage >&2
    exit 2
fi

step() { echo "::: $*"; }
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
run() {
    echo "+ $*"
    if ! $dry_run; then "$@"; fi
}

SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
    SUDO=(sudo)
fi

# A fresh Debian, Ubuntu or Raspberry Pi OS often runs unattended-upgrades at first boot: wait
# for its lock rather than fail.
APT_WAIT=(-o DPkg::Lock::Timeout=600)

# The one command that installs PACKAGES as root, for messages that ask a person to run it.
apt_command() {
    echo "apt-get update && apt-get install -y --no-install-recommends $*"
}

install_apt() {
    local why=$1 missing=() unknown=() package policy status
    shift
    for package in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
        if [ "$status" != "install ok installed" ]; then
            missing+=("$package")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "already installed: $*"
        return
    fi
    echo "installing with apt: ${missing[*]} ($why)"
    local install=("${SUDO[@]}" apt-get "${APT_WAIT[@]}" install -y -q --no-install-recommends)
    if $dry_run; then
        run "${install[@]}" "${missing[@]}"
        return
    fi
    if ! command -v apt-get >/dev/null; then
        echo "install.sh: this system has no apt-get. Install the equivalents of these Debian" \
            "packages with its package manager, then run this again: ${missing[*]}" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
        echo "install.sh: installing system packages needs root, and sudo is not installed." \
            "Run this as root, then run this again:" >&2
        echo "  su -c '$(apt_command "${missing[@]}")'" >&2
        exit 1
    fi
    if [ ${#SUDO[@]} -gt 0 ] && ! sudo -n true 2>/dev/null && ! [ -t 0 ]; then
        echo "install.sh: sudo needs a password and there is no terminal to ask for it. Run:" >&2
        echo "  sudo sh -c '$(apt_command "${missing[@]}")'" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    run "${SUDO[@]}" apt-get "${APT_WAIT[@]}" update -q
    for package in "${missing[@]}"; do
        # A candidate of "(none)" means the name exists nowhere in the configured archives.
        # (Read whole first: grep -q stopping early would fail the pipe under pipefail.)
        policy=$(apt-cache policy "$package")
        if ! grep -q 'Candidate: [^(]' <<<"$policy"; then
            unknown+=("$package")
        fi
    done
    if [ ${#unknown[@]} -gt 0 ]; then
        echo "install.sh: no such apt package(s) here: ${unknown[*]}" >&2
        exit 1
    fi
    run "${install[@]}" "${missing[@]}"
}

# OpenCV comes as four wheels that all install the same cv2 directory; edgeblur uses the headless
# contrib build (no X11). mediapipe (the blazeface extra) requires the GUI build
# opencv-contrib-python, which would overwrite cv2 with one that needs libxcb/libGL. So pip
# first resolves the whole set without installing (--dry-run --report), then installs that set
# minus the other OpenCV wheels with --no-deps. `pip check` therefore reports mediapipe's
# unmet opencv-contrib-python requirement; that is intended, mediapipe runs on this cv2.
OPENCV_WHEEL=opencv-contrib-python-headless
OTHER_OPENCV_WHEELS="opencv-python opencv-contrib-python opencv-python-headless"

install_python() {
    local python=$1 target=$2 editable_flag=() name stale=()
    if $editable; then editable_flag=(-e); fi
    local report="$workdir/pip-report.json" resolved="$workdir/requirements.txt"
    run "$python" -m pip install --quiet --dry-run --report "$report" \
        "${editable_flag[@]}" "$target"
    echo "+ keep the resolved set minus $OTHER_OPENCV_WHEELS > $resolved"
    if ! $dry_run; then
        "$python" - "$report" "$OTHER_OPENCV_WHEELS" >"$resolved" <<'PY'
import json, re, sys
report, excluded = json.load(open(sys.argv[1])), set(sys.argv[2].split())
for item in report["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if "dir_info" in item.get("download_info", {}):
        continue  # the checkout itself, installed on its own below
    if re.sub(r"[-_.]+", "-", name).lower() in excluded:
        print(f"install.sh: leaving out {name} {version}: a second cv2, one that needs X11",
              file=sys.stderr)
        continue
    print(f"{name}=={version}")
PY
    fi
    run "$python" -m pip install --quiet --no-deps -r "$resolved"
    run "$python" -m pip install --quiet --no-deps "${editable_flag[@]}" "$target"
    if $dry_run; then return; fi
    # A venv made before the switch to headless holds the GUI build too. Uninstalling it
    # deletes the cv2 files both share, so the headless wheel is then put back whole.
    for name in $OTHER_OPENCV_WHEELS; do
        if "$python" -m pip show --quiet "$name" >/dev/null 2>&1; then stale+=("$name"); fi
    done
    if [ ${#stale[@]} -gt 0 ]; then
        run "$python" -m pip uninstall --quiet -y "${stale[@]}"
        run "$python" -m pip install --quiet --no-deps --force-reinstall \
            "$OPENCV_WHEEL==$("$python" -m pip show "$OPENCV_WHEEL" | sed -n 's/^Version: //p')"
    fi
    check_one_cv2 "$python"
}

# Fails unless exactly one installed distribution owns cv2 and it imports without X11.
check_one_cv2() {
    "$1" - <<'PY'
import importlib.metadata as metadata
owners = sorted({d.metadata["Name"] for d in metadata.distributions()
                 if any(str(f) == "cv2/__init__.py" for f in (d.files or []))})
if len(owners) != 1:
    raise SystemExit(f"install.sh: expected one OpenCV distribution, found {owners}")
import cv2
print(f"OpenCV {cv2.__version__} from {owners[0]} (headless)")
PY
}

if $want_system; then
    step "system packages: runtime"
    packages=()
    # shellcheck disable=SC2206  # split into package names on purpose
    packages+=($RUNTIME_PACKAGES)
    # Debian's python3 creates venvs only with python3-venv (ensurepip) installed.
    if ! "$python" -c 'import ensurepip' 2>/dev/null; then
        packages+=(python3-venv)
    fi
    install_apt "the libraries edgeblur's wheels load, and venv for .venv" "${packages[@]}"
fi
if $want_test_system; then
    step "system packages: tests"
    # shellcheck disable=SC2086
    install_apt "what the tests run for real: ffmpeg, an RTSP server, Chromium" $TEST_PACKAGES
fi
if $want_container_system; then
    step "system packages: containers"
    # shellcheck disable=SC2086
    install_apt "to bootstrap Debian and run the fresh-machine and image checks" \
        $CONTAINER_PACKAGES
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
    install_python "$venv/bin/python" "$target"
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
