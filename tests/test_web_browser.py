"""From a click in a real browser to the trace of the message it rates.

The web chat example runs under a real uvicorn with two worker processes (one outbox file and
one SQLite span index shared by both), answering through the real `openai` SDK, instrumented by
the official `opentelemetry-instrumentation-openai-v2`, from a fake OpenAI-compatible server.
Debian's headless Chromium loads the page, receives a streamed answer, clicks 👍 while the
answer is still streaming (the fake server holds the stream), then 👎 with a comment on a second,
unstreamed answer, and 👍 on a third that can only leave by `sendBeacon` as the page goes away.
The local Brixo server must receive every signal with the right message id,
and every feedback span, exported over OTLP, must sit in the trace of the message it rates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from brixo_otel import attributes as attrs
from brixo_otel.testing import BrixoTestServer, ReceivedSignal, ReceivedSpan
from tests._browser import ChatServer, chromium, environment
from tests._fake_openai import FakeOpenAI
from tests._services import wait_for

ANSWER = "Paris is the capital of France, and it has been for a very long time."
MESSAGE_SPAN = "chat.answer"
#: How long a step in the browser may take (ms): generous for a loaded CI machine, yet bounded.
STEP_MS = 15_000

pytestmark = pytest.mark.timeout(90)


def ask(page: Page, question: str, *, stream: bool) -> Any:
    page.set_checked("#stream", stream)
    page.fill("#question", question)
    with page.expect_response("**/chat", timeout=STEP_MS) as response:
        page.click("form#ask button[type=submit]")
    return response.value


def test_thumbs_from_a_real_browser_reach_brixo_linked_to_their_traces(tmp_path: Path) -> None:
    with (
        BrixoTestServer(api_key="test-key") as brixo,
        FakeOpenAI(answer=ANSWER) as llm,
    ):
        chat = ChatServer(
            tmp_path / "uvicorn.log",
            environment(
                BRIXO_API_KEY="test-key",
                BRIXO_BASE_URL=brixo.url,
                BRIXO_OTLP_TRACES_ENDPOINT=brixo.traces_endpoint,
                BRIXO_OUTBOX_PATH=str(tmp_path / "outbox.db"),
                BRIXO_SPAN_INDEX=f"sqlite:///{tmp_path / 'index.db'}",
                BRIXO_LINK_SECRET="browser-test-secret-0123456789abcdef",
                OPENAI_BASE_URL=llm.base_url,
                OPENAI_API_KEY="sk-fake",
                OTEL_BSP_SCHEDULE_DELAY="100",
            ),
        )
        with chat, chromium() as browser:
            page = browser.new_page()
            page.set_default_timeout(STEP_MS)
            page.goto(chat.url)

            # 1. A streamed answer, held by the fake server after three words.
            llm.hold_streams_after(3)
            response = ask(page, "What is the capital of France?", stream=True)
            first = page.locator(".assistant").nth(0)
            expect(first.locator(".text")).to_have_text("Paris is the")
            assert llm.holding.is_set()
            # The headers left before the body, carrying the message id and link token.
            message_1 = response.headers["brixo-message-id"]
            assert response.headers["brixo-link"]
            expect(first).to_have_attribute("data-brixo-message-id", message_1)

            first.locator("button[data-brixo-value=thumbs_up]").click()
            expect(first.locator(".brixo-status")).to_have_text("Thanks!")  # 202 received
            # ... and the answer is still streaming: the click was made mid-stream.
            expect(first).to_have_attribute("data-state", "streaming")
            assert first.locator(".text").inner_text() == "Paris is the"
            page.screenshot(path=str(tmp_path / "rated-mid-stream.png"))

            llm.release()
            expect(first).to_have_attribute("data-state", "done")
            expect(first.locator(".text")).to_have_text(ANSWER)

            # 2. An answer that is not streamed: 👎, then a comment.
            response = ask(page, "And of Italy?", stream=False)
            second = page.locator(".assistant").nth(1)
            expect(second).to_have_attribute("data-state", "done")
            message_2 = response.headers["brixo-message-id"]
            assert message_2 != message_1
            second.locator("button[data-brixo-value=thumbs_down]").click()
            expect(second.locator(".brixo-status")).to_have_text("Thanks!")
            second.locator("textarea").fill("too vague")
            second.locator("form button[type=submit]").click()
            expect(second.locator(".brixo-status")).to_have_text("Thanks for the comment")
            page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

            # 3. A rating that cannot go out yet leaves with the page: the endpoint answers
            # 503 (Retry-After: 60) once, so the widget holds the rating for a retry; the user
            # navigates away, and the rating goes out with navigator.sendBeacon.
            refused: list[str] = []

            def unavailable_once(route: Route) -> None:
                refused.append(route.request.post_data or "")
                route.fulfill(
                    status=503,
                    headers={"Retry-After": "60", "Content-Type": "application/problem+json"},
                    body='{"title": "Service Unavailable", "status": 503}',
                )

            page.route("**/brixo/", unavailable_once, times=1)
            response = ask(page, "One more?", stream=False)
            third = page.locator(".assistant").nth(2)
            message_3 = response.headers["brixo-message-id"]
            third.locator("button[data-brixo-value=thumbs_up]").click()

            def held() -> bool | None:
                return True if refused and page.evaluate("BrixoFeedback.pendingCount()") else None

            wait_for(
                held,
                STEP_MS / 1000,
                "the widget to hold the refused rating for a retry",
                interval=0.05,
            )
            expect(third.locator(".brixo-status")).to_have_text("Not sent yet, will retry")
            page.screenshot(path=str(tmp_path / "held-for-beacon.png"), full_page=True)
            page.unroute("**/brixo/")
            page.goto("about:blank")  # pagehide: the held rating leaves as a beacon

            expected = sorted(
                [
                    (message_1, "thumbs_up", None),
                    (message_2, "thumbs_down", None),
                    (message_2, "thumbs_down", "too vague"),
                    (message_3, "thumbs_up", None),
                ],
                key=repr,
            )
            signals = _wait_for_signals(brixo, len(expected), chat)
            assert sorted(((s.target_id, s.value, s.user_message) for s in signals), key=repr) == (
                expected
            )
            assert {s.target for s in signals} == {"message"}

            spans = _wait_for_feedback_spans(brixo, len(expected))
            workers = chat.worker_pids()

    messages = {s.attributes[attrs.MESSAGE_ID]: s for s in spans if s.name == MESSAGE_SPAN}
    assert set(messages) == {message_1, message_2, message_3}
    feedback = [s for s in spans if s.name == attrs.FEEDBACK_SPAN_NAME]
    assert sorted(s.attributes[attrs.MESSAGE_ID] for s in feedback) == sorted(
        [message_1, message_2, message_2, message_3]
    )
    for span in feedback:
        rated = messages[span.attributes[attrs.MESSAGE_ID]]
        assert span.trace_id == rated.trace_id, "the feedback span is not in the rated trace"
        assert span.parent_span_id == rated.span_id
    # The official OpenAI instrumentation's spans sit inside the messages and carry their ids.
    llm_spans = [s for s in spans if s.attributes.get(attrs.GEN_AI_REQUEST_MODEL)]
    assert {s.attributes[attrs.MESSAGE_ID] for s in llm_spans} == set(messages)
    for span in llm_spans:
        assert span.parent_span_id == messages[span.attributes[attrs.MESSAGE_ID]].span_id
    assert [bool(r.get("stream")) for r in llm.requests] == [True, False, False]
    assert len(workers) == 2  # both uvicorn workers were up and serving
    served_by = {s.resource_attributes.get("process.pid") for s in spans}
    assert served_by <= workers


def _wait_for_signals(brixo: BrixoTestServer, count: int, chat: ChatServer) -> list[ReceivedSignal]:
    def check() -> list[ReceivedSignal] | None:
        signals = brixo.signals()
        return signals if len(signals) >= count else None

    try:
        return wait_for(check, 30, f"{count} signals at the Brixo server", interval=0.1)
    except TimeoutError as exc:
        statuses = [(r.method, r.path, r.status) for r in brixo.requests()]
        raise AssertionError(f"{exc}; requests seen: {statuses}; app log:\n{chat.tail()}") from None


def _wait_for_feedback_spans(brixo: BrixoTestServer, count: int) -> list[ReceivedSpan]:
    def check() -> list[ReceivedSpan] | None:
        spans = brixo.spans()
        feedback = [s for s in spans if s.name == attrs.FEEDBACK_SPAN_NAME]
        return spans if len(feedback) >= count else None

    return wait_for(check, 15, f"{count} feedback spans at the Brixo server", interval=0.1)
