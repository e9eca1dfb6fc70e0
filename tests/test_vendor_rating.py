"""The vendor SDK's path can be rated: an interaction given a message id is a rated message.

The quickstart (examples/vendor_quickstart.py, with its message ids) runs as the vendor's users
run it, as a script, against the local Brixo server: its thumbs-up reaches the Signals API and
its feedback span lands in the interaction's trace. `Brixo.init`'s span filters are checked the
same way, with OpenInference, OpenLLMetry and the official OpenAI instrumentation all tracing
the real `openai` SDK against the fake OpenAI server. The rest runs in-process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import brixo_otel
from brixo_otel import Brixo
from brixo_otel import attributes as attrs
from brixo_otel.exporters import InMemorySignalExporter
from brixo_otel.testing import BrixoTestServer, SpanCapture
from tests.conftest import Local

ROOT = Path(__file__).resolve().parent.parent
SECRET = "vendor-rating-secret-0123456789abcdef"

pytestmark = pytest.mark.timeout(90)


def run_script(
    script: str | Path, server: BrixoTestServer, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a script as an app would, with the Brixo settings pointing at `server`."""
    if isinstance(script, str):
        path = tmp_path / "app.py"
        path.write_text(textwrap.dedent(script))
        script = path
    environment = {
        **os.environ,
        "BRIXO_API_KEY": "test-key",
        "BRIXO_OTLP_TRACES_ENDPOINT": server.traces_endpoint,
        "BRIXO_BASE_URL": server.url,
        "BRIXO_OUTBOX_PATH": str(tmp_path / "outbox.db"),
        "PYTHONPATH": str(ROOT),
        **env,
    }
    environment.pop("BRIXO_OTEL_RAISE_INTERNAL_ERRORS", None)
    result = subprocess.run(
        [sys.executable, str(script)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_the_quickstart_with_a_message_id_is_rated_and_linked(
    brixo_server: BrixoTestServer, tmp_path: Path
) -> None:
    result = run_script(ROOT / "examples" / "vendor_quickstart.py", brixo_server, tmp_path)
    assert "reset your password" in result.stdout
    assert "without a message id" not in result.stderr

    [signal] = brixo_server.wait_for_signals(1)
    assert (signal.target, signal.target_id, signal.value) == ("message", "msg_1001", "thumbs_up")
    spans = {span.name: span for span in brixo_server.spans()}
    interaction = spans["Handle support question"]
    assert interaction.attributes[attrs.MESSAGE_ID] == "msg_1001"
    assert interaction.attributes[attrs.SPAN_KIND] == "ROOT"
    feedback = spans[attrs.FEEDBACK_SPAN_NAME]
    assert feedback.trace_id == interaction.trace_id  # in the interaction's trace
    assert feedback.parent_span_id == interaction.span_id
    assert feedback.attributes[attrs.LINK_STATUS] == "linked"
    assert feedback.attributes[attrs.SIGNAL_VALUE] == "thumbs_up"
    # the streamed interaction bound its id from inside (set_message_id)
    assert spans["handle_streaming"].attributes[attrs.MESSAGE_ID] == "msg_1002"
    assert {"msg_1001", "msg_1002"} <= brixo_server.known_message_ids()


def test_set_message_id_inside_an_interaction_makes_it_the_rated_message(
    local: Local, capture: SpanCapture, signal_capture: InMemorySignalExporter
) -> None:
    local()
    tracer = capture.provider.get_tracer("app")

    @Brixo.interaction("support")
    def support() -> None:
        Brixo.begin_context(session_id="sess-1")
        with tracer.start_as_current_span("before"):
            pass
        with tracer.start_as_current_span("open-around"):
            brixo_otel.set_message_id("msg-42")  # e.g. the provider's response id
            # feedback clicked while the interaction still runs finds it
            brixo_otel.feedback("thumbs_down", message_id="msg-42")
        with tracer.start_as_current_span("after"):
            pass

    support()
    assert brixo_otel.flush(timeout=10)
    root = capture.one("support")
    recorded = root.attributes or {}
    assert recorded[attrs.MESSAGE_ID] == "msg-42"
    assert recorded[attrs.SPAN_KIND] == "ROOT"
    assert recorded[attrs.SESSION_ID] == "sess-1"
    assert attrs.MESSAGE_ID not in (capture.one("before").attributes or {})
    assert (capture.one("open-around").attributes or {})[attrs.MESSAGE_ID] == "msg-42"
    assert (capture.one("after").attributes or {})[attrs.MESSAGE_ID] == "msg-42"
    assert (capture.one("after").attributes or {})[attrs.SESSION_ID] == "sess-1"
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.parent is not None and feedback.parent.span_id == root.context.span_id
    assert (feedback.attributes or {})[attrs.LINK_STATUS] == "linked"
    [signal] = signal_capture.signals()
    assert (signal.message_id, signal.value) == ("msg-42", "thumbs_down")


async def test_begin_and_update_context_take_the_message_id(
    local: Local, capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    local(exporters=None, link_secret=SECRET)
    links: list[str] = []

    @Brixo.interaction("begun")
    def begun() -> None:
        Brixo.begin_context(user={"id": "u"}, message_id="msg-begun")
        links.append(brixo_otel.link_token())  # the interaction is the current message

    @Brixo.interaction("updated")
    async def updated() -> AsyncIterator[str]:
        Brixo.begin_context(user={"id": "u"})
        yield "one"
        Brixo.update_context(message_id=7)  # type: ignore[arg-type]  # ids from a database
        yield "two"

    @Brixo.interaction("nested")
    def nested() -> None:
        @brixo_otel.message(name="inner")
        def inner() -> None:
            brixo_otel.set_message_id("msg-inner")  # the innermost message is the current one
            Brixo.begin_context(message_id="msg-outer")  # the interaction's own, always

        inner()

    @Brixo.interaction("wrong")
    def wrong() -> None:
        Brixo.begin_context(message_id="")

    begun()
    assert [part async for part in updated()] == ["one", "two"]
    nested()
    wrong()
    assert (capture.one("begun").attributes or {})[attrs.MESSAGE_ID] == "msg-begun"
    assert (capture.one("updated").attributes or {})[attrs.MESSAGE_ID] == "7"
    assert (capture.one("nested").attributes or {})[attrs.MESSAGE_ID] == "msg-outer"
    assert (capture.one("inner").attributes or {})[attrs.MESSAGE_ID] == "msg-inner"
    assert attrs.MESSAGE_ID not in (capture.one("wrong").attributes or {})
    assert "Brixo.begin_context(message_id=...) takes a non-empty string" in caplog.text
    brixo_otel.feedback("thumbs_up", link=links[0])
    assert brixo_otel.flush(timeout=10)
    feedback = capture.one(attrs.FEEDBACK_SPAN_NAME)
    assert feedback.parent is not None
    assert feedback.parent.span_id == capture.one("begun").context.span_id


def test_an_interaction_without_a_message_id_is_warned_about_when_rating_is_expected(
    local: Local, capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    local(exporters=None)
    caplog.clear()

    @Brixo.interaction("unrated")
    def unrated() -> None:
        Brixo.begin_context(account={"id": "a", "name": "A"}, user={"id": "u", "name": "U"})
        Brixo.begin_context(session_id="s")

    @Brixo.interaction("rated")
    def rated() -> None:
        brixo_otel.set_message_id("msg-rated")

    unrated()  # nothing says rating is expected yet: quiet
    assert "without a message id" not in caplog.text
    rated()  # interactions of this app are rated: one without an id is a mistake to show
    unrated()
    unrated()
    warned = [r.getMessage() for r in caplog.records if "without a message id" in r.getMessage()]
    assert warned == [
        "brixo_otel: interaction 'unrated' ended without a message id, so feedback cannot rate "
        "it (its feedback would find no message); pass Brixo.begin_context(message_id=...) or "
        "call brixo_otel.set_message_id(...) inside it"
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.getMessage() in warned)


def test_the_warning_reaches_stderr_without_any_logging_set_up(
    brixo_server: BrixoTestServer, tmp_path: Path
) -> None:
    result = run_script(
        f"""
        from brixo_otel import Brixo

        Brixo.init(app_name="a", environment="e", link_secret={SECRET!r})

        @Brixo.interaction("forgot the id")
        def forgot() -> None:
            Brixo.begin_context(session_id="s")

        @Brixo.interaction("has its id")
        def has() -> None:
            Brixo.begin_context(session_id="s", message_id="msg-1")

        forgot()
        has()
        forgot()
        """,
        brixo_server,
        tmp_path,
    )
    lines = [line for line in result.stderr.splitlines() if "without a message id" in line]
    assert lines == [
        "brixo_otel: interaction 'forgot the id' ended without a message id, so feedback cannot "
        "rate it (its feedback would find no message); pass Brixo.begin_context(message_id=...) "
        "or call brixo_otel.set_message_id(...) inside it"
    ], result.stderr
    # the app's own logging set-up takes it instead, as any log record
    result = run_script(
        f"""
        import logging
        logging.basicConfig(level=logging.ERROR)  # the app wants errors only
        from brixo_otel import Brixo

        Brixo.init(app_name="a", environment="e", link_secret={SECRET!r})

        @Brixo.interaction("forgot the id")
        def forgot() -> None:
            pass

        forgot()
        """,
        brixo_server,
        tmp_path,
    )
    assert "without a message id" not in result.stderr


FILTER_APP = """
import sys
import warnings

import httpx
from openai import OpenAI
from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInference
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as Official

import brixo_otel
from brixo_otel import Brixo
from tests._fake_openai import FakeOpenAI

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetry

keep = sys.argv[1] == "keep"
Brixo.init(
    app_name="filters",
    environment="test",
    filter_openinference_spans=not keep,
    filter_traceloop_spans=not keep,
)
for instrumentor in (OpenInference(), Official(), OpenLLMetry(), HTTPXClientInstrumentor()):
    instrumentor.instrument()


@Brixo.interaction("ask")
def ask(base_url: str) -> str:
    Brixo.begin_context(message_id="msg-filters")
    completion = OpenAI(base_url=base_url, api_key="test").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "secret prompt"}]
    )
    with httpx.Client() as plain:  # an official `opentelemetry.instrumentation.*` scope
        plain.post(base_url + "/chat/completions", json={"model": "m", "messages": []})
    return completion.choices[0].message.content or ""


with FakeOpenAI() as fake:
    print(ask(fake.base_url))
brixo_otel.flush(timeout=10)
"""


@pytest.mark.parametrize("mode", ["filter", "keep"])
def test_init_filters_openinference_and_traceloop_spans_out_of_the_brixo_export(
    mode: str, brixo_server: BrixoTestServer, tmp_path: Path
) -> None:
    (tmp_path / "filter_app.py").write_text(FILTER_APP)
    script = tmp_path / "filter_app.py"
    result = subprocess.run(
        [sys.executable, str(script), mode],
        env={
            **{k: v for k, v in os.environ.items() if k != "BRIXO_OTEL_RAISE_INTERNAL_ERRORS"},
            "BRIXO_API_KEY": "test-key",
            "BRIXO_OTLP_TRACES_ENDPOINT": brixo_server.traces_endpoint,
            "BRIXO_BASE_URL": brixo_server.url,
            "BRIXO_OUTBOX_PATH": str(tmp_path / "outbox.db"),
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    spans = brixo_server.spans()
    scopes = {span.name: span for span in spans}
    by_kind = {
        "interaction": [s for s in spans if s.name == "ask"],
        "openinference": [s for s in spans if "openinference.span.kind" in s.attributes],
        "openllmetry": [s for s in spans if s.name == "openai.chat"],
        "official": [s for s in spans if s.name == "chat gpt-4o-mini"],
        "httpx": [s for s in spans if s.name.startswith("POST")],
    }
    assert len(by_kind["interaction"]) == 1, sorted(scopes)
    # the official instrumentations (OpenAI's, httpx's) always reach Brixo
    assert len(by_kind["official"]) == 1, sorted(scopes)
    assert by_kind["httpx"], sorted(scopes)
    if mode == "filter":
        assert by_kind["openinference"] == [] and by_kind["openllmetry"] == [], sorted(scopes)
        assert not any("secret prompt" in str(s.attributes) for s in spans)  # no prompt content
    else:
        assert len(by_kind["openinference"]) == 1 and len(by_kind["openllmetry"]) == 1
    interaction = by_kind["interaction"][0]
    assert interaction.attributes[attrs.MESSAGE_ID] == "msg-filters"
    assert by_kind["official"][0].attributes[attrs.MESSAGE_ID] == "msg-filters"


def test_the_stand_in_of_a_sync_generator_interaction_is_rateable_too(
    local: Local, capture: SpanCapture
) -> None:
    local(exporters=None)

    @Brixo.interaction("stream")
    def stream() -> Iterator[str]:
        yield "a"
        brixo_otel.set_message_id("msg-stream")
        yield "b"

    assert list(stream()) == ["a", "b"]
    assert (capture.one("stream").attributes or {})[attrs.MESSAGE_ID] == "msg-stream"
