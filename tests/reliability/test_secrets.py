"""Issue 13, defect 6, and the secrets part of the suite: a key echoed by a server at the point
where a reason is cut to length is scrubbed before the cut, and at DEBUG no key, password or
`Authorization` header shows up in a log record, a span, a repr, an exception, the outbox's
bytes, a dead letter or the CLI's output."""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import brixo_otel
from brixo_otel import ConfigurationError
from brixo_otel._signal import RatedSpan, Signal, validate
from brixo_otel.exporters import (
    BrixoSignalExporter,
    DeliveryStatus,
    LangfuseExporter,
    MLflowExporter,
    PhoenixExporter,
    SignalExporter,
)
from brixo_otel.exporters._http import MAX_DETAIL_CHARS
from brixo_otel.testing import BrixoTestServer, SpanCapture
from tests._contract.langfuse import LangfuseContractServer
from tests._delivery import dead_reasons
from tests.reliability._harness import FAST, child_env

pytestmark = pytest.mark.timeout(60)

#: Letters no UUID or hex id holds, so a stretch of them in any output is a leak, not chance.
KEY = "bxk_QWERTYUIOPzxcvbnmLKJHGFDSAqwertyuiop"
PASSWORD = "lfsk_MNBVCXZpoiuytrewqASDFGHJKLmnbvcxz"
INDEX_PASSWORD = "rdpw_ZXCVBNMasdfghjklQWERTYUIOPzxcvbnm"
SECRETS = {"api key": KEY, "secret key": PASSWORD, "index password": INDEX_PASSWORD}
#: The shortest stretch of a secret that counts as a leak (the campaign saw 32 of 34 characters).
WINDOW = 6


def leaks(text: str) -> list[str]:
    """Which secrets `text` shows, whole or any stretch of `WINDOW` characters of one."""
    found = []
    for name, secret in SECRETS.items():
        if any(secret[i : i + WINDOW] in text for i in range(len(secret) - WINDOW + 1)):
            found.append(name)
    if _AUTHORIZATION.search(text):
        found.append("an Authorization header")
    return found


#: An `Authorization` header with its credentials (a scrubbed one says "[redacted]").
_AUTHORIZATION = re.compile(
    r"(authorization|brixo-auth)['\"]?\s*[:=,]\s*['\"]?(bearer|basic)\s+(?!\[redacted\])\S",
    re.IGNORECASE,
)


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "brixo_otel._cli", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr


@pytest.fixture
def server() -> Iterator[BrixoTestServer]:
    with BrixoTestServer(api_key=KEY, require_known_ids=False) as running:
        yield running


def test_a_key_echoed_across_the_cut_is_scrubbed_before_the_reason_is_cut(
    server: BrixoTestServer, tmp_path: Path
) -> None:
    # The key starts just before the 300th character of the detail: cutting first would keep
    # its first characters, and a scrub afterwards no longer recognises them.
    detail = "x" * (MAX_DETAIL_CHARS - 8) + KEY + " was not accepted"
    server.fail_next(1, 400, body={"errors": [{"status": "400", "detail": detail}]})
    errors: list[str] = []
    outbox = tmp_path / "o.db"
    brixo_otel.configure(
        exporters=[BrixoSignalExporter(api_key=KEY, base_url=server.url)],
        outbox_path=outbox,
        traces_endpoint="none",
        tracer_provider=SpanCapture().provider,
        retry_policy=FAST,
        on_error=lambda signal, destination, reason: errors.append(reason),
    )
    brixo_otel.feedback("thumbs_down", message_id="echoed")
    assert brixo_otel.flush(timeout=10)
    [reason] = dead_reasons(outbox)
    assert (
        reason.startswith("HTTP 400: xxx") and len(reason) <= len("HTTP 400: ") + MAX_DETAIL_CHARS
    )
    assert leaks(reason) == []
    assert [leaks(error) for error in errors if "HTTP 400" in error] == [[]]
    brixo_otel.shutdown(timeout=2)
    shown = cli("outbox", "dead", "--path", str(outbox))
    assert "HTTP 400" in shown and leaks(shown) == []


