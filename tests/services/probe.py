#!/usr/bin/env python3
"""Readiness probes that speak the real wire protocols (stdlib only).

  probe.py kafka HOST:PORT   ApiVersions v0, then Metadata; ok when the broker
                             lists itself (node id 1 on PORT).
  probe.py cql HOST:PORT     CQL native protocol v4: OPTIONS -> SUPPORTED,
                             STARTUP -> READY, then
                             SELECT release_version FROM system.local.

A log line only says the server thinks it is up; a protocol round trip says a
client can use it. Exit 0 when ready, 1 otherwise (reason on stderr).
"""

import socket
import struct
import sys

TIMEOUT_S = 5.0
KAFKA_NODE_ID = 1


class ProbeError(Exception):
    pass


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by server")
        buf.extend(chunk)
    return bytes(buf)


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ProbeError("truncated response")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def i8(self):
        return self.unpack(">b")

    def i16(self):
        return self.unpack(">h")

    def i32(self):
        return self.unpack(">i")

    def uvarint(self):
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def string(self):  # int16 length, -1 = null
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def compact_string(self):  # uvarint length + 1, 0 = null
        n = self.uvarint() - 1
        return None if n < 0 else self.take(n).decode()

    def skip_tagged_fields(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


# --- Kafka ----------------------------------------------------------------

API_METADATA = 3
API_VERSIONS = 18
# Metadata versions this probe can encode/decode; v9+ use the flexible format.
METADATA_MAX = 12
METADATA_FIRST_FLEXIBLE = 9


def kafka_request(sock, api_key, version, correlation_id, body, flexible=False):
    client_id = b"timbre-probe"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    if flexible:
        header += b"\x00"  # request header v2: empty tagged fields
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    resp = Reader(recv_exact(sock, size))
    got = resp.i32()
    if got != correlation_id:
        raise ProbeError(f"correlation id {got}, expected {correlation_id}")
    return resp


def metadata_body(version):
    if version >= METADATA_FIRST_FLEXIBLE:
        body = b"\x01"  # compact array, empty: no topics, brokers only
        body += b"\x00"  # allow_auto_topic_creation
        if version <= 10:
            body += b"\x00"  # include_cluster_authorized_operations
        body += b"\x00"  # include_topic_authorized_operations
        return body + b"\x00"  # tagged fields
    body = struct.pack(">i", 0)  # empty array (null would mean all topics)
    if version >= 4:
        body += b"\x00"
    if version >= 8:
        body += b"\x00\x00"
    return body


def probe_kafka(host, port):
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        # v0 is understood by every broker and tells us which Metadata versions exist.
        r = kafka_request(sock, API_VERSIONS, 0, 1, b"")
        err = r.i16()
        if err:
            raise ProbeError(f"ApiVersions error code {err}")
        ranges = {}
        for _ in range(r.i32()):
            key, lo, hi = r.i16(), r.i16(), r.i16()
            ranges[key] = (lo, hi)
        if API_METADATA not in ranges:
            raise ProbeError("broker does not offer Metadata")
        lo, hi = ranges[API_METADATA]
        # Kafka 4 dropped the oldest versions, so take the lowest one we can speak.
        version = max(lo, 1)
        if version > min(hi, METADATA_MAX):
            raise ProbeError(f"no common Metadata version (broker {lo}-{hi})")
        flexible = version >= METADATA_FIRST_FLEXIBLE
        r = kafka_request(sock, API_METADATA, version, 2, metadata_body(version), flexible)
        if flexible:
            r.skip_tagged_fields()  # response header v1
        if version >= 3:
            r.i32()  # throttle_time_ms
        brokers = []
        count = r.uvarint() - 1 if flexible else r.i32()
        for _ in range(count):
            node_id = r.i32()
            bhost = r.compact_string() if flexible else r.string()
            bport = r.i32()
            r.compact_string() if flexible else r.string()  # rack (v1+)
            if flexible:
                r.skip_tagged_fields()
            brokers.append((node_id, bhost, bport))
    if not any(b[0] == KAFKA_NODE_ID and b[2] == port for b in brokers):
        raise ProbeError(f"broker {KAFKA_NODE_ID} on port {port} not in metadata: {brokers}")
    return f"kafka ok: brokers {brokers} (metadata v{version}, {len(ranges)} apis)"


# --- CQL ------------------------------------------------------------------

CQL_VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_OPTIONS, OP_SUPPORTED = 0x00, 0x01, 0x02, 0x05, 0x06
OP_QUERY, OP_RESULT, OP_AUTHENTICATE = 0x07, 0x08, 0x03
RESULT_ROWS = 0x0002
CONSISTENCY_ONE = 0x0001


def cql_string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def cql_request(sock, stream, opcode, body):
    sock.sendall(struct.pack(">BBhBi", CQL_VERSION, 0, stream, opcode, len(body)) + body)
    version, _flags, got_stream, op, length = struct.unpack(">BBhBi", recv_exact(sock, 9))
    if version != (0x80 | CQL_VERSION):
        raise ProbeError(f"unexpected response version byte {version:#x}")
    if got_stream != stream:
        raise ProbeError(f"stream {got_stream}, expected {stream}")
    r = Reader(recv_exact(sock, length))
    if op == OP_ERROR:
        code = r.i32()
        raise ProbeError(f"server error {code:#06x}: {r.string()}")
    return op, r


def probe_cql(host, port):
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        op, r = cql_request(sock, 0, OP_OPTIONS, b"")
        if op != OP_SUPPORTED:
            raise ProbeError(f"OPTIONS answered with opcode {op:#x}")
        supported = {}
        for _ in range(r.i16()):
            key = r.string()
            supported[key] = [r.string() for _ in range(r.i16())]

        startup = struct.pack(">H", 1) + cql_string("CQL_VERSION") + cql_string("3.0.0")
        op, _ = cql_request(sock, 1, OP_STARTUP, startup)
        if op == OP_AUTHENTICATE:
            raise ProbeError("server wants authentication; the test node should not")
        if op != OP_READY:
            raise ProbeError(f"STARTUP answered with opcode {op:#x}")

        query = b"SELECT release_version FROM system.local"
        body = struct.pack(">i", len(query)) + query + struct.pack(">HB", CONSISTENCY_ONE, 0)
        op, r = cql_request(sock, 2, OP_QUERY, body)
        if op != OP_RESULT or r.i32() != RESULT_ROWS:
            raise ProbeError("query did not return rows")
        flags, columns = r.i32(), r.i32()
        if flags & 0x0002:  # has_more_pages: skip paging state
            r.take(r.i32())
        if not flags & 0x0004:  # metadata present
            if flags & 0x0001:  # global table spec
                r.string(), r.string()
            for _ in range(columns):
                if not flags & 0x0001:
                    r.string(), r.string()
                r.string()  # column name
                r.i16()  # type id (varchar: no extra payload)
        if r.i32() < 1:
            raise ProbeError("system.local returned no rows")
        n = r.i32()
        release = None if n < 0 else r.take(n).decode()
    return (f"cql ok: release_version {release} "
            f"(protocol v4, CQL_VERSION {supported.get('CQL_VERSION')})")


def main(argv):
    if len(argv) != 3 or argv[1] not in ("kafka", "cql"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, _, port = argv[2].rpartition(":")
    try:
        probe = probe_kafka if argv[1] == "kafka" else probe_cql
        print(probe(host or "127.0.0.1", int(port)))
        return 0
    except (OSError, ProbeError, ValueError, UnicodeDecodeError) as exc:
        print(f"{argv[1]} probe failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
