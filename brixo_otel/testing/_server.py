"""`BrixoTestServer`: a local stand-in for the Brixo API, for tests, demos and benchmarks.

It answers the Signals API as the spec describes (same status codes, same JSON:API errors), learns
message and conversation ids from the traces it ingests over OTLP as Brixo does, and can be told
to fail, drop, hang or slow down, so a client's retry and durability paths can be exercised over
real sockets rather than mocks.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
import threading
import time
from types import TracebackType
from typing import Any

from brixo_otel.testing._faults import Fault, FaultPlan
from brixo_otel.testing._http import LoopbackHTTPServer, ServerState
from brixo_otel.testing._records import ReceivedSignal, ReceivedSpan, RequestRecord
from brixo_otel.testing._store import Store, StoreClosedError

#: How long `stop()` waits for requests in flight before leaving them to their daemon threads.
_STOP_GRACE_SECONDS = 5.0


class BrixoTestServer:
    """A Brixo-compatible HTTP server on loopback, running in a background thread.

    Use it as a context manager, or `start()` and `stop()` it. What it received is read back with
    `signals()`, `spans()` and `requests()` while it runs: stopping it releases its storage (and,
    without `db_path`, deletes it).
    """

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str | None = None,
        max_body_bytes: int = 64 * 1024,
        require_known_ids: bool = True,
    ) -> None:
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise TypeError("api_key must be a non-empty str or None")
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise TypeError("max_body_bytes must be an int")
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must not be negative")
        self._api_key = api_key
        self._host = host
        self._port = port
        self._db_path = db_path
        self._max_body_bytes = max_body_bytes
        self._require_known_ids = require_known_ids
        self._faults = FaultPlan()
        self._lifecycle = threading.Lock()
        self._httpd: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None

    def __repr__(self) -> str:
        # The API key stays out of reprs, as it stays out of logs.
        where = self.url if self._httpd is not None else "stopped"
        return f"<BrixoTestServer {where}>"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> BrixoTestServer:
        with self._lifecycle:
            if self._httpd is not None:
                raise RuntimeError("BrixoTestServer is already running")
            if self._db_path is None:
                self._temp_dir = tempfile.TemporaryDirectory(prefix="brixo-test-server-")
                path = os.path.join(self._temp_dir.name, "brixo.sqlite3")
            else:
                path = self._db_path
            try:
                self._store = Store(path)
                state = ServerState(
                    store=self._store,
                    faults=self._faults,
                    api_key=self._api_key,
                    max_body_bytes=self._max_body_bytes,
                    require_known_ids=self._require_known_ids,
                )
                self._httpd = LoopbackHTTPServer((self._host, self._port), state)
            except BaseException:
                self._release_storage()
                raise
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                # How often serve_forever looks for a shutdown request: stop() waits up to this.
                kwargs={"poll_interval": 0.01},
                name=f"BrixoTestServer:{self._httpd.server_port}",
                daemon=True,
            )
            self._thread.start()
            return self

    def stop(self) -> None:
        """Stop serving, end open connections and release storage; safe to call twice."""
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            if httpd is None or thread is None:
                return
            httpd.state.stopping.set()
            httpd.shutdown()
            httpd.server_close()
            httpd.close_connections(timeout=_STOP_GRACE_SECONDS)
            thread.join(timeout=_STOP_GRACE_SECONDS)
            self._httpd = self._thread = None
            self._release_storage()

    def _release_storage(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None

    def __enter__(self) -> BrixoTestServer:
        if self._httpd is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where it is ------------------------------------------------------------------------

    @property
    def api_key(self) -> str | None:
        return self._api_key

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``; the port is known only once started."""
        httpd = self._httpd
        if httpd is None:
            raise RuntimeError("BrixoTestServer is not running; start() it first")
        host = httpd.server_name
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{httpd.server_port}"

    @property
    def traces_endpoint(self) -> str:
        """Where an OTLP/HTTP span exporter should send (``OTLPSpanExporter(endpoint=...)``)."""
        return self.url + "/v1/traces"

    # -- what it holds ----------------------------------------------------------------------

    def _require_store(self) -> Store:
        store = self._store
        if store is None:
            raise StoreClosedError("BrixoTestServer is not running; start() it first")
        return store

    def signals(self) -> list[ReceivedSignal]:
        """Stored signals in arrival order (idempotent repeats are not stored twice)."""
        return self._require_store().signals()

    def spans(self) -> list[ReceivedSpan]:
        return self._require_store().spans()

    def requests(self) -> list[RequestRecord]:
        """Every HTTP request seen, on any path, in arrival order, whatever it was answered."""
        return self._require_store().requests()

    def duplicate_count(self) -> int:
        """How many signals repeated an already stored `Idempotency-Key` and were not stored."""
        return self._require_store().duplicate_count()

    def known_message_ids(self) -> set[str]:
        return self._require_store().known_ids("message")

    def known_conversation_ids(self) -> set[str]:
        return self._require_store().known_ids("conversation")

    def register_message(self, message_id: str) -> None:
        """Make `message_id` known without ingesting a span for it, so signals to it get 204."""
        self._require_store().register("message", _check_id(message_id))

    def register_conversation(self, conversation_id: str) -> None:
        self._require_store().register("conversation", _check_id(conversation_id))

    def wait_for_signals(self, count: int, timeout: float = 10.0) -> list[ReceivedSignal]:
        """Signals once at least `count` are stored, or whatever is stored when `timeout` ends.

        Clients deliver from background threads, so tests wait on the outcome rather than sleep.
        """
        store = self._require_store()
        deadline = time.monotonic() + timeout
        while store.signal_count() < count and time.monotonic() < deadline:
            time.sleep(min(0.01, max(deadline - time.monotonic(), 0.0)))
        return store.signals()

    # -- fault knobs ------------------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        retry_after: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `count` signal requests with `status` (JSON:API error, or `body`)."""
        self._faults.fail_next(count, status, retry_after=retry_after, body=body)

    def drop_next(self, count: int) -> None:
        """Read the next `count` signal requests, then close the connection without answering."""
        self._faults.drop_next(count)

    def hang_next(self, count: int, seconds: float) -> None:
        """Hold the next `count` signal requests for `seconds`, then answer them normally."""
        self._faults.hang_next(count, seconds)

    def drop_after_store_next(self, count: int) -> None:
        """Store the next `count` signals, then close the connection without answering."""
        self._faults.drop_after_store_next(count)

    def trickle_next(self, count: int, interval: float) -> None:
        """Store the next `count` signals, then send each answer a byte every `interval` s."""
        self._faults.trickle_next(count, interval)

    def fault_randomly(self, rate: float, fault: Fault, *, seed: int | None = None) -> None:
        """Give this share (0 to 1) of signal requests `fault` (a type of
        `brixo_otel.testing._faults`: `Drop`, `Hang`, `Fail`, `DropAfterStore`, `Trickle`)."""
        self._faults.fault_randomly(rate, fault, seed=seed)

    def set_latency(self, seconds: float) -> None:
        """Delay every signal answer by `seconds` (0 turns it off)."""
        self._faults.set_latency(seconds)

    def fail_randomly(self, rate: float, *, status: int = 503, seed: int | None = None) -> None:
        """Fail this share (0 to 1) of signal requests with `status`, before anything is stored."""
        self._faults.fail_randomly(rate, status=status, seed=seed)

    def reset_faults(self) -> None:
        """Forget every scripted fault and the latency."""
        self._faults.reset()


def _check_id(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"an id must be a non-empty str, got {value!r}")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_dev_server(
    host: str = "127.0.0.1",
    port: int = 8787,
    api_key: str | None = None,
    db_path: str | None = None,
    *,
    require_known_ids: bool = True,
) -> None:
    """Serve until interrupted (Ctrl-C), printing where; the `brixo-otel dev-server` command.

    Without `api_key` any client is accepted, which is why a host other than loopback draws a
    warning: anyone who can reach it could read and write what it holds.
    """
    server = BrixoTestServer(
        api_key=api_key,
        host=host,
        port=port,
        db_path=db_path,
        require_known_ids=require_known_ids,
    ).start()
    try:
        if not _is_loopback(host):
            print(f"warning: serving on {host}, which is not loopback", flush=True)
        print(f"Brixo dev server on {server.url}", flush=True)
        print(f"  signals: {server.url}/v1/messages/{{id}}/signals", flush=True)
        print(f"  traces:  {server.traces_endpoint}", flush=True)
        print(f"  storage: {db_path or 'temporary (deleted on exit)'}", flush=True)
        print(f"  auth:    {'Bearer API key required' if api_key else 'none'}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
