"""The HTTP side of the test server: a threaded loopback server and its request handler.

HTTP/1.1 with keep-alive, because the clients under test pool connections and a server that
closed after every answer would hide their connection-reuse bugs. Keeping connections alive means
every request body is read in full (or the connection closed) before the next request is parsed.
"""

from __future__ import annotations

import contextlib
import hmac
import http
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from brixo_otel.testing import _otlp
from brixo_otel.testing._faults import Drop, DropAfterStore, Fail, FaultPlan, Hang, Trickle
from brixo_otel.testing._records import ReceivedSignal
from brixo_otel.testing._routes import SignalsRoute, TracesRoute, route
from brixo_otel.testing._store import Store, StoreClosedError
from brixo_otel.testing._validation import BadSignalError, parse_signal_body

logger = logging.getLogger("brixo_otel.testing")

JSON_API = "application/vnd.api+json"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

#: OTLP batches are far larger than signals; this only stops a runaway client.
MAX_OTLP_BODY_BYTES = 32 * 1024 * 1024
#: An unread body up to this size is read and thrown away to keep the connection; past it, the
#: connection is closed instead.
MAX_DRAIN_BYTES = 1024 * 1024


@dataclass
class ServerState:
    """What every request thread shares."""

    store: Store
    faults: FaultPlan
    api_key: str | None
    max_body_bytes: int
    require_known_ids: bool
    stopping: threading.Event = field(default_factory=threading.Event)


