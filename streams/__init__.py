"""The Kafka edge of the worker: topics, subscribers, retries, dead letters, CLI."""

__version__ = "0.1.0"
