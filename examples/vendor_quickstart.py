"""The vendor SDK's quickstart, unchanged but for its import line, plus what makes it rateable.

Before: `from brixo import Brixo`. After: `from brixo_otel import Brixo`. Run with BRIXO_API_KEY
set (and BRIXO_OTLP_TRACES_ENDPOINT to send the traces somewhere other than Brixo).

The vendor SDK has no message ids, so its interactions cannot be rated. The lines marked
`# rateable` are all it takes here: a `message_id` (the id your app shows the user the answer
under) makes the interaction the rated message, and `brixo_otel.feedback(...)` rates it,
linked to the interaction's trace.
"""

from __future__ import annotations

import asyncio
import os

import brixo_otel  # rateable
from brixo_otel import Brixo

Brixo.init(
    app_name="support-bot",
    environment="production",
    api_key=os.environ.get("BRIXO_API_KEY"),
    agent_version="2026.11.1",
)


def call_model(prompt: str) -> str:
    return f"Here is how to reset your password ({len(prompt)} chars considered)."


@Brixo.interaction("Handle support question")
def handle(question: str, message_id: str) -> str:
    Brixo.begin_context(
        account={
            "id": "acct_42",
            "name": "Acme Corp",
            "logo_url": "https://acme.example/logo.png",
            "website_url": "https://acme.example",
        },
        user={"id": "user_7", "name": "Ana", "email": "ana@acme.example"},
        session_id="sess_1001",
        metadata={"plan": "enterprise", "channel": "web"},
        input=question,
        message_id=message_id,  # rateable
    )
    answer = call_model(question)
    Brixo.update_context(metadata={"retrieval_hits": 3})
    Brixo.end_context(output=answer)
    return answer


@Brixo.interaction()
async def handle_streaming(question: str):  # type: ignore[no-untyped-def]
    Brixo.begin_context(user={"id": "user_7"}, session_id="sess_1001", input=question)
    brixo_otel.set_message_id("msg_1002")  # rateable: the same, bound from inside
    for word in call_model(question).split():
        yield word
    Brixo.end_context(output="(streamed)")


@Brixo.interaction("Sync stream")
def handle_sync_stream(question: str):  # type: ignore[no-untyped-def]
    Brixo.begin_context(session_id="sess_1001", input=question, message_id="msg_1003")  # rateable
    yield from call_model(question).split()


async def main() -> None:
    print(handle("How do I reset my password?", message_id="msg_1001"))
    print(" ".join([w async for w in handle_streaming("And my username?")]))
    print(" ".join(handle_sync_stream("And my email?")))
    # The user liked the first answer: the rating joins that interaction's trace.  # rateable
    brixo_otel.feedback("thumbs_up", message_id="msg_1001")  # rateable
    brixo_otel.flush(timeout=10)  # rateable: a script delivers before it exits


if __name__ == "__main__":
    asyncio.run(main())  # spans are flushed at exit, as with the vendor SDK
