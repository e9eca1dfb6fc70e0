"""The span processor that makes every span in a message or conversation carry its ids.

Tagging happens in `on_start`, so spans made by any instrumentation (an HTTP client, an LLM SDK
instrumentor) get the ids without knowing about us. `on_end` of a message span records its span
context in the span index, which is how later feedback finds the trace it rates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from brixo_otel import attributes as attrs
from brixo_otel._instrument._scope import (
    CONVERSATION_KEY,
    INTERACTION_KEY,
    MESSAGE_KEY,
    InteractionScope,
    MessageScope,
)
from brixo_otel._internal import guard

if TYPE_CHECKING:
    from brixo_otel._correlation._index import SpanIndex


class BrixoSpanProcessor(SpanProcessor):
    """Tags spans with message and conversation ids, and indexes finished message spans.

    `span_attributes` are added to every span we tag; they carry the `brixo.*` resource values
    when the app brought its own TracerProvider (whose resource we must not replace).
    `indexed_attributes` are the attributes of a message span worth keeping next to its span
    context (the model, the agent version), so feedback metrics can be dimensioned by them.
    """

    def __init__(
        self,
        index: SpanIndex | None,
        *,
        indexed_attributes: Sequence[str] = (),
        span_attributes: Mapping[str, str] | None = None,
    ) -> None:
        self._index = index
        self._indexed_attributes = tuple(indexed_attributes)
        self._span_attributes = dict(span_attributes or {})
        self._open_messages: dict[int, MessageScope] = {}
        self._enabled = True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if not self._enabled:
            return
        ctx = otel_context.get_current() if parent_context is None else parent_context
        message = ctx.get(MESSAGE_KEY)
        conversation_id = ctx.get(CONVERSATION_KEY)
        if isinstance(message, MessageScope):
            if message.span_id is None:  # the first span of a scope is the message span
                message.span_id = span.context.span_id
                self._open_messages[message.span_id] = message
            if message.message_id is not None:
                span.set_attribute(attrs.MESSAGE_ID, message.message_id)
            if message.conversation_id is not None:
                conversation_id = message.conversation_id
        if conversation_id is None:
            interaction = ctx.get(INTERACTION_KEY)
            if isinstance(interaction, InteractionScope):
                conversation_id = interaction.conversation_id
        if isinstance(conversation_id, str):
            span.set_attribute(attrs.SESSION_ID, conversation_id)
            span.set_attribute(attrs.GEN_AI_CONVERSATION_ID, conversation_id)
        if self._span_attributes and (message is not None or conversation_id is not None):
            span.set_attributes(self._span_attributes)

    def on_end(self, span: ReadableSpan) -> None:
        if not self._open_messages:
            return
        span_context = span.context
        if span_context is None:
            return
        message = self._open_messages.pop(span_context.span_id, None)
        if message is None or message.message_id is None or self._index is None:
            return
        with guard("indexing a message span"):
            span_attributes = span.attributes or {}
            kept = {
                name: span_attributes[name]
                for name in self._indexed_attributes
                if name in span_attributes
            }
            self._index.put(message.message_id, span_context, kept)

    def disable(self) -> None:
        """Stop tagging and indexing: the client that added us was shut down.

        An SDK TracerProvider has no way to remove a processor, so a replaced client's processor
        stays registered on the app's provider and must become a no-op.
        """
        self._enabled = False
        self._open_messages.clear()

    def shutdown(self) -> None:
        self.disable()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
