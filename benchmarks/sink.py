"""A fake Elimity Insights for benchmarks: accepts uploads, counts and discards them.

``POST /api/sources/{id}/snapshots`` and ``POST /api/sources/{id}/connector-logs``
read the whole body (``Content-Length`` or chunked), answer 204 and count the bytes.
After answering, a snapshot is decompressed and scanned, without parsing it, for the
number of user and group entities and of relationships, so that the harness can check
that every client delivered the same graph; answering first keeps that work out of
the client's wall time. ``GET /_bench/stats`` returns the counters (``pending`` is
the number of snapshots still being scanned), ``POST /_bench/reset`` zeroes them.

Run it as its own process (``python -m benchmarks.sink``); it binds 127.0.0.1 only,
prints one JSON line with its port and serves until SIGTERM or SIGINT (or, with
``--stop-on-eof``, until its standard input closes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import zlib
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from benchmarks.scim_server import HOST, BenchServer, serve_until_told

_PATH = re.compile(r"^/api/sources/(\d+)/(snapshots|connector-logs)$")
_CHUNK = 1 << 20
# The snapshot JSON as elimity-insights-client writes it (simplejson's default
# separators); an entity's "type" is its last key, so these only match entities.
PATTERNS = {
    "users": b'"type": "user"}',
    "groups": b'"type": "group"}',
    "relationships": b'"fromEntityId": ',
    "group_relationships": b'"fromEntityType": "group"',
    "indirect": b'"value": "indirect"}',
}


def scan_snapshot(chunks: Iterable[bytes], *, compressed: bool) -> dict[str, int]:
    """Count entities and relationships in snapshot JSON, streaming."""
    counts = dict.fromkeys(PATTERNS, 0)
    counts["json_bytes"] = 0
    overlap = max(map(len, PATTERNS.values())) - 1
    tail = b""
    decompressor = zlib.decompressobj() if compressed else None

    def feed(data: bytes) -> None:
        nonlocal tail
        if not data:
            return
        counts["json_bytes"] += len(data)
        buffer = tail + data
        for name, pattern in PATTERNS.items():
            # Matches inside the tail alone were counted with the previous buffer.
            counts[name] += buffer.count(pattern) - tail.count(pattern)
        tail = buffer[-overlap:]

    for chunk in chunks:
        if decompressor is None:
            feed(chunk)
            continue
        data = decompressor.decompress(chunk, _CHUNK * 8)
        feed(data)
        while decompressor.unconsumed_tail:
            feed(decompressor.decompress(decompressor.unconsumed_tail, _CHUNK * 8))
    if decompressor is not None:
        feed(decompressor.flush())
    return counts


class SinkState:
    """Counters of what the sink received."""

    def __init__(self, *, inspect: bool) -> None:
        self.inspect = inspect
        self.lock = threading.Lock()
        self.stats: dict[str, object] = {}
        self.reset()

    def reset(self) -> None:
        """Zero the counters."""
        with self.lock:
            self.stats = {
                "snapshots": 0,
                "snapshot_bytes": 0,
                "logs": 0,
                "log_bytes": 0,
                "pending": 0,
                "last_snapshot": None,
                "last_log": None,
            }

    def add(self, name: str, amount: int) -> None:
        """Add to a numeric counter."""
        with self.lock:
            current = self.stats[name]
            assert isinstance(current, int)  # noqa: S101 - numeric counters only
            self.stats[name] = current + amount

    def set(self, name: str, value: object) -> None:
        """Set a counter."""
        with self.lock:
            self.stats[name] = value

    def snapshot(self) -> dict[str, object]:
        """Return a copy of the counters."""
        with self.lock:
            return dict(self.stats)


class SinkHandler(BaseHTTPRequestHandler):
    """Reads uploads, answers 204, then scans snapshots."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "bench-sink/1"
    state: SinkState  # set on a subclass in main

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if urlsplit(self.path).path == "/_bench/stats":
            self._reply(200, json.dumps(self.state.snapshot()).encode())
        else:
            self._reply(404, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        chunks = list(self._body())
        size = sum(map(len, chunks))
        if path == "/_bench/reset":
            self.state.reset()
            self._reply(204, b"")
            return
        match = _PATH.match(path)
        if match is None:
            self._reply(404, b'{"error": "not found"}')
            return
        if match.group(2) == "connector-logs":
            self.state.add("logs", 1)
            self.state.add("log_bytes", size)
            self.state.set("last_log", b"".join(chunks).decode("utf-8", "replace"))
            self._reply(204, b"")
            return
        self.state.add("snapshots", 1)
        self.state.add("snapshot_bytes", size)
        if not self.state.inspect:
            self._reply(204, b"")
            return
        self.state.add("pending", 1)
        try:
            self._reply(204, b"")
            result: dict[str, object] = {"compressed_bytes": size}
            try:
                result.update(scan_snapshot(chunks, compressed=True))
            except zlib.error as exc:
                result["error"] = f"not a zlib stream: {exc}"
            del chunks
            self.state.set("last_snapshot", result)
        finally:
            self.state.add("pending", -1)

    def _body(self) -> Iterable[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline(8)  # the CRLF after each chunk
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _CHUNK))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--no-inspect", action="store_true", help="do not scan snapshots"
    )
    parser.add_argument(
        "--stop-on-eof", action="store_true", help="stop when stdin closes"
    )
    args = parser.parse_args(argv)
    handler = type("BoundSinkHandler", (SinkHandler,), {})
    handler.state = SinkState(inspect=not args.no_inspect)
    server = BenchServer((HOST, args.port), handler)
    port = server.server_address[1]
    ready = {"port": port, "url": f"http://{HOST}:{port}", "pid": os.getpid()}
    serve_until_told(server, ready, stop_on_eof=args.stop_on_eof)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
