# The worker image: `docker compose up` runs it next to Kafka and MongoDB.
# It holds the runtime lock and the package (templates included), not the sources or dev tools.

# Build the wheel in a throwaway stage, so the image holds no sources and no build tools.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY processors ./processors
COPY live ./live
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The pinned runtime dependencies first: this layer stays cached while the code changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# The package itself (mounted, not copied: no wheel left in a layer); `pip check` fails
# the build if the lock does not satisfy the package's dependencies.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-deps /wheels/*.whl && pip check

RUN useradd --system --uid 10001 worker && mkdir -p /app/outbox && chown worker /app/outbox
USER worker

# Alive while the event loop answers GET /healthz (no curl in the image: Python's urllib).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"

# The HTTP server (HTTP_PORT): the Resend webhook at /webhooks/resend, /healthz, /readyz, /metrics.
EXPOSE 8080
CMD ["faststream", "run", "streams.app:app"]
