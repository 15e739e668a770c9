"""The AsyncAPI document: FastStream's generator, with named server entries."""

from __future__ import annotations

from typing import Any

from faststream.specification import AsyncAPI
from faststream.specification.base import Specification

SERVERS = {
    "Server1": ("local", "The local broker that `make services` starts (KRaft, loopback)."),
    "Server2": ("production", "The production cluster; inside docker compose it is `kafka:9092`."),
}
"""FastStream names servers `Server1`, `Server2`, ... in the order of `specification_url`."""


class WorkerAsyncAPI(AsyncAPI):
    def to_specification(self) -> Specification:
        spec: Any = super().to_specification()
        servers = spec.servers or {}
        renamed = {}
        for old, server in servers.items():
            new, description = SERVERS.get(old, (old, server.description))
            server.description = description
            renamed[new] = server
        spec.servers = renamed
        for channel in (spec.channels or {}).values():
            for ref in channel.servers or []:
                name = ref["$ref"].rsplit("/", 1)[-1]
                if name in SERVERS:
                    ref["$ref"] = f"#/servers/{SERVERS[name][0]}"
        # FastStream keeps publishers in a WeakSet, whose order changes from run to run:
        # sort, so that the committed document can be compared with the code.
        spec.channels = _sorted(spec.channels)
        spec.operations = _sorted(spec.operations)
        if spec.components is not None:
            spec.components.messages = _sorted(spec.components.messages)
            spec.components.schemas = _sorted(spec.components.schemas)
        return spec  # type: ignore[no-any-return]


def _sorted(mapping: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if mapping is None else dict(sorted(mapping.items()))
