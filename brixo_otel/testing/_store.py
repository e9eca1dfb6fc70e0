"""SQLite storage for everything the test server receives.

SQLite rather than lists in memory so that a dev server can keep its history in a file across
restarts and a test can open the same file from another process. One connection, shared by all
request threads and guarded by one lock: the volumes are tiny and this keeps every read
consistent with the writes before it.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from collections.abc import Iterable
from typing import Any, cast

from brixo_otel import attributes
from brixo_otel.testing._records import (
    ReceivedSignal,
    ReceivedSpan,
    RequestRecord,
    SignalTarget,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER,
    headers TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS signals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    target_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    occurred_at TEXT,
    user_message TEXT,
    idempotency_key TEXT UNIQUE,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS duplicate_signals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spans (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    resource_attributes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS known_ids (
    target TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (target, id)
);
"""

# Span attributes that name what a signal can rate, as Brixo learns ids from ingested traces.
_ID_ATTRIBUTES: tuple[tuple[str, SignalTarget], ...] = (
    (attributes.MESSAGE_ID, "message"),
    (attributes.SESSION_ID, "conversation"),
    (attributes.GEN_AI_CONVERSATION_ID, "conversation"),
)

# JSON has no bytes; OTLP attributes can hold them, so they travel tagged.
_BYTES_TAG = "$bytes"


class StoreClosedError(RuntimeError):
    """The server was stopped; what it held went with it."""


class Store:
    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(path, check_same_thread=False)
        # Every request commits; with WAL and NORMAL sync those commits skip the fsync, which
        # would otherwise cost milliseconds a request. A crash can lose the last few, never
        # corrupt the file, which is the right trade for a test server.
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._lock, self._conn:
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosedError("the BrixoTestServer is not running; start() it first")
        return self._conn

    # -- writes -----------------------------------------------------------------------------

    def begin_request(
        self, method: str, path: str, headers: dict[str, str], received_at: float
    ) -> int:
        with self._lock:
            conn = self._connection()
            with conn:
                cursor = conn.execute(
                    "INSERT INTO requests (method, path, status, headers, received_at)"
                    " VALUES (?, ?, NULL, ?, ?)",
                    (method, path, json.dumps(headers), received_at),
                )
            return cast(int, cursor.lastrowid)

    def finish_request(self, seq: int, status: int | None) -> None:
        with self._lock:
            conn = self._connection()
            with conn:
                conn.execute("UPDATE requests SET status = ? WHERE seq = ?", (status, seq))

    def add_signal(self, signal: ReceivedSignal) -> bool:
        """Store `signal`; False (and counted as a duplicate) when its idempotency key was seen."""
        with self._lock:
            conn = self._connection()
            with conn:
                try:
                    conn.execute(
                        "INSERT INTO signals (target, target_id, name, value, occurred_at,"
                        " user_message, idempotency_key, received_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            signal.target,
                            signal.target_id,
                            signal.name,
                            signal.value,
                            signal.occurred_at,
                            signal.user_message,
                            signal.idempotency_key,
                            signal.received_at,
                        ),
                    )
                except sqlite3.IntegrityError:
                    conn.execute(
                        "INSERT INTO duplicate_signals (idempotency_key, received_at)"
                        " VALUES (?, ?)",
                        (signal.idempotency_key, signal.received_at),
                    )
                    return False
            return True

    def add_spans(self, spans: Iterable[ReceivedSpan]) -> None:
        """Store spans and learn the message and conversation ids they carry, in one transaction."""
        span_rows = []
        id_rows: list[tuple[SignalTarget, str]] = []
        for span in spans:
            span_rows.append(
                (
                    span.trace_id,
                    span.span_id,
                    span.parent_span_id,
                    span.name,
                    _dump_attributes(span.attributes),
                    _dump_attributes(span.resource_attributes),
                )
            )
            if span.name == attributes.FEEDBACK_SPAN_NAME:
                continue  # feedback names what it rates; it does not make a message exist
            for key, target in _ID_ATTRIBUTES:
                value = span.attributes.get(key)
                if isinstance(value, str) and value:
                    id_rows.append((target, value))
        with self._lock:
            conn = self._connection()
            with conn:
                conn.executemany(
                    "INSERT INTO spans (trace_id, span_id, parent_span_id, name, attributes,"
                    " resource_attributes) VALUES (?, ?, ?, ?, ?, ?)",
                    span_rows,
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO known_ids (target, id) VALUES (?, ?)", id_rows
                )

    def register(self, target: SignalTarget, target_id: str) -> None:
        with self._lock:
            conn = self._connection()
            with conn:
                conn.execute(
                    "INSERT OR IGNORE INTO known_ids (target, id) VALUES (?, ?)",
                    (target, target_id),
                )

    # -- reads ------------------------------------------------------------------------------

    def _fetch(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection().execute(sql, params).fetchall()

    def knows(self, target: SignalTarget, target_id: str) -> bool:
        rows = self._fetch(
            "SELECT 1 FROM known_ids WHERE target = ? AND id = ?", (target, target_id)
        )
        return bool(rows)

    def known_ids(self, target: SignalTarget) -> set[str]:
        return {
            row[0] for row in self._fetch("SELECT id FROM known_ids WHERE target = ?", (target,))
        }

    def signals(self) -> list[ReceivedSignal]:
        rows = self._fetch(
            "SELECT target, target_id, name, value, occurred_at, user_message, idempotency_key,"
            " received_at FROM signals ORDER BY seq"
        )
        return [ReceivedSignal(*row) for row in rows]

    def signal_count(self) -> int:
        return int(self._fetch("SELECT COUNT(*) FROM signals")[0][0])

    def duplicate_count(self) -> int:
        return int(self._fetch("SELECT COUNT(*) FROM duplicate_signals")[0][0])

    def spans(self) -> list[ReceivedSpan]:
        rows = self._fetch(
            "SELECT trace_id, span_id, parent_span_id, name, attributes, resource_attributes"
            " FROM spans ORDER BY seq"
        )
        return [
            ReceivedSpan(
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=parent_span_id,
                name=name,
                attributes=_load_attributes(attrs),
                resource_attributes=_load_attributes(resource_attrs),
            )
            for trace_id, span_id, parent_span_id, name, attrs, resource_attrs in rows
        ]

    def requests(self) -> list[RequestRecord]:
        rows = self._fetch(
            "SELECT method, path, status, headers, received_at FROM requests ORDER BY seq"
        )
        return [
            RequestRecord(
                method=method,
                path=path,
                status=status,
                headers=json.loads(headers),
                received_at=received_at,
            )
            for method, path, status, headers, received_at in rows
        ]


def _encode_bytes(value: object) -> object:
    if isinstance(value, bytes):
        return {_BYTES_TAG: base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot store attribute value of type {type(value).__name__}")


def _decode_bytes(obj: dict[str, Any]) -> object:
    if len(obj) == 1 and isinstance(obj.get(_BYTES_TAG), str):
        return base64.b64decode(obj[_BYTES_TAG])
    return obj


def _dump_attributes(values: dict[str, Any]) -> str:
    return json.dumps(values, default=_encode_bytes)


def _load_attributes(text: str) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(text, object_hook=_decode_bytes))
