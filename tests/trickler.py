"""A loopback HTTP server that answers one byte at a time, for tests of the call deadline.

    with Trickler(mode="headers") as server:      # or "body": the headers come at once
        ... server.url ...

httpx's timeouts bound each read, and every byte arrives well within them, so only a deadline
on the whole exchange ends such a call. Requests whose path contains a key of `quick` are
answered at once with its JSON body (a token, a codebase), so a connector gets as far as the
call under test.
"""

from __future__ import annotations

import json
import socketserver
import threading
from typing import Any

HANG_GUARD = 30  # seconds; tests assert the error, not a duration, but a hang must not pass
QUICK = {
    "/auth/oauth/token": {"access_token": "t0k3n-for-the-trickler", "expires_in": 3600},
    "/login/companyinfo/": {"Codebase": "v2025_1/"},
}


class Trickler(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str = "body", pause: float = 0.2, quick: dict[str, Any] = QUICK):
        self.mode, self.pause, self.quick = mode, pause, quick
        self.requests: list[str] = []  # request lines of the calls that were trickled
        self._stop = threading.Event()
        super().__init__(("127.0.0.1", 0), _TrickleHandler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self._stop.set()
        self.shutdown()
        self.server_close()

    def __enter__(self) -> Trickler:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _TrickleHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: Trickler = self.server
        request_line = self.rfile.readline().decode("latin-1").strip()
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        self.rfile.read(length)
        quick = next((body for path, body in server.quick.items() if path in request_line), None)
        if quick is not None:
            self.wfile.write(_head(body := json.dumps(quick).encode()) + body)
            return
        server.requests.append(request_line)
        body = b"[" + b" " * 10_000 + b"]"
        head = _head(body)
        if server.mode == "body":
            self.wfile.write(head)
            head = b""
        for byte in head + body:
            if server._stop.wait(server.pause):
                return
            try:
                self.wfile.write(bytes([byte]))
            except OSError:  # the client gave up, as it should
                return


def _head(body: bytes) -> bytes:
    # One answer per connection, said so: a client that kept a quick answer's connection for
    # the call under test would meet a closed socket instead of the trickle.
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
