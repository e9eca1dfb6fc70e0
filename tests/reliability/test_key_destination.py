"""Issue 13, defect 9: the Brixo key travels in `Brixo-Auth` only to Brixo's own hosts, to
loopback, or where the app says so itself (`traces_headers`); a `traces_endpoint` on any other
host (a collector, Phoenix) never sees it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import brixo_otel
from brixo_otel._instrument._trace_export import key_may_go_to
from brixo_otel.testing import BrixoTestServer, SpanCapture

pytestmark = pytest.mark.timeout(60)

KEY = "bxk_QWERTYUIOPzxcvbnmLKJHGFDSAqwertyuiop"


@pytest.mark.parametrize(
    ("endpoint", "allowed"),
    [
        ("https://otel.brixo.com:4318/v1/traces", True),
        ("https://brixo.com/v1/traces", True),
        ("https://EU.Brixo.COM./v1/traces", True),
        ("http://127.0.0.1:4318/v1/traces", True),
        ("http://localhost:4318/v1/traces", True),
        ("http://[::1]:4318/v1/traces", True),
        ("https://collector.internal:4318/v1/traces", False),
        ("https://phoenix.example.com/v1/traces", False),
        ("https://brixo.com.evil.example/v1/traces", False),
        ("https://notbrixo.com/v1/traces", False),
        ("https://brixo.com@evil.example/v1/traces", False),
        (f"http://{socket.gethostname()}:4318/v1/traces", False),
    ],
)
def test_where_the_key_may_go(endpoint: str, allowed: bool) -> None:
    assert key_may_go_to(endpoint) is allowed


def this_host() -> tuple[str, str]:
    """A name of this machine that is neither `localhost` nor an address, and what it resolves
    to (whatever that is: the test server listens there)."""
    name = socket.gethostname()
    assert name != "localhost" and not name.replace(".", "").isdigit()
    return name, socket.gethostbyname(name)


@pytest.fixture
def collector() -> Iterator[tuple[BrixoTestServer, str]]:
    name, address = this_host()
    with BrixoTestServer(api_key=None, host=address) as server:
        yield server, name


def traces_headers_seen(server: BrixoTestServer) -> list[dict[str, str]]:
    return [r.headers for r in server.requests() if r.path == "/v1/traces"]


def export_one_span(**options: object) -> None:
    capture = SpanCapture()
    brixo_otel.configure(
        api_key=KEY,
        exporters=[],
        outbox_path=":memory:",
        tracer_provider=capture.provider,
        **options,
    )
    with brixo_otel.message_span(message_id="m-1"):
        pass
    assert brixo_otel.flush(timeout=10)
    brixo_otel.shutdown(timeout=2)


def test_a_collector_on_another_host_never_receives_the_key(
    collector: tuple[BrixoTestServer, str],
) -> None:
    server, name = collector
    export_one_span(
        traces_endpoint=f"http://{name}:{server.url.rsplit(':', 1)[1]}/v1/traces",
        allow_insecure_http=True,
    )
    [headers] = traces_headers_seen(server)
    assert "brixo-auth" not in headers
    assert not any(KEY in value for value in headers.values())


def test_the_app_can_send_the_key_there_explicitly(collector: tuple[BrixoTestServer, str]) -> None:
    server, name = collector
    export_one_span(
        traces_endpoint=f"http://{name}:{server.url.rsplit(':', 1)[1]}/v1/traces",
        allow_insecure_http=True,
        traces_headers={"Brixo-Auth": f"Bearer {KEY}"},
    )
    [headers] = traces_headers_seen(server)
    assert headers["brixo-auth"] == f"Bearer {KEY}"


def test_loopback_receives_the_key() -> None:
    with BrixoTestServer(api_key=KEY) as server:
        export_one_span(traces_endpoint=server.traces_endpoint)
        [headers] = traces_headers_seen(server)
        assert headers["brixo-auth"] == f"Bearer {KEY}"
        assert server.spans()  # and Brixo's own check of it passed
