"""A fault-injecting HTTP/1.1 proxy for the backend tests.

``FaultProxy(upstream_port)`` listens on 127.0.0.1 and forwards every
request to the upstream server (a docker-registry) on 127.0.0.1. Blob
GETs (paths with ``/blobs/``) take the next fault from a queue
(``proxy.inject("reset", "500")``); everything else, and blob GETs once the
queue is empty, passes through unchanged. Keep-alive connections are
served, so the client under test reuses its connections as it would
against the real server.

Faults:

``reset``  the connection is closed with a TCP RST before any answer;
``500``    ``500 Internal Server Error`` with an empty body;
``429``    ``429 Too Many Requests`` with ``Retry-After: 1``;
``cut``    the upstream answer's status and headers (full Content-Length),
           half of its body, then the connection is closed;
``stall``  nothing is sent for ``stall_secs`` seconds, then the
           connection is closed;
``flip``   the upstream answer with one byte of its body flipped (a
           misbehaving server that still says 200).

``proxy.events`` lists ``(path, what)`` for every blob GET, ``what`` being
the fault or ``"pass <status>"``; ``proxy.blob_bytes`` counts the body bytes
of the blob answers passed on (what the client fetched).
"""

from __future__ import annotations

import http.client
import socket
import socketserver
import struct
import threading
import time

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length"}


class FaultProxy:
    def __init__(self, upstream_port: int, stall_secs: float = 10.0):
        self.upstream_port = upstream_port
        self.stall_secs = stall_secs
        self.queue: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.blob_bytes = 0
        self.auth_seen: list[str] = []  # Authorization header values, in order
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def inject(self, *faults: str) -> None:
        with self.lock:
            self.queue.extend(faults)

    def clear(self) -> None:
        with self.lock:
            self.queue.clear()

    def blob_events(self) -> list[str]:
        with self.lock:
            return [what for _, what in self.events]

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    # -- serving ------------------------------------------------------------

    def _next_fault(self, path: str) -> str | None:
        if "/blobs/" not in path:
            return None
        with self.lock:
            return self.queue.pop(0) if self.queue else None

    def _record(self, path: str, what: str) -> None:
        with self.lock:
            self.events.append((path, what))

    def _serve(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        try:
            while not self.stopping.is_set():
                line = f.readline(65537)
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers = []
                while True:
                    h = f.readline(65537)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, v = h.decode("latin-1").split(":", 1)
                    headers.append((k.strip(), v.strip()))
                with self.lock:
                    self.auth_seen += [v for k, v in headers if k.lower() == "authorization"]
                length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
                body = f.read(length) if length else b""
                fault = self._next_fault(path)
                if fault in ("reset", "stall"):
                    self._record(path, fault)
                    if fault == "stall":
                        self.stopping.wait(self.stall_secs)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if fault in ("500", "429"):
                    self._record(path, fault)
                    reason = "Internal Server Error" if fault == "500" else "Too Many Requests"
                    extra = "Retry-After: 1\r\n" if fault == "429" else ""
                    conn.sendall(f"HTTP/1.1 {fault} {reason}\r\n{extra}Content-Length: 0\r\n\r\n"
                                 .encode())
                    continue
                status, reason, rheaders, rbody = self._forward(method, path, headers, body)
                if "/blobs/" in path:
                    self._record(path, fault or f"pass {status}")
                    if method == "GET" and fault is None:
                        with self.lock:
                            self.blob_bytes += len(rbody)
                if fault == "flip" and rbody:
                    rbody = bytes([rbody[0] ^ 0xFF]) + rbody[1:]
                head = f"HTTP/1.1 {status} {reason}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in rheaders)
                head += f"Content-Length: {len(rbody)}\r\n\r\n"
                if fault == "cut":
                    conn.sendall(head.encode("latin-1") + rbody[: len(rbody) // 2])
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                conn.sendall(head.encode("latin-1") + (b"" if method == "HEAD" else rbody))
        except (OSError, ValueError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _forward(self, method, path, headers, body):
        for attempt in range(50):
            try:
                up = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
                up.request(method, path, body=body or None,
                            headers={k: v for k, v in headers if k.lower() not in HOP_BY_HOP})
                r = up.getresponse()
                data = r.read()
                up.close()
                return r.status, r.reason, [(k, v) for k, v in r.getheaders()
                                            if k.lower() not in HOP_BY_HOP], data
            except ConnectionRefusedError:
                # The upstream is being restarted: answer 503 rather than wait.
                return 503, "Service Unavailable", [], b""
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")
