"""Contract servers: loopback stand-ins for third-party feedback APIs, written from their specs.

Each server answers as the vendor documents (required headers and fields, enums, id formats, the
success shape, the error shape) so an exporter is tested against the contract rather than
against itself. They share this base: a real `ThreadingHTTPServer` on 127.0.0.1 (port 0) in a
daemon thread, a record of every request, and fault knobs that misbehave on demand.
"""

from __future__ import annotations

import abc
import contextlib
import json
import re
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tests import _services

#: RFC 3339 with a zone, optionally followed by a `[Zone]` as Dixa's examples show.
DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})(\[[^\]]+\])?$"
)
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass
class Recorded:
    """One request as received, and the status it was answered with (None: no answer)."""

    method: str
    path: str
    #: Header names in lower case.
    headers: dict[str, str]
    body: bytes
    route: str | None
    received_at: float
    status: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Fault:
    """What the next matching request gets instead of being handled.

    `hang` seconds of silence first (cut short when the server closes); then `status` with
    `body` and `Retry-After`, or, with `status` None, the connection is closed unanswered.
    Either way the request is not handled: nothing is stored.
    """

    status: int | None
    retry_after: str | None = None
    body: Any = None
    hang: float = 0.0
    route: str | None = None


class Reply:
    """A handler's answer: status, a JSON document (or raw bytes), extra headers."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


class ContractServer(abc.ABC):
    """Base of the contract servers. Subclasses implement `route`, `authorized`, `handle` and
    `error`; everything else (recording, faults, lifecycle) is here."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._faults: deque[Fault] = deque()
        self._forever: Fault | None = None
        self._stopping = threading.Event()
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"

    # -- to implement ---------------------------------------------------------------------------

    @abc.abstractmethod
    def route(self, method: str, path: str) -> str | None:
        """The name of the endpoint `path` addresses, or None (answered 404)."""

    @abc.abstractmethod
    def authorized(self, headers: dict[str, str]) -> bool:
        """Whether the request carries the key, in the vendor's scheme."""

    @abc.abstractmethod
    def handle(self, route: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """Validate and serve one authorised request to a known endpoint."""

    @abc.abstractmethod
    def error(self, status: int, message: str) -> Any:
        """The vendor's error document for `status`."""

    # -- knobs ----------------------------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        retry_after: str | None = None,
        body: Any = None,
        route: str | None = None,
    ) -> None:
        """Answer the next `count` requests (to `route`, if given) with `status` instead."""
        with self.lock:
            self._faults.extend([Fault(status, retry_after, body, route=route)] * count)

    def fail_always(self, status: int, *, route: str | None = None) -> None:
        """Answer every request (to `route`) with `status` until `clear_faults()`."""
        with self.lock:
            self._forever = Fault(status, route=route)

    def hang_next(self, count: int, seconds: float, *, route: str | None = None) -> None:
        """Sit on the next `count` requests for `seconds`, then hang up without handling them."""
        with self.lock:
            self._faults.extend([Fault(None, hang=seconds, route=route)] * count)

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()
            self._forever = None

    def requests(self, route: str | None = None) -> list[Recorded]:
        """Every request received (to `route`, if given), in order."""
        with self.lock:
            return [r for r in self._requests if route is None or r.route == route]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll `predicate()` until true; fail the test after `timeout` seconds."""
        _services.wait_for(lambda: predicate() or None, timeout, str(predicate), interval=0.01)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()  # joins the handler threads
        self._thread.join()

    def __enter__(self) -> ContractServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- used by the handler --------------------------------------------------------------------

    def _take_fault(self, route: str | None) -> Fault | None:
        with self.lock:
            if self._forever is not None and self._forever.route in (None, route):
                return self._forever
            for fault in self._faults:
                if fault.route in (None, route):
                    self._faults.remove(fault)
                    return fault
        return None

    def _record(self, record: Recorded) -> None:
        with self.lock:
            self._requests.append(record)


class _HTTPServer(ThreadingHTTPServer):
    # Handler threads are joined on close, so no socket outlives the test (ResourceWarning).
    daemon_threads = False
    block_on_close = True

    def __init__(self, contract: ContractServer) -> None:
        self.contract = contract
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # Skip the reverse-DNS lookup of HTTPServer.server_bind: it can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def close_connections(self) -> None:
        with self.contract.lock:
            open_connections = list(self.connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts, a killed process) are part of the tests."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ContractServer"
    timeout = 30.0
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.contract.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.contract.lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests assert on the library's log records only."""

    def do_POST(self) -> None:
        self._serve()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def _serve(self) -> None:
        contract = self.server.contract
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        route = contract.route(self.command, self.path)
        record = Recorded(self.command, self.path, headers, body, route, time.time())
        contract._record(record)
        fault = contract._take_fault(route)
        if fault is not None:
            if fault.hang:
                contract._stopping.wait(fault.hang)
            if fault.status is None or contract._stopping.is_set():
                self.close_connection = True
                return
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            default = None if 200 <= fault.status < 300 else contract.error(fault.status, "fault")
            self._answer(record, Reply(fault.status, fault.body or default, extra))
            return
        if route is None:
            self._answer(record, Reply(404, contract.error(404, "Not Found")))
        elif not contract.authorized(headers):
            self._answer(record, Reply(401, contract.error(401, "Unauthorized")))
        else:
            self._answer(record, contract.handle(route, self.path, headers, body))

    def _answer(self, record: Recorded, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            payload = reply.body
        elif reply.body is None:
            payload = b""
        else:
            payload = json.dumps(reply.body).encode()
        with self.server.contract.lock:
            record.status = reply.status
        self.send_response(reply.status)
        if payload and not isinstance(reply.body, bytes):
            self.send_header("Content-Type", "application/json")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
