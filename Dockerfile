# edgeblur for amd64 and arm64 (Raspberry Pi 4/5 with a 64-bit OS, x86 servers):
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t edgeblur .
#   docker run -d --name edgeblur -p 8080:8080 -p 8554:8554 \
#       -e EDGEBLUR_TOKEN="$(openssl rand -hex 24)" \
#       -v "$PWD/config:/config" -v edgeblur-data:/data edgeblur
#   docker exec edgeblur edgeblur verify /data/recordings     # the data-protection audit
#
# The image holds the verified models, so it runs with no network at all. The service binds
# 0.0.0.0 inside the container (a container's loopback cannot be reached through -p); set
# EDGEBLUR_TOKEN (16+ characters) so the API is not open: without it config changes are refused
# and anyone who can reach the port may read the config and watch the redacted previews.
# Camera passwords: keep ${VAR} placeholders in the YAML and pass the values with -e or
# --env-file. USB cameras: add `--device /dev/video0` (one flag per camera); the user below is
# in group video (gid 44, as on Debian and Raspberry Pi OS hosts; where the host's
# /dev/videoN has another group, add `--group-add "$(stat -c %g /dev/video0)"`).

# The base for both stages. `make image-test` builds this file against a Debian 12 it
# bootstraps itself (no registry is reachable from CI): --build-arg PYTHON_IMAGE=<that image>.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Optional dependency groups (blazeface: mediapipe, for close-range cameras). Empty for the
# smallest image with CenterFace and YuNet only.
ARG EXTRAS=blazeface,demo,onnxruntime
# Models to bake in, e.g. "centerface blazeface-short"; empty: the default set of
# `edgeblur models fetch`.
ARG MODELS=""
COPY scripts/install.sh /src/scripts/install.sh
# The runtime libraries are needed here too: `models fetch` imports the package.
RUN /src/scripts/install.sh --system
COPY pyproject.toml README.md /src/
COPY edge /src/edge
COPY service /src/service
# Models are fetched and checked against their pinned SHA-256 sums here, so the image never
# downloads at run time.
RUN set --; for name in $MODELS; do set -- "$@" --model "$name"; done; \
    /src/scripts/install.sh --venv /opt/edgeblur/venv --extras "$EXTRAS" \
        --models --model-dir /opt/edgeblur/models "$@"

FROM ${PYTHON_IMAGE}
COPY scripts/install.sh /tmp/install.sh
RUN /tmp/install.sh --system \
    && rm -rf /var/lib/apt/lists/* /tmp/install.sh \
    && useradd --system --uid 10001 --user-group --groups video \
        --home-dir /data --no-create-home --shell /usr/sbin/nologin edgeblur \
    && install -d -o edgeblur -g edgeblur -m 0750 /data /config
# Same path as in the build stage: a venv only works where it was created.
COPY --from=build /opt/edgeblur /opt/edgeblur
# No config is baked in: mount a directory holding edgeblur.yaml at /config (see configs/).
# Without one the container stops at once with "cannot read config /config/edgeblur.yaml"
# rather than run a camera nobody chose. The API rewrites this file on PUT /api/config, so
# make the directory writable by uid 10001 to keep such changes.
ENV PATH=/opt/edgeblur/venv/bin:$PATH \
    EDGEBLUR_MODEL_DIR=/opt/edgeblur/models \
    PYTHONUNBUFFERED=1
USER edgeblur
# Relative data_dir values in a config land in the volume.
WORKDIR /data
# Nothing else is written: the image runs with a read-only root (--read-only, plus a tmpfs
# on /tmp under Docker; podman adds one itself).
VOLUME ["/data", "/config"]
# 8080: the API and dashboard; 8554: each camera's anonymised RTSP stream (user edgeblur,
# password the token).
EXPOSE 8080 8554
# /healthz answers while the process serves HTTP; python, because the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
# --port 8080 overrides the config's port so EXPOSE and HEALTHCHECK always match; publish it
# on another host port with -p.
CMD ["edgeblur", "serve", "--config", "/config/edgeblur.yaml", "--host", "0.0.0.0", "--port", "8080"]
