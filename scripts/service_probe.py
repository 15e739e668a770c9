#!/usr/bin/env python3
"""Dependency-free readiness probes for the local Kafka and MongoDB-wire servers.

Standard library only (no kafka or pymongo package needed), so scripts/services.sh
can use it before any virtualenv exists.

    python3 scripts/service_probe.py kafka 127.0.0.1:9092 [--list]
        Sends ApiVersions + Metadata (all topics) to the first bootstrap server
        that answers. Exit 0 when the broker returns at least one live broker;
        with --list, prints the topic names.
    python3 scripts/service_probe.py mongo mongodb://127.0.0.1:27017
        Sends {ping: 1} to the admin database over OP_MSG. Exit 0 when ok == 1.
    python3 scripts/service_probe.py port 127.0.0.1 9092
        Exit 0 when a TCP connection can be opened.

Exit status: 0 = answers, 1 = does not answer (reason on stderr), 2 = usage error.
"""

from __future__ import annotations

import socket
import struct
import sys
from urllib.parse import unquote

TIMEOUT = 3.0


class ProbeError(Exception):
    pass


# --------------------------------------------------------------------------- helpers


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by server")
        buf += chunk
    return bytes(buf)


def _split_host_port(hostport: str, default_port: int) -> tuple[str, int]:
    hostport = hostport.strip()
    if hostport.startswith("["):  # [::1]:9092
        host, _, rest = hostport[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port else default_port
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        return host, int(port) if port else default_port
    return hostport, default_port


def _connect(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=TIMEOUT)


# --------------------------------------------------------------------------- Kafka


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ProbeError("truncated Kafka response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def int16(self) -> int:
        return self.take(">h")

    def int32(self) -> int:
        return self.take(">i")

    def boolean(self) -> bool:
        return self.take(">b") != 0

    def string(self) -> str | None:
        n = self.int16()
        if n < 0:
            return None
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")

    def int32_array(self) -> list[int]:
        n = self.int32()
        return [self.int32() for _ in range(max(n, 0))]


def _kafka_request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> _Reader:
    client_id = b"service-probe"
    # Request header v1 (non-flexible): api_key, api_version, correlation_id, client_id.
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    reader = _Reader(_recv_exact(sock, size))
    if reader.int32() != corr:  # response header v0: correlation_id
        raise ProbeError("correlation id mismatch")
    return reader


def probe_kafka(bootstrap: str, list_topics: bool) -> list[str]:
    errors = []
    for entry in bootstrap.split(","):
        if not entry.strip():
            continue
        # Accept "PLAINTEXT://host:port" as well as "host:port".
        entry = entry.split("://", 1)[-1]
        host, port = _split_host_port(entry, 9092)
        try:
            with _connect(host, port) as sock:
                return _kafka_metadata(sock)
        except (OSError, ProbeError, ValueError) as exc:
            errors.append(f"{host}:{port}: {exc}")
    raise ProbeError("; ".join(errors) or "no bootstrap servers given")


def _kafka_metadata(sock: socket.socket) -> list[str]:
    # ApiVersions v0 (supported by every broker) to pick a Metadata version.
    r = _kafka_request(sock, 18, 0, 1, b"")
    err = r.int16()
    if err != 0:
        raise ProbeError(f"ApiVersions error code {err}")
    ranges = {}
    for _ in range(r.int32()):
        key, lo, hi = r.int16(), r.int16(), r.int16()
        ranges[key] = (lo, hi)
    if 3 not in ranges:
        raise ProbeError("broker does not offer the Metadata API")
    lo, hi = ranges[3]
    version = max(lo, 4)
    if version > min(hi, 8):  # v9+ is the flexible encoding, not implemented here
        raise ProbeError(f"no supported Metadata version in broker range {lo}-{hi}")

    # Metadata request v4-v8: topics = null (all), allow_auto_topic_creation = false,
    # v8+: include_cluster/topic_authorized_operations = false.
    body = struct.pack(">ib", -1, 0)
    if version >= 8:
        body += struct.pack(">bb", 0, 0)
    r = _kafka_request(sock, 3, version, 2, body)
    r.int32()  # throttle_time_ms
    brokers = []
    for _ in range(r.int32()):
        node_id, host, port, _rack = r.int32(), r.string(), r.int32(), r.string()
        brokers.append((node_id, host, port))
    r.string()  # cluster_id
    r.int32()  # controller_id
    topics = []
    for _ in range(r.int32()):
        t_err, name, _internal = r.int16(), r.string(), r.boolean()
        for _ in range(r.int32()):
            r.int16(), r.int32(), r.int32()  # error_code, partition_index, leader_id
            if version >= 7:
                r.int32()  # leader_epoch
            r.int32_array()  # replica_nodes
            r.int32_array()  # isr_nodes
            if version >= 5:
                r.int32_array()  # offline_replicas
        if version >= 8:
            r.int32()  # topic_authorized_operations
        if t_err == 0 and name is not None:
            topics.append(name)
    if not brokers:
        raise ProbeError("broker answered but reports no live brokers yet")
    return sorted(topics)


# --------------------------------------------------------------------------- MongoDB wire


def _bson_ping() -> bytes:
    def cstring(s: str) -> bytes:
        return s.encode() + b"\x00"

    elems = b"\x10" + cstring("ping") + struct.pack("<i", 1)
    db = b"admin"
    elems += b"\x02" + cstring("$db") + struct.pack("<i", len(db) + 1) + db + b"\x00"
    return struct.pack("<i", len(elems) + 5) + elems + b"\x00"


def _bson_top_level(doc: bytes) -> dict:
    """Decode the top-level scalar fields of a BSON document (enough for ok/errmsg)."""
    out: dict = {}
    pos = 4
    end = struct.unpack_from("<i", doc, 0)[0] - 1
    while pos < end:
        etype = doc[pos]
        pos += 1
        name_end = doc.index(b"\x00", pos)
        name = doc[pos:name_end].decode("utf-8", "replace")
        pos = name_end + 1
        if etype == 0x01:
            out[name] = struct.unpack_from("<d", doc, pos)[0]
            pos += 8
        elif etype == 0x02:
            n = struct.unpack_from("<i", doc, pos)[0]
            out[name] = doc[pos + 4 : pos + 4 + n - 1].decode("utf-8", "replace")
            pos += 4 + n
        elif etype in (0x03, 0x04):
            pos += struct.unpack_from("<i", doc, pos)[0]
        elif etype == 0x05:
            pos += 5 + struct.unpack_from("<i", doc, pos)[0]
        elif etype == 0x07:
            pos += 12
        elif etype == 0x08:
            out[name] = doc[pos] != 0
            pos += 1
        elif etype in (0x09, 0x11, 0x12):
            out[name] = struct.unpack_from("<q", doc, pos)[0]
            pos += 8
        elif etype == 0x0A:
            out[name] = None
        elif etype == 0x10:
            out[name] = struct.unpack_from("<i", doc, pos)[0]
            pos += 4
        else:  # a type we do not need; stop here
            break
    return out


def _mongo_hosts(url: str) -> list[tuple[str, int]]:
    if url.startswith("mongodb+srv://"):
        raise ProbeError("mongodb+srv:// URLs need DNS SRV lookups; not probed")
    if not url.startswith("mongodb://"):
        raise ProbeError(f"not a mongodb:// URL: {url!r}")
    rest = url[len("mongodb://") :]
    hosts = rest.split("/", 1)[0].split("?", 1)[0]
    if "@" in hosts:  # credentials are not needed for ping
        hosts = hosts.rsplit("@", 1)[1]
    return [_split_host_port(unquote(h), 27017) for h in hosts.split(",") if h]


def probe_mongo(url: str) -> dict:
    errors = []
    for host, port in _mongo_hosts(url):
        try:
            with _connect(host, port) as sock:
                body = struct.pack("<I", 0) + b"\x00" + _bson_ping()  # flagBits, section kind 0
                request_id = 1
                header = struct.pack("<iiii", 16 + len(body), request_id, 0, 2013)  # OP_MSG
                sock.sendall(header + body)
                length, _rid, response_to, opcode = struct.unpack("<iiii", _recv_exact(sock, 16))
                payload = _recv_exact(sock, length - 16)
                if opcode != 2013 or response_to != request_id:
                    raise ProbeError(f"unexpected reply opCode {opcode}")
                if payload[4] != 0:
                    raise ProbeError("unexpected OP_MSG section kind")
                reply = _bson_top_level(payload[5:])
                if reply.get("ok") != 1:
                    raise ProbeError(f"ping failed: {reply.get('errmsg', reply)}")
                return reply
        except (OSError, ProbeError, ValueError, IndexError, struct.error) as exc:
            errors.append(f"{host}:{port}: {exc}")
    raise ProbeError("; ".join(errors) or "no hosts in URL")


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    try:
        if len(argv) >= 2 and argv[0] == "kafka":
            topics = probe_kafka(argv[1], "--list" in argv[2:])
            if "--list" in argv[2:]:
                for t in topics:
                    print(t)
            return 0
        if len(argv) == 2 and argv[0] == "mongo":
            probe_mongo(argv[1])
            return 0
        if len(argv) == 3 and argv[0] == "port":
            with _connect(argv[1], int(argv[2])):
                return 0
    except (ProbeError, OSError, ValueError) as exc:
        print(f"service_probe: {exc}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
