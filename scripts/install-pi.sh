#!/usr/bin/env bash
# Installs edgeblur as a system service on a Raspberry Pi (64-bit Raspberry Pi OS) or any
# Debian-like machine with systemd. Run as root from a checkout; safe to run again to upgrade:
#
#   sudo scripts/install-pi.sh
#
#   /opt/edgeblur/venv            the program (scripts/install.sh --venv)
#   /opt/edgeblur/models          verified models, read-only to the service
#   /usr/local/bin/edgeblur       the command, for `edgeblur verify` and `edgeblur models list`
#   /etc/edgeblur/edgeblur.yaml   the config: configs/event-pi.yaml the first time, never
#                                 overwritten afterwards
#   /etc/edgeblur/token.env       EDGEBLUR_TOKEN for the API, generated once (0600, root)
#   /var/lib/edgeblur             redacted recordings, snapshots and the audit log
#   /etc/systemd/system/edgeblur.service, enabled and (re)started
#
# With DESTDIR=/some/dir (or --destdir) every file goes under that directory instead and
# nothing touches the running system: no apt, no user, no ownership changes, no systemctl.
# That is for packaging and tests; a venv only works at the path it was built for, so pair it
# with --no-venv unless the tree will be used at that same path.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVICE_USER=edgeblur
EXTRAS=blazeface,onnxruntime

usage() {
    cat <<USAGE
usage: scripts/install-pi.sh [options]

  --destdir DIR   install under DIR (also DESTDIR=DIR); skips apt, user and systemctl
  --no-system     do not install apt packages
  --no-venv       do not create or update /opt/edgeblur/venv
  --no-models     do not fetch the models (the service fails closed until they are there)
  --no-start      install and enable the service but do not (re)start it now
  --extras LIST   optional dependency groups (default: $EXTRAS; empty for CenterFace/YuNet only)
  -h, --help      this help
USAGE
}

destdir=${DESTDIR:-}
want_system=true want_venv=true want_models=true want_start=true
while [ $# -gt 0 ]; do
    case "$1" in
        --destdir) destdir=${2:?--destdir needs a directory}; shift ;;
        --no-system) want_system=false ;;
        --no-venv) want_venv=false ;;
        --no-models) want_models=false ;;
        --no-start) want_start=false ;;
        --extras) EXTRAS=${2?--extras needs a list (may be empty)}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-pi.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

staged=false
if [ -n "$destdir" ]; then
    staged=true
    destdir=$(mkdir -p "$destdir" && cd "$destdir" && pwd)
    want_system=false
elif [ "$(id -u)" -ne 0 ]; then
    echo "install-pi.sh: run as root (sudo $0), or with --destdir DIR to stage the files" >&2
    exit 1
fi

PREFIX=$destdir/opt/edgeblur
CONFIG_DIR=$destdir/etc/edgeblur
DATA_DIR=$destdir/var/lib/edgeblur
UNIT_DIR=$destdir/etc/systemd/system
BIN_DIR=$destdir/usr/local/bin

step() { echo "::: $*"; }
run() { echo "+ $*"; "$@"; }
# Ownership only on the real system: a staged tree has no edgeblur user to own anything.
own() {
    if ! $staged; then run chown "$@"; fi
}

if $want_system; then
    step "system packages"
    run "$REPO/scripts/install.sh" --system
fi

if ! $staged; then
    step "service user $SERVICE_USER"
    if id "$SERVICE_USER" >/dev/null 2>&1; then
        echo "user $SERVICE_USER exists"
    else
        run useradd --system --user-group --home-dir /var/lib/edgeblur --no-create-home \
            --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    run usermod --append --groups video "$SERVICE_USER"
fi

step "directories"
run install -d -m 0755 "$PREFIX" "$UNIT_DIR" "$BIN_DIR"
run install -d -m 0750 "$DATA_DIR"
own "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
# The service rewrites edgeblur.yaml on PUT /api/config (write to a temporary file, then
# rename), so it needs to create files here. The sticky bit stops it from replacing or
# deleting files it does not own, such as the root-owned token.env.
run install -d -m 1770 "$CONFIG_DIR"
own "root:$SERVICE_USER" "$CONFIG_DIR"

if $want_venv; then
    step "program"
    run "$REPO/scripts/install.sh" --venv "$PREFIX/venv" --extras "$EXTRAS"
fi
if $want_models; then
    step "models"
    if [ -x "$PREFIX/venv/bin/edgeblur" ]; then
        run "$PREFIX/venv/bin/edgeblur" models fetch --cache-dir "$PREFIX/models"
    else
        echo "skipped: $PREFIX/venv is not installed (--no-venv)"
    fi
fi

step "command"
# A wrapper rather than a symlink, so `edgeblur verify` run by hand finds the same models.
wrapper=$(mktemp)
trap 'rm -f "$wrapper"' EXIT
cat >"$wrapper" <<'WRAPPER'
#!/bin/sh
export EDGEBLUR_MODEL_DIR="${EDGEBLUR_MODEL_DIR:-/opt/edgeblur/models}"
exec /opt/edgeblur/venv/bin/edgeblur "$@"
WRAPPER
run install -m 0755 "$wrapper" "$BIN_DIR/edgeblur"

step "config"
if [ -e "$CONFIG_DIR/edgeblur.yaml" ]; then
    echo "keeping the existing $CONFIG_DIR/edgeblur.yaml"
else
    run install -m 0640 "$REPO/configs/event-pi.yaml" "$CONFIG_DIR/edgeblur.yaml"
fi
# Owned by the service, whoever wrote it: the sticky directory lets it replace only its own.
own "$SERVICE_USER:$SERVICE_USER" "$CONFIG_DIR/edgeblur.yaml"
if [ -e "$CONFIG_DIR/token.env" ]; then
    echo "keeping the existing $CONFIG_DIR/token.env"
else
    echo "+ generating $CONFIG_DIR/token.env"
    (
        umask 077
        token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
        printf 'EDGEBLUR_TOKEN=%s\n' "$token" >"$CONFIG_DIR/token.env"
    )
    chmod 0600 "$CONFIG_DIR/token.env"
fi

step "systemd unit"
run install -m 0644 "$REPO/deploy/edgeblur.service" "$UNIT_DIR/edgeblur.service"
if $staged; then
    echo "skipped systemctl (staged under $destdir)"
else
    run systemctl daemon-reload
    run systemctl enable edgeblur.service
    if $want_start; then
        run systemctl restart edgeblur.service
    fi
fi

step "done"
cat <<DONE
edgeblur is installed.
  config:  /etc/edgeblur/edgeblur.yaml   (then: systemctl restart edgeblur)
  token:   /etc/edgeblur/token.env       (root only; send it as 'Authorization: Bearer ...')
  data:    /var/lib/edgeblur
  logs:    journalctl -u edgeblur -f
  health:  http://127.0.0.1:8080/healthz (the config binds loopback; see service.host)
  audit:   edgeblur verify /var/lib/edgeblur/recordings
DONE
