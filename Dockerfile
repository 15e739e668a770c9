# The worker image: `docker compose up` runs it next to Kafka and MongoDB.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY processors ./processors
COPY streams ./streams
COPY live ./live

RUN useradd --system --uid 10001 worker && mkdir -p /app/outbox && chown worker /app/outbox
USER worker

# The worker touches the heartbeat file every few seconds while its event loop runs.
ENV HEARTBEAT_FILE=/tmp/worker.alive
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import os, sys, time; sys.exit(0 if time.time() - os.path.getmtime('/tmp/worker.alive') < 30 else 1)"

CMD ["faststream", "run", "streams.app:app"]
