"""The pytest plugin, run inside throwaway pytest sessions as a user's test suite would run it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

# Inner sessions turn warnings into errors too, so an unclosed socket or provider fails them.
# Unrelated plugins are switched off there: unconfigured, pytest-asyncio warns, and hypothesis's
# plugin re-imports hypothesis (about a second) in every inner session.
STRICT = (
    "-W",
    "error",
    "-p",
    "no:cacheprovider",
    "-p",
    "no:asyncio",
    "-p",
    "no:hypothesispytest",
)


def test_fixtures_load_from_the_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", *STRICT)

    result.stdout.fnmatch_lines(
        [
            "*brixo_server*",
            "*A running local Brixo server*",
            "*span_capture*",
            "*A private TracerProvider*",
        ]
    )


def test_brixo_server_fixture_serves_the_signals_api(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx

        def test_signal(brixo_server):
            assert brixo_server.api_key == "test-key"
            brixo_server.register_message("msg_1")
            with httpx.Client(base_url=brixo_server.url, timeout=5) as client:
                response = client.post(
                    "/v1/messages/msg_1/signals",
                    headers={
                        "Authorization": "Bearer test-key",
                        "Content-Type": "application/vnd.api+json",
                    },
                    json={
                        "data": {
                            "type": "signals",
                            "attributes": {"name": "feedback", "value": "thumbs_up"},
                        }
                    },
                )
            assert response.status_code == 204
            (signal,) = brixo_server.wait_for_signals(1, timeout=5)
            assert (signal.target_id, signal.value) == ("msg_1", "thumbs_up")
        """
    )

    pytester.runpytest(*STRICT).assert_outcomes(passed=1)


def test_span_capture_records_spans_on_a_private_provider(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from opentelemetry import trace

        def test_capture(span_capture):
            assert trace.get_tracer_provider() is not span_capture.provider
            tracer = span_capture.provider.get_tracer("test")
            with tracer.start_as_current_span("outer"):
                with tracer.start_as_current_span("inner"):
                    pass
            assert [span.name for span in span_capture.spans()] == ["inner", "outer"]
            assert span_capture.exporter.get_finished_spans()[0].name == "inner"
            span_capture.clear()
            assert span_capture.spans() == []
        """
    )

    pytester.runpytest(*STRICT).assert_outcomes(passed=1)


def test_fixtures_leave_nothing_behind_between_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx
        import pytest
        from opentelemetry import trace

        seen = {}

        def test_first(brixo_server, span_capture):
            brixo_server.register_message("msg_1")
            with span_capture.provider.get_tracer("t").start_as_current_span("first"):
                pass
            seen["url"] = brixo_server.url
            seen["server"] = brixo_server
            seen["capture"] = span_capture
            seen["global_provider"] = trace.get_tracer_provider()

        def test_second(brixo_server, span_capture):
            # A fresh server and a fresh capture, holding nothing from the first test.
            assert brixo_server is not seen["server"]
            assert brixo_server.known_message_ids() == set()
            assert span_capture is not seen["capture"]
            assert span_capture.spans() == []
            # The global provider was never touched.
            assert trace.get_tracer_provider() is seen["global_provider"]
            # The first server is stopped: its port no longer answers.
            with pytest.raises(httpx.TransportError):
                httpx.post(seen["url"] + "/v1/traces", timeout=2)
            with pytest.raises(RuntimeError):
                seen["server"].signals()
            # The first provider is shut down: spans it starts now are not exported.
            old = seen["capture"]
            with old.provider.get_tracer("t").start_as_current_span("late"):
                pass
            assert [span.name for span in old.spans()] == ["first"]
        """
    )

    pytester.runpytest(*STRICT).assert_outcomes(passed=2)


def test_server_stops_even_when_the_test_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx
        import pytest

        urls = []

        def test_fails(brixo_server):
            urls.append(brixo_server.url)
            raise AssertionError("boom")

        def test_after():
            with pytest.raises(httpx.TransportError):
                httpx.post(urls[0] + "/v1/traces", timeout=2)
        """
    )

    pytester.runpytest(*STRICT).assert_outcomes(passed=1, failed=1)


def test_fixtures_come_from_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_needs_server(brixo_server):\n    pass\n")

    result = pytester.runpytest(*STRICT, "-p", "no:brixo_otel")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'brixo_server' not found*"])


def test_brixo_client_captures_spans_and_signals_and_leaves_no_default(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import brixo_otel
        from brixo_otel import _api

        def test_round_trip(brixo_client, span_capture, signal_capture):
            @brixo_otel.message(message_id="m-1", name="answer")
            def answer():
                return "hi"

            answer()
            signal = brixo_otel.feedback("thumbs_up", message_id="m-1")
            assert brixo_otel.flush(timeout=5)
            assert [s.id for s in signal_capture.signals()] == [signal.id]
            feedback = span_capture.one("brixo.feedback")
            assert feedback.parent.span_id == span_capture.one("answer").context.span_id

        def test_no_client_left_over():
            assert _api.current() is None
        """
    )

    pytester.runpytest(*STRICT).assert_outcomes(passed=2)