class LoopbackHTTPServer(ThreadingHTTPServer):
    """Tracks its open connections so `stop()` can end them instead of leaving threads behind."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: ServerState) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_changed = threading.Condition()
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall for seconds on hosts
        # without working reverse DNS; a loopback test server has no use for the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket) -> None:
        with self._connections_changed:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_changed:
            self._connections.discard(connection)
            self._connections_changed.notify_all()

    def close_connections(self, timeout: float) -> None:
        """Shut down open connections and wait (bounded) for their threads to finish."""
        deadline = time.monotonic() + timeout
        with self._connections_changed:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            while self._connections:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._connections_changed.wait(remaining)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up and shutdown races are routine here; only our own bugs are news.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


def _error_document(status: int, detail: str) -> dict[str, Any]:
    try:
        title = http.HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return {"errors": [{"status": str(status), "title": title, "detail": detail}]}


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BrixoTestServer"
    # Idle keep-alive connections give up after this long, so threads do not pile up.
    timeout = 60.0
    # Headers and body go out in separate writes; with Nagle on, the body waits for the client's
    # delayed ACK and every error answer takes 40 ms.
    disable_nagle_algorithm = True
    server: LoopbackHTTPServer

    _record_seq: int | None
    _body_pending: bool
    _responded: bool

    # -- connection lifecycle ---------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line never holds the API key (it travels in headers), so this is safe.
        logger.debug("%s " + format, self.address_string(), *args)

    # -- dispatch ---------------------------------------------------------------------------

    def do_POST(self) -> None:
        self._dispatch(self._handle_post)

    def _handle_other_method(self) -> None:
        self._dispatch(self._handle_not_allowed)

    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle_other_method

    def _dispatch(self, handle: Callable[[], None]) -> None:
        self._record_seq = None
        self._responded = False
        self._body_pending = self._content_length_or_none() != 0
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            self._record_seq = self.server.state.store.begin_request(
                self.command, self.path, headers, time.time()
            )
            handle()
        except StoreClosedError:
            self.close_connection = True
        except Exception:
            logger.exception("BrixoTestServer failed on %s %s", self.command, self.path)
            self.close_connection = True
            if not self._responded:
                # Best effort: whatever broke may break the answer too, and it is logged above.
                with contextlib.suppress(Exception):
                    self._send_error(500, "The test server failed; see its log.")

    def _handle_not_allowed(self) -> None:
        if route(self.path) is None:
            self._send_error(404, "No such endpoint.")
        else:
            self._send_error(405, "Only POST is allowed here.", headers={"Allow": "POST"})

    def _handle_post(self) -> None:
        endpoint = route(self.path)
        if isinstance(endpoint, SignalsRoute):
            self._handle_signal(endpoint)
        elif isinstance(endpoint, TracesRoute):
            self._handle_traces()
        else:
            self._send_error(404, "No such endpoint.")

    # -- Signals API ------------------------------------------------------------------------

    def _handle_signal(self, endpoint: SignalsRoute) -> None:
        state = self.server.state
        received_at = time.time()
        fault = state.faults.take()
        if isinstance(fault, Drop):
            self._discard_body()
            self._hang_up()
            return
        if isinstance(fault, Hang) and not self._pause(fault.seconds):
            return
        if not self._pause(state.faults.latency):
            return
        if isinstance(fault, Fail):
            self._send_fault(fault)
            return

        if state.api_key is not None and not self._bearer_matches("Authorization", state.api_key):
            self._send_error(
                401, "Missing or invalid API key.", headers={"WWW-Authenticate": "Bearer"}
            )
            return
        if _media_type(self.headers.get("Content-Type")) != JSON_API:
            self._send_error(415, f"Content-Type must be {JSON_API}.")
            return
        raw = self._read_body_or_none(state.max_body_bytes)
        if raw is None:
            return
        try:
            body = parse_signal_body(raw)
        except BadSignalError as exc:
            self._send_error(400, str(exc))
            return
        if state.require_known_ids and not state.store.knows(endpoint.target, endpoint.target_id):
            self._send_error(404, f"No {endpoint.target} with id {endpoint.target_id!r}.")
            return
        state.store.add_signal(
            ReceivedSignal(
                target=endpoint.target,
                target_id=endpoint.target_id,
                name=body.name,
                value=body.value,
                occurred_at=body.occurred_at,
                user_message=body.user_message,
                idempotency_key=self.headers.get("Idempotency-Key"),
                received_at=received_at,
            )
        )
        if isinstance(fault, DropAfterStore):
            self._hang_up()
            return
        if isinstance(fault, Trickle):
            self._trickle(fault.interval)
            return
        self._send(204)

    def _trickle(self, interval: float) -> None:
        """Answer 204, one byte every `interval` seconds (cut short by `stop()`)."""
        self._discard_body()
        self._responded = True
        self._finish_record(204)
        answer = (
            f"HTTP/1.1 204 No Content\r\nServer: {self.server_version}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        self.close_connection = True
        stopping = self.server.state.stopping
        for index in range(len(answer)):
            if index and stopping.wait(interval):
                return
            try:
                self.wfile.write(answer[index : index + 1])
                self.wfile.flush()
            except OSError:
                return  # the client gave up

    def _send_fault(self, fault: Fail) -> None:
        headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        if fault.body is None:
            self._send_error(fault.status, "Failure injected by the test server.", headers=headers)
        else:
            self._send_json(fault.status, fault.body, JSON_API, headers=headers)

    def _pause(self, seconds: float) -> bool:
        """Sleep, cut short by `stop()`; False (and the connection hung up) when stopping."""
        if seconds > 0 and self.server.state.stopping.wait(seconds):
            self._hang_up()
            return False
        return True

    # -- OTLP receiver ----------------------------------------------------------------------

    def _handle_traces(self) -> None:
        state = self.server.state
        if state.api_key is not None and not self._bearer_matches("Brixo-Auth", state.api_key):
            self._send_text(401, "Missing or invalid Brixo-Auth header.")
            return
        media_type = _media_type(self.headers.get("Content-Type"))
        if media_type not in (PROTOBUF, JSON):
            self._send_text(415, f"Content-Type must be {PROTOBUF} or {JSON}.")
            return
        raw = self._read_body_or_none(MAX_OTLP_BODY_BYTES)
        if raw is None:
            return
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        try:
            if encoding in _otlp.CONTENT_ENCODINGS:
                raw = _otlp.inflate(raw, encoding, MAX_OTLP_BODY_BYTES)
            elif encoding != "identity":
                self._send_text(415, f"Content-Encoding {encoding!r} is not supported.")
                return
            spans = _otlp.decode_protobuf(raw) if media_type == PROTOBUF else _otlp.decode_json(raw)
        except _otlp.OtlpTooLargeError as exc:
            self._send_text(413, str(exc))
            return
        except _otlp.OtlpDecodeError as exc:
            self._send_text(400, str(exc))
            return
        state.store.add_spans(spans)
        if media_type == PROTOBUF:
            # An empty ExportTraceServiceResponse serialises to zero bytes.
            self._send(200, b"", {"Content-Type": PROTOBUF})
        else:
            self._send(200, b"{}", {"Content-Type": JSON})

    # -- request body -----------------------------------------------------------------------

    def _content_length_or_none(self) -> int | None:
        """The declared body length; None when it is missing-but-needed or unreadable."""
        if self.headers.get("Transfer-Encoding"):
            return None
        declared = self.headers.get("Content-Length")
        if declared is None:
            return 0
        try:
            length = int(declared)
        except ValueError:
            return None
        return length if length >= 0 else None

    def _read_body_or_none(self, limit: int) -> bytes | None:
        """The body, or None after answering 411/400/413 when it cannot or should not be read."""
        length = self._content_length_or_none()
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                self._send_error(411, "A Content-Length header is required.")
            else:
                self._send_error(400, "The Content-Length header is invalid.")
            return None
        if length > limit:
            self.close_connection = True
            self._send_error(413, f"The request body is over {limit} bytes.")
            return None
        self._body_pending = False
        return self.rfile.read(length)

    def _discard_body(self) -> None:
        """Read an unread body so the connection can carry the next request, or give it up."""
        if not self._body_pending:
            return
        self._body_pending = False
        length = self._content_length_or_none()
        if length is None or length > MAX_DRAIN_BYTES:
            self.close_connection = True
        else:
            self.rfile.read(length)

    # -- answers ----------------------------------------------------------------------------

    def _bearer_matches(self, header: str, api_key: str) -> bool:
        scheme, _, token = (self.headers.get(header) or "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("utf-8"), api_key.encode("utf-8")
        )

    def _hang_up(self) -> None:
        self.close_connection = True
        self._finish_record(None)

    def _finish_record(self, status: int | None) -> None:
        if self._record_seq is not None:
            self.server.state.store.finish_request(self._record_seq, status)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self._discard_body()
        self._responded = True
        # Recorded before answering, so a client that has its answer finds it in `requests()`.
        self._finish_record(status)
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(
        self,
        status: int,
        document: dict[str, Any],
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = json.dumps(document).encode("utf-8")
        self._send(status, payload, {"Content-Type": content_type, **(headers or {})})

    def _send_error(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, _error_document(status, detail), JSON_API, headers)

    def _send_text(self, status: int, message: str) -> None:
        self._send(status, message.encode("utf-8"), {"Content-Type": "text/plain; charset=utf-8"})
