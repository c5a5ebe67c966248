"""A fault-injecting HTTP proxy between boto3 and moto: the real S3 protocol, with S3's failures.

moto does not inject faults by itself. Point ``AWS_ENDPOINT_URL_S3`` at :attr:`FaultProxy.endpoint`
and queue faults: S3 error responses (``503 SlowDown`` throttling, ``500 InternalError``) answered
without forwarding, corrupted request bodies (a flipped byte in an UploadPart), stalls (no answer
for a while, or an answer that stops mid-body), or a delay per request. Every injected fault is
counted in :attr:`FaultProxy.injected`.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "upgrade", "te"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # with the query string
    body: bytes

    @property
    def is_upload_part(self) -> bool:
        return self.method == "PUT" and "partNumber=" in self.path and "uploadId=" in self.path


@dataclass
class _Fault:
    kind: str  # error | corrupt | stall
    times: int  # -1: forever
    match: Callable[[Request], bool]
    status: int = 0
    code: str = ""
    seconds: float = 0.0  # stall: how long
    after_bytes: int | None = None  # stall: mid-body after this many bytes of the answer (None: before it)


class FaultProxy:
    def __init__(self, upstream: str, *, delay_s: float = 0.0) -> None:
        u = urlparse(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.delay_s = delay_s
        self.injected: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queue faults
    def fail(self, times: int, status: int = 503, code: str = "SlowDown",
             match: Callable[[Request], bool] = lambda r: True) -> None:
        """Answer the next ``times`` matching requests with an S3 error (-1: all of them)."""
        with self._lock:
            self._faults.append(_Fault("error", times, match, status, code))

    def corrupt(self, times: int = 1, match: Callable[[Request], bool] = lambda r: r.is_upload_part) -> None:
        """Flip one byte in the body of the next ``times`` matching requests, then forward them."""
        with self._lock:
            self._faults.append(_Fault("corrupt", times, match))

    def stall(self, times: int, seconds: float, match: Callable[[Request], bool] = lambda r: True,
              after_bytes: int | None = None) -> None:
        """Stall the next ``times`` matching requests for ``seconds``: before answering at all (the
        request is forwarded afterwards, as a slow server would), or, with ``after_bytes``, after
        sending the headers and that many bytes of the body (a transfer that hangs mid-file)."""
        with self._lock:
            self._faults.append(_Fault("stall", times, match, seconds=seconds, after_bytes=after_bytes))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take(self, req: Request) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times != 0 and fault.match(req):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    # -- the HTTP side
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream_conn: http.client.HTTPConnection | None = None

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    self._send(400, b"chunked request bodies are not supported by the fault proxy", {})
                    return
                body = self.rfile.read(length) if length else b""
                req = Request(self.command, self.path, body)
                proxy.requests[self.command] += 1
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                fault = proxy._take(req)
                if fault is not None and fault.kind == "error":
                    proxy.injected[f"{fault.status} {fault.code}"] += 1
                    xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
                           f"<Message>injected by the test proxy</Message>"
                           f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>").encode()
                    self._send(fault.status, b"" if self.command == "HEAD" else xml,
                               {"Content-Type": "application/xml"})
                    return
                if fault is not None and fault.kind == "stall":
                    proxy.injected["stall"] += 1
                    if fault.after_bytes is None:
                        time.sleep(fault.seconds)
                if fault is not None and fault.kind == "corrupt" and body:
                    proxy.injected["corrupt"] += 1
                    mid = len(body) // 2
                    body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1:]
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                try:
                    status, resp_headers, data = self._forward(body, headers)
                except OSError:
                    self.upstream_conn = None
                    self._send(503, b"", {})  # upstream down: what a load balancer in front of S3 says
                    return
                if fault is not None and fault.kind == "stall" and fault.after_bytes is not None:
                    self._send(status, data, resp_headers, head=self.command == "HEAD",
                               stall=(fault.after_bytes, fault.seconds))
                    return
                self._send(status, data, resp_headers, head=self.command == "HEAD")

            def _forward(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
                for attempt in (1, 2):  # a stale keep-alive connection gets one fresh retry
                    if self.upstream_conn is None:
                        self.upstream_conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                    try:
                        self.upstream_conn.request(self.command, self.path, body=body, headers=headers)
                        resp = self.upstream_conn.getresponse()
                        data = resp.read()
                        return resp.status, {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}, data
                    except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                        self.upstream_conn.close()
                        self.upstream_conn = None
                        if attempt == 2:
                            raise
                raise AssertionError("unreachable")

            def _send(self, status: int, data: bytes, headers: dict[str, str], head: bool = False,
                      stall: tuple[int, float] | None = None) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "server", "date"):
                        self.send_header(k, v)
                length = headers.get("Content-Length", headers.get("content-length")) if head else None
                self.send_header("Content-Length", str(length if length is not None else len(data)))
                self.end_headers()
                if not head and stall is not None:
                    try:
                        self.wfile.write(data[:stall[0]])
                        self.wfile.flush()
                        time.sleep(stall[1])
                        self.wfile.write(data[stall[0]:])
                    except OSError:  # the client gave up (its read timeout) or was killed
                        self.close_connection = True
                    return
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler
