"""Decoding OTLP/HTTP trace exports (protobuf and JSON) into `ReceivedSpan`s.

JSON is walked by hand rather than through `google.protobuf.json_format`: OTLP/JSON departs from
the canonical protobuf JSON mapping (trace and span ids are hex, not base64), and a direct walk
turns every departure into a clear 400 instead of a confusing one.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from brixo_otel.testing._records import ReceivedSpan


class OtlpDecodeError(ValueError):
    """The export cannot be read; the message says why."""


class OtlpTooLargeError(ValueError):
    """The export decompresses to more than the receiver accepts."""


# Content-Encoding → zlib window bits: gzip framing, or zlib framing (what HTTP calls deflate).
CONTENT_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Decompress a body sent with a `CONTENT_ENCODINGS` encoding, never past `limit` bytes."""
    decompressor = zlib.decompressobj(CONTENT_ENCODINGS[encoding])
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpDecodeError(f"{encoding} body is corrupt: {exc}") from None
    if len(data) > limit:
        raise OtlpTooLargeError(f"decompressed body is over {limit} bytes")
    if not decompressor.eof:
        raise OtlpDecodeError(f"{encoding} body is truncated")
    return data


# -- protobuf ---------------------------------------------------------------------------------


def decode_protobuf(body: bytes) -> list[ReceivedSpan]:
    try:
        request = ExportTraceServiceRequest.FromString(body)
    # protobuf's DecodeError has no type stubs here; any failure to parse is the client's.
    except Exception as exc:
        raise OtlpDecodeError(f"body is not an ExportTraceServiceRequest: {exc}") from None
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource_attributes = _pb_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=_pb_id(span.trace_id, 16, "traceId"),
                        span_id=_pb_id(span.span_id, 8, "spanId"),
                        parent_span_id=(
                            _pb_id(span.parent_span_id, 8, "parentSpanId")
                            if span.parent_span_id
                            else None
                        ),
                        name=span.name,
                        attributes=_pb_attributes(span.attributes),
                        resource_attributes=dict(resource_attributes),
                    )
                )
    return spans


def _pb_id(raw: bytes, size: int, field: str) -> str:
    if len(raw) != size:
        raise OtlpDecodeError(f"{field} must be {size} bytes, got {len(raw)}")
    return raw.hex()


def _pb_attributes(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in key_values}


def _pb_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "array_value":
        return [_pb_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    return None


# -- JSON -------------------------------------------------------------------------------------


def decode_json(body: bytes) -> list[ReceivedSpan]:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise OtlpDecodeError("body is not valid JSON") from None
    spans: list[ReceivedSpan] = []
    for resource_spans in _objects(document, "resourceSpans", "resource_spans"):
        resource = _object(resource_spans, "resource")
        resource_attributes = _json_attributes(resource)
        for scope_spans in _objects(resource_spans, "scopeSpans", "scope_spans"):
            for span in _objects(scope_spans, "spans"):
                parent = _field(span, "parentSpanId", "parent_span_id")
                name = _field(span, "name")
                if not isinstance(name, (str, type(None))):
                    raise OtlpDecodeError("span name must be a string")
                spans.append(
                    ReceivedSpan(
                        trace_id=_json_id(_field(span, "traceId", "trace_id"), 16, "traceId"),
                        span_id=_json_id(_field(span, "spanId", "span_id"), 8, "spanId"),
                        parent_span_id=_json_id(parent, 8, "parentSpanId") if parent else None,
                        name=name or "",
                        attributes=_json_attributes(span),
                        resource_attributes=dict(resource_attributes),
                    )
                )
    return spans


def _field(obj: dict[str, Any], *names: str) -> Any:
    """A field by its lowerCamelCase name, or by the proto name some encoders still use."""
    for name in names:
        if name in obj:
            return obj[name]
    return None


def _object(obj: dict[str, Any], *names: str) -> dict[str, Any]:
    value = _field(obj, *names)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OtlpDecodeError(f"{names[0]} must be an object")
    return value


def _objects(obj: object, *names: str) -> list[dict[str, Any]]:
    if not isinstance(obj, dict):
        raise OtlpDecodeError("expected a JSON object")
    value = _field(obj, *names)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise OtlpDecodeError(f"{names[0]} must be a list of objects")
    return value


def _json_id(value: object, size: int, field: str) -> str:
    if not isinstance(value, str):
        raise OtlpDecodeError(f"{field} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise OtlpDecodeError(f"{field} must be hex, got {value!r}") from None
    if len(raw) != size:
        raise OtlpDecodeError(f"{field} must be {size * 2} hex digits, got {value!r}")
    return raw.hex()


def _json_attributes(obj: dict[str, Any], field: str = "attributes") -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key_value in _objects(obj, field):
        key = key_value.get("key")
        if not isinstance(key, str):
            raise OtlpDecodeError("attribute key must be a string")
        attributes[key] = _json_value(_object(key_value, "value"))
    return attributes


def _json_value(value: dict[str, Any]) -> Any:
    for kind, convert in _JSON_VALUE_KINDS:
        raw = _field(value, *kind)
        if raw is not None:
            return convert(raw)
    return None


def _string(raw: object) -> str:
    if not isinstance(raw, str):
        raise OtlpDecodeError("stringValue must be a string")
    return raw


def _bool(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise OtlpDecodeError("boolValue must be a boolean")
    return raw


def _int(raw: object) -> int:
    # 64-bit integers travel as JSON strings; plain numbers are accepted too.
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            pass
    raise OtlpDecodeError(f"intValue must be an integer, got {raw!r}")


def _double(raw: object) -> float:
    # Non-finite doubles travel as the strings "NaN", "Infinity" and "-Infinity".
    if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
        try:
            return float(raw)
        except ValueError:
            pass
    raise OtlpDecodeError(f"doubleValue must be a number, got {raw!r}")


def _bytes(raw: object) -> bytes:
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error:
            pass
    raise OtlpDecodeError("bytesValue must be a base64 string")


def _array(raw: object) -> list[Any]:
    if not isinstance(raw, dict):
        raise OtlpDecodeError("arrayValue must be an object")
    return [_json_value(item) for item in _objects(raw, "values")]


def _kvlist(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise OtlpDecodeError("kvlistValue must be an object")
    return _json_attributes(raw, "values")


_JSON_VALUE_KINDS: tuple[tuple[tuple[str, str], Callable[[object], Any]], ...] = (
    (("stringValue", "string_value"), _string),
    (("boolValue", "bool_value"), _bool),
    (("intValue", "int_value"), _int),
    (("doubleValue", "double_value"), _double),
    (("bytesValue", "bytes_value"), _bytes),
    (("arrayValue", "array_value"), _array),
    (("kvlistValue", "kvlist_value"), _kvlist),
)
