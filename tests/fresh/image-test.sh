#!/usr/bin/env bash
# Builds ./Dockerfile with podman and runs the image the way the README and docs/install.md
# tell people to: as its non-root user, with no network (the models are baked in), a read-only
# root filesystem and /config and /data as volumes. Then checks, in order:
#   1. the image's user is not root;
#   2. the demo config's camera reaches /readyz 200 within 60 s (arm64: 900 s);
#   3. the HEALTHCHECK command exits 0, and the camera's anonymised RTSP stream (published by
#      the image, so served only with a token) gives frames with the token and none without;
#   4. SIGTERM ends it with exit status 0 and the last segment finalised (no .part file left,
#      and `edgeblur verify` passes on the recordings);
#   5. `edgeblur image` masks a sample photo (the face changes, the rest does not);
# and prints the image size.
#
#   tests/fresh/image-test.sh [--arch amd64|arm64]
#
# No registry is reachable here, so the base is a Debian 12 bootstrapped by base-image.sh
# (python3 3.11, as in python:3.11-slim-bookworm); everywhere else the Dockerfile's default
# base is used. arm64 runs under qemu user emulation (tests/fresh/qemu-arm64.sh sets it up):
# there CenterFace runs on OpenCV, since onnxruntime hangs under the emulator, and timings
# mean nothing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
arch=amd64
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=${2:?--arch needs amd64 or arm64}; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "image-test.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
cache=${IMAGE_CACHE:-/var/tmp/edgeblur-images}
podman=(podman --runtime runc)
limits=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
started=$(date +%s)
seconds() { echo "$(( $(date +%s) - started )) s"; }
fail() { echo "image-test: FAIL: $*" >&2; exit 1; }
pass() { echo "image-test: ok: $*"; }

if [ "$arch" = arm64 ]; then
    "$REPO/tests/fresh/qemu-arm64.sh"
fi
base=$("$REPO/tests/fresh/base-image.sh" --arch "$arch" | tail -n1)