def test_no_secret_shows_anywhere_at_debug(
    server: BrixoTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx, httpcore, OpenTelemetry's
    capture = SpanCapture()
    outbox = tmp_path / "o.db"
    # Answers that echo the key back (as header and as text), then a refused key.
    echo = f"key {KEY} in Authorization: Bearer {KEY}"
    server.fail_next(1, 400, body={"errors": [{"status": "400", "detail": echo}]})
    server.fail_next(1, 503, body={"errors": [{"status": "503", "detail": echo}]})
    exporters = [
        BrixoSignalExporter(api_key=KEY, base_url=server.url),
        # A destination with a secret of its own, pointed where it only gets errors back.
        LangfuseExporter("pk-lf-public", PASSWORD, base_url=server.url + "/langfuse"),
    ]
    client = brixo_otel.configure(
        api_key=KEY,
        exporters=exporters,
        outbox_path=outbox,
        traces_endpoint=server.traces_endpoint,  # loopback: Brixo-Auth goes there
        tracer_provider=capture.provider,
        span_index=f"redis://:{INDEX_PASSWORD}@127.0.0.1:1/0",  # refused: errors get logged
        retry_policy=FAST,
    )
    with brixo_otel.message_span(message_id="rated"):
        pass
    for n in range(3):
        brixo_otel.feedback("thumbs_down", message_id=f"m-{n}", user_message=f"no {n}")
    brixo_otel.flush(timeout=5)
    server.fail_next(10, 401)
    brixo_otel.feedback("thumbs_up", message_id="after-refusal")
    brixo_otel.flush(timeout=2)

    seen: dict[str, str] = {}
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for n, record in enumerate(caplog.records):
        seen[f"log record {n} ({record.name})"] = formatter.format(record)
    for span in capture.spans():
        seen[f"span {span.name}"] = repr(
            (
                span.attributes,
                [(e.name, e.attributes) for e in span.events],
                span.resource.attributes,
            )
        )
    seen["client repr"] = repr(client)
    seen["settings repr"] = repr(client.settings)
    for exporter in exporters:
        seen[f"{exporter.name} repr"] = repr(exporter)
    for name, make in {
        "a key pasted with a space": lambda: BrixoSignalExporter(api_key=f"{KEY[:12]} {KEY[12:]}"),
        "a URL with a password": lambda: BrixoSignalExporter(
            api_key=KEY, base_url=f"https://user:{PASSWORD}@api.brixo.com"
        ),
        "a Langfuse URL with a password": lambda: LangfuseExporter(
            "pk", PASSWORD, base_url=f"https://u:{PASSWORD}@cloud.langfuse.com"
        ),
    }.items():
        with pytest.raises(ConfigurationError) as refused:
            make()
        seen[f"the exception for {name}"] = f"{refused.value!r} {refused.value}"
    seen["dead letters"] = repr(dead_reasons(outbox))
    brixo_otel.shutdown(timeout=2)
    for file in tmp_path.glob("o.db*"):
        seen[f"the outbox's bytes ({file.name})"] = file.read_bytes().decode("latin-1")
    seen["outbox dead"] = cli("outbox", "dead", "--path", str(outbox))
    seen["outbox status"] = cli("outbox", "status", "--path", str(outbox))

    assert any("HTTP 400" in text for text in seen.values())  # the echo did come back
    assert sum(1 for name in seen if name.startswith("log record")) > 20
    found = {name: leaks(text) for name, text in seen.items() if leaks(text)}
    assert found == {}


def _rating() -> Signal:
    signal = validate("thumbs_down", message_id="echoed")
    return dataclasses.replace(signal, rated=RatedSpan(1, 2, {}), link_status="linked")


@pytest.mark.parametrize("destination", ["phoenix", "mlflow", "langfuse"])
def test_span_addressed_exporters_scrub_an_echoed_key_before_the_cut(destination: str) -> None:
    """Phoenix, MLflow and Langfuse share one base: a key (or Langfuse's encoded key pair)
    echoed at the point where a reason is cut is scrubbed before the cut, as for Brixo."""
    # Any loopback server that answers with a chosen error will do: its faults answer every
    # path, before routing.
    with LangfuseContractServer("pk-lf-echo", PASSWORD) as server:
        exporter: SignalExporter
        if destination == "phoenix":
            exporter = PhoenixExporter(server.url, api_key=KEY)
            echoed = [KEY]
        elif destination == "mlflow":
            exporter = MLflowExporter(server.url, token=KEY)
            echoed = [KEY]
        else:
            exporter = LangfuseExporter("pk-lf-echo", PASSWORD, base_url=server.url)
            echoed = [PASSWORD, base64.b64encode(f"pk-lf-echo:{PASSWORD}".encode()).decode()]
        try:
            for secret in echoed:
                detail = "x" * (MAX_DETAIL_CHARS - 8) + secret + " was not accepted"
                server.fail_next(1, 400, body={"message": detail})
                result = exporter.export(_rating())
                assert result.status is DeliveryStatus.PERMANENT, result
                assert result.reason.startswith("HTTP 400: xxx"), result.reason
                assert secret[:WINDOW] not in result.reason and leaks(result.reason) == []
        finally:
            exporter.shutdown()
