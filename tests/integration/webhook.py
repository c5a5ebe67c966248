"""A webhook receiver on loopback: what a notification block posts to, recorded for the test."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


class Webhook:
    def __init__(self) -> None:
        self.received: queue.Queue = queue.Queue()
        received = self.received

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                received.put(self.rfile.read(int(self.headers["Content-Length"])).decode())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = HTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float = 90.0) -> dict:
        """The first JSON message for which ``predicate(message)`` holds; others are kept for later calls."""
        import time

        deadline, skipped = time.monotonic() + timeout, []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching notification within {timeout:g}s (got {skipped})")
                try:
                    msg = json.loads(self.received.get(timeout=left))
                except queue.Empty:
                    continue
                if predicate(msg):
                    return msg
                skipped.append(msg)
        finally:
            for m in skipped:
                self.received.put(json.dumps(m))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
