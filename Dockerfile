# Evergreen image, installed from uv.lock with the prod group (drivers for PostgreSQL, Redis and S3;
# Prefect's Docker and Kubernetes workers; Dask for tuners on a cluster). Multi-stage: build tools stay out of the runtime.
# Build: docker build -t evergreen .
# Default command, a Prefect worker:  docker run -e PREFECT_API_URL=http://prefect:4200/api evergreen
#   (EVERGREEN_WORK_POOL picks the pool, default evergreen-process; a process worker runs flows from /app)
# The main job once, on the embedded default: docker run -v $PWD/state:/data evergreen python -m flows.main
# Serving gateway: docker run -p 8800:8800 -e EVERGREEN_ROLLOUT_SECRET -v $PWD/state:/data evergreen \
#                  python -m deployments.gateway --host 0.0.0.0
# A tuner on a Dask cluster: docker run evergreen dask worker tcp://dask-scheduler:8786 --nthreads 1
# Flow runs started by a Docker or Kubernetes work pool use this image with their own command.

FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first, from the lock only: this layer is reused while the code changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --group prod --no-install-project
COPY evergreen ./evergreen
COPY tasks ./tasks
COPY flows ./flows
COPY configs ./configs
COPY examples ./examples
COPY deployments ./deployments
COPY prefect.yaml ./
RUN uv sync --frozen --no-dev --group prod

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
    PYTHONUNBUFFERED=1 \
    EVERGREEN_WORK_POOL=evergreen-process
RUN mkdir -p /data && chown evergreen /data
USER evergreen
VOLUME /data
# A worker, not a job: a container of this image serves a work pool until stopped (exec: the worker
# gets the stop signal). The pool is created with its type if it does not exist yet.
CMD ["sh", "-c", "exec prefect worker start --pool \"$EVERGREEN_WORK_POOL\" --with-healthcheck"]
