# Evergreen worker image, installed from uv.lock (multi-stage: build tools stay out of the runtime).
# Build: docker build -t evergreen .      Run the main job: docker run -v $PWD/state:/data evergreen
# Serving gateway: docker run -p 8800:8800 -e EVERGREEN_ROLLOUT_SECRET -v $PWD/state:/data evergreen \
#                  python -m deployments.gateway --host 0.0.0.0

FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first, from the lock only: this layer is reused while the code changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY evergreen ./evergreen
COPY tasks ./tasks
COPY flows ./flows
COPY configs ./configs
COPY examples ./examples
COPY deployments ./deployments
COPY prefect.yaml ./
RUN uv sync --frozen --no-dev

FROM python:3.11-slim AS runtime
# libgomp: LightGBM's OpenMP runtime; git: lineage tags (the sha is "unknown" without a checkout).
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 evergreen
WORKDIR /app
COPY --from=build --chown=evergreen /app /app
ENV PATH=/app/.venv/bin:$PATH \
    EVERGREEN_HOME=/data \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GX_ANALYTICS_ENABLED=False \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PREFECT_HOME=/data/prefect \
    PYTHONUNBUFFERED=1
RUN mkdir -p /data && chown evergreen /data
USER evergreen
VOLUME /data
CMD ["python", "-m", "flows.main"]
