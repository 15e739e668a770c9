"""How every Kafka client of the worker authenticates: one function, from `KafkaSettings`.

`kafka_security(settings)` gives FastStream's security object (for the broker); raw
aiokafka clients (admin, the retry scheduler, producers, the DLQ reader) take
`client_kwargs(settings)`, which FastStream derives from that same object.
"""

from __future__ import annotations

import ssl
from typing import Any

from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from streams.settings import KafkaSettings


def _ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(kafka.ssl_ca_file) if kafka.ssl_ca_file else None)
    if kafka.ssl_cert_file is not None and kafka.ssl_key_file is not None:
        password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
        context.load_cert_chain(str(kafka.ssl_cert_file), str(kafka.ssl_key_file), password=password)
    return context


def kafka_security(kafka: KafkaSettings) -> BaseSecurity | None:
    """FastStream's security object for `KAFKA_SECURITY_PROTOCOL` and friends; None for PLAINTEXT."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(kafka) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    username, secret = kafka.sasl_username, kafka.sasl_password
    if username is None or secret is None:  # the settings check this; mypy can't see it
        raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs a SASL username and password")
    password = secret.get_secret_value()
    use_ssl = protocol == "SASL_SSL"
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    mechanism = sasl[kafka.sasl_mechanism or "PLAIN"]
    return mechanism(username, password, ssl_context=context, use_ssl=use_ssl)


def client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """`bootstrap_servers` and security keyword arguments for any aiokafka client."""
    return {"bootstrap_servers": kafka.bootstrap_servers, **parse_security(kafka_security(kafka))}
