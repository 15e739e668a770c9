"""Business logic of the worker. Nothing here knows about Kafka or FastStream."""
