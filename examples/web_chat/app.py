"""A chat page whose answers stream in and can be rated 👍/👎, even while they stream.

    python examples/web_chat/app.py        # then open http://127.0.0.1:8000

Everything runs on this machine: a local Brixo-compatible server receives the traces and the
signals, and the "LLM" is a scripted one, unless OPENAI_BASE_URL (and OPENAI_API_KEY) name an
OpenAI-compatible server, which is then called through the real `openai` SDK.

What it shows, in order of a request:
- `@brixo_otel.message` makes each answer a message span carrying the app's own message id;
- `aprimed()` starts the streamed message before the response sends its headers, so
  `BrixoHeadersMiddleware` can put `Brixo-Message-Id` / `Brixo-Link` on them, and
  `sse_message_event()` sends the same two values as the stream's first event;
- the page loads the thumbs widget from the feedback endpoint (`asgi_feedback_app`, mounted at
  /brixo with `require_link=True`: a user can rate only the answers they were served).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

import brixo_otel
from brixo_otel.web import BrixoHeadersMiddleware, aprimed, asgi_feedback_app, sse_message_event

PAGE = Path(__file__).with_name("index.html")
MODEL = os.environ.get("CHAT_MODEL", "gpt-4o-mini")


class ChatModel(Protocol):
    def stream(self, question: str) -> AsyncIterator[str]: ...
    async def complete(self, question: str) -> str: ...


class ScriptedModel:
    """A stand-in LLM: a canned answer, a word at a time, at a readable pace."""

    def __init__(self, delay: float = 0.15) -> None:
        self.delay = delay

    def _answer(self, question: str) -> str:
        return (
            f"You asked: {question.strip()!r}. I am a scripted model, so here is a steady "
            "stream of words to rate: rate me while I am still talking, or after."
        )

    async def stream(self, question: str) -> AsyncIterator[str]:
        for index, word in enumerate(self._answer(question).split(" ")):
            await asyncio.sleep(self.delay)
            yield word if index == 0 else " " + word

    async def complete(self, question: str) -> str:
        await asyncio.sleep(self.delay)
        return self._answer(question)


class OpenAIModel:
    """The real `openai` SDK (instrument it with opentelemetry-instrumentation-openai-v2)."""

    def __init__(self, base_url: str | None = None, model: str = MODEL) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=base_url)
        self.model = model

    async def stream(self, question: str) -> AsyncIterator[str]:
        stream = await self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": question}],
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    async def complete(self, question: str) -> str:
        response = await self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": question}]
        )
        return response.choices[0].message.content or ""


def model_from_environment() -> ChatModel:
    base_url = os.environ.get("OPENAI_BASE_URL")
    return OpenAIModel(base_url) if base_url else ScriptedModel()


class Ask(BaseModel):
    question: str = Field(min_length=1, max_length=2000)
    conversation_id: str = Field(min_length=1, max_length=200)
    stream: bool = True


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def create_app(model: ChatModel | None = None) -> FastAPI:
    """The chat app; brixo-otel must be configured (with a link secret) before it serves."""
    llm = model or model_from_environment()
    app = FastAPI(title="brixo-otel web chat")
    app.add_middleware(BrixoHeadersMiddleware)
    app.mount("/brixo", asgi_feedback_app(require_link=True))

    @brixo_otel.message(name="chat.answer")
    async def answer_stream(
        message_id: str, conversation_id: str, question: str
    ) -> AsyncIterator[str]:
        yield sse_message_event()  # the message id and link token, before any text
        async for delta in llm.stream(question):
            yield _event("delta", {"text": delta})
        yield _event("done", {})

    @brixo_otel.message(name="chat.answer")
    async def answer(message_id: str, conversation_id: str, question: str) -> str:
        return await llm.complete(question)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.post("/chat", response_model=None)
    async def chat(ask: Ask) -> StreamingResponse | JSONResponse:
        message_id = f"msg_{uuid.uuid4().hex[:16]}"
        if ask.stream:
            # Primed: the message span exists before the headers leave.
            stream = await aprimed(answer_stream(message_id, ask.conversation_id, ask.question))
            return StreamingResponse(
                stream, media_type="text/event-stream", headers={"Cache-Control": "no-store"}
            )
        text = await answer(message_id, ask.conversation_id, ask.question)
        return JSONResponse({"message_id": message_id, "text": text})

    return app


def main() -> None:
    import uvicorn

    from brixo_otel.testing import BrixoTestServer

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    state = tempfile.mkdtemp(prefix="brixo-web-chat-")
    with BrixoTestServer(api_key="demo-key") as brixo:
        brixo_otel.configure(
            api_key="demo-key",
            base_url=brixo.url,
            app_name="web-chat",
            outbox_path=os.path.join(state, "outbox.db"),
            link_secret=secrets.token_urlsafe(32),
        )
        print(f"local Brixo server on {brixo.url}; chat on http://127.0.0.1:{port}", flush=True)
        try:
            uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning")
        finally:
            brixo_otel.flush(timeout=5.0)
            for signal in brixo.signals():
                comment = f" ({signal.user_message!r})" if signal.user_message else ""
                print(f"received: {signal.value} on {signal.target_id}{comment}", flush=True)
            brixo_otel.shutdown()


if __name__ == "__main__":
    main()
