"""The vendor SDK's quickstart, unchanged but for its import line.

Before: `from brixo import Brixo`. After: `from brixo_otel import Brixo`. Run with BRIXO_API_KEY
set (and BRIXO_OTLP_TRACES_ENDPOINT to send the traces somewhere other than Brixo).
"""

from __future__ import annotations

import asyncio
import os

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
def handle(question: str) -> str:
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
    )
    answer = call_model(question)
    Brixo.update_context(metadata={"retrieval_hits": 3})
    Brixo.end_context(output=answer)
    return answer


@Brixo.interaction()
async def handle_streaming(question: str):  # type: ignore[no-untyped-def]
    Brixo.begin_context(user={"id": "user_7"}, session_id="sess_1001", input=question)
    for word in call_model(question).split():
        yield word
    Brixo.end_context(output="(streamed)")


@Brixo.interaction("Sync stream")
def handle_sync_stream(question: str):  # type: ignore[no-untyped-def]
    Brixo.begin_context(session_id="sess_1001", input=question)
    yield from call_model(question).split()


async def main() -> None:
    print(handle("How do I reset my password?"))
    print(" ".join([w async for w in handle_streaming("And my username?")]))
    print(" ".join(handle_sync_stream("And my email?")))


if __name__ == "__main__":
    asyncio.run(main())  # spans are flushed at exit, as with the vendor SDK