# A machine whose egress re-signs TLS (as this CI's does) needs its CA inside the build, as a
# company's own base image would carry it; elsewhere the bare base is used as it is.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    context=$cache/ca-context
    rm -rf "$context" && mkdir -p "$context"
    cp /usr/local/share/ca-certificates/*.crt "$context/"
    printf '%s\n' "FROM $base" "COPY *.crt /usr/local/share/ca-certificates/" \
        "RUN apt-get update -q \\" \
        " && apt-get install -y -q --no-install-recommends ca-certificates \\" \
        " && update-ca-certificates && rm -rf /var/lib/apt/lists/*" >"$context/Containerfile"
    "${podman[@]}" build --quiet --arch "$arch" "${limits[@]}" -t "$base-ca" "$context" >/dev/null
    base=$base-ca
fi

image=localhost/edgeblur:test-$arch
echo "::: building $image FROM $base"
# docker format: the OCI format has no HEALTHCHECK.
"${podman[@]}" build --format docker --layers --arch "$arch" "${limits[@]}" \
    --build-arg PYTHON_IMAGE="$base" -t "$image" -f "$REPO/Dockerfile" "$REPO"
echo "::: built in $(seconds)"

work=$(mktemp -d "$cache/image-test.XXXXXX")
name=edgeblur-image-test-$$
cleanup() {
    "${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/config" "$work/data" "$work/photos"
config=$work/config/edgeblur.yaml
ready_limit=60 stop_limit=30
if [ "$arch" = arm64 ]; then
    # Under emulation a 1280x720 detection took minutes: a small, slow demo camera, the longest
    # latency budget, and OpenCV. What is checked is that it works, not how fast.
    cat >"$config" <<'YAML'
detector:
  type: centerface
  backend: opencv
storage:
  data_dir: data
cameras:
  - id: demo
    latency_budget_ms: 60000
    source: {type: demo, width: 320, height: 240, fps: 1}
YAML
    ready_limit=900 stop_limit=300
else
    cp "$REPO/configs/demo.yaml" "$config"
fi
chmod 0755 "$work/config" && chmod 0644 "$config"
chown 10001:10001 "$work/data" "$work/photos"
# Health checks are run by hand below: without systemd podman cannot schedule them.
run=("${podman[@]}" run --arch "$arch" "${limits[@]}" --network none --read-only
    --health-interval disable)

# 1. non-root
user=$("${podman[@]}" image inspect -f '{{.Config.User}}' "$image")
uid=$("${run[@]}" --rm "$image" id -u)
[ "$user" = edgeblur ] && [ "$uid" != 0 ] || fail "runs as user '$user' (uid $uid)"
pass "runs as $user (uid $uid)"

# 2. offline, read-only root, volumes: the demo camera gets ready
token=image-test-token-$$-0123456789
"${run[@]}" -d --name "$name" -e EDGEBLUR_TOKEN="$token" -v "$work/config:/config" \
    -v "$work/data:/data" "$image" >/dev/null
container_started=$(date +%s)
ready=false
while [ $(( $(date +%s) - container_started )) -le "$ready_limit" ]; do
    if "${podman[@]}" exec "$name" python -c "import urllib.request as u; \
u.urlopen('http://127.0.0.1:8080/readyz', timeout=2)" 2>/dev/null; then
        ready=true
        break
    fi
    sleep 1
done
ready_after=$(( $(date +%s) - container_started ))
$ready && [ "$ready_after" -le "$ready_limit" ] \
    || { "${podman[@]}" logs "$name" | tail -30; fail "/readyz not 200 within $ready_limit s"; }
pass "/readyz 200 after $ready_after s, with --network none and a read-only root"

# 3. HEALTHCHECK
"${podman[@]}" healthcheck run "$name" || fail "the HEALTHCHECK command failed"
pass "HEALTHCHECK command exits 0"

# The stream, read inside the container (--network none): with the token, then without.
want=10 wait_s=30
[ "$arch" = arm64 ] && want=2 wait_s=300  # the emulated demo camera runs at 1 fps or less
"${podman[@]}" exec "$name" python -c "
import sys, av
url = 'rtsp://edgeblur:$token@127.0.0.1:8554/demo'
frames = 0
with av.open(url, options={'rtsp_transport': 'tcp'}, timeout=$wait_s) as stream:
    for frame in stream.decode(video=0):
        frames += 1
        if frames == $want:
            break
print(f'{frames} frames of {frame.width}x{frame.height} from the stream')
try:
    av.open('rtsp://127.0.0.1:8554/demo', options={'rtsp_transport': 'tcp'}, timeout=30)
except av.HTTPUnauthorizedError:
    sys.exit(0)
sys.exit('the stream was served without the token')
" || { "${podman[@]}" logs "$name" | tail -30; fail "the camera's RTSP stream"; }
pass "the RTSP stream serves frames with the token and refuses a client without it"

# 4. Let it record a while, then SIGTERM in the middle of a segment.
sleep 10
"${podman[@]}" stop --time "$stop_limit" "$name" >/dev/null
status=$("${podman[@]}" inspect -f '{{.State.ExitCode}}' "$name")
"${podman[@]}" logs "$name" >"$work/serve.log" 2>&1
[ "$status" = 0 ] || { tail -30 "$work/serve.log"; fail "exit status $status after SIGTERM"; }
grep -q Traceback "$work/serve.log" && { tail -30 "$work/serve.log"; fail "traceback in the log"; }
finished=$(find "$work/data" -name '*.mp4' ! -name '.*' | wc -l)
partial=$(find "$work/data" -name '.*.part.mp4' | wc -l)
[ "$finished" -ge 1 ] && [ "$partial" = 0 ] || fail "$finished finished, $partial partial segments"
if [ "$arch" = arm64 ]; then
    # Under qemu, edgeblur verify crashed the emulator (segmentation fault): not tested there.
    pass "SIGTERM: exit 0, $finished finished segment(s), none partial (verify: not run on arm64)"
else
    "${run[@]}" --rm -v "$work/config:/config:ro" -v "$work/data:/data:ro" "$image" \
        edgeblur verify --config /config/edgeblur.yaml /data >"$work/verify.log" 2>&1 \
        || { tail -20 "$work/verify.log"; fail "edgeblur verify found faces in the recordings"; }
    pass "SIGTERM: exit 0, $finished finished segment(s), none partial, edgeblur verify passes"
fi

# 5. edgeblur image on a sample photo (scikit-image's astronaut, shipped in the demo extra)
"${run[@]}" --rm -v "$work/photos:/photos" "$image" python -c "
import cv2
from skimage import data
cv2.imwrite('/photos/astronaut.png', cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))"
"${run[@]}" --rm -v "$work/config:/config:ro" -v "$work/photos:/photos" "$image" \
    edgeblur image --config /config/edgeblur.yaml --out /photos/out /photos/astronaut.png
"${run[@]}" --rm -v "$work/photos:/photos:ro" "$image" python -c "
import cv2, numpy as np
before = cv2.imread('/photos/astronaut.png').astype(int)
after = cv2.imread('/photos/out/astronaut.png').astype(int)
changed = np.abs(before - after).max(axis=2) > 0
face = changed[20:140, 170:260].mean()   # where the astronaut's face is
elsewhere = changed[300:, :].mean()
print(f'changed: {face:.0%} of the face area, {elsewhere:.0%} of the lower half')
assert face > 0.8 and elsewhere < 0.01, 'the face is not masked (or more than it changed)'
" || fail "edgeblur image did not mask the face"
pass "edgeblur image masks the sample photo"

size=$("${podman[@]}" image inspect -f '{{.Size}}' "$image")
echo "image-test ($arch): passed in $(seconds); image size $(( size / 1000000 )) MB"
