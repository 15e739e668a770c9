"""Non-blocking retries with backoff, and dead letters, for every consumed topic.

Import the modules themselves (`streams.retry.policy`, `.routing`, `.scheduler`, ...):
this package loads nothing, so the pure ones import without Kafka or settings.
"""
