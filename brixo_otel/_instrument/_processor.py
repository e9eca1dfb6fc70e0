"""The span processor that makes every span in a message or conversation carry its ids.

Tagging happens in `on_start`, so spans made by any instrumentation (an HTTP client, an LLM SDK
instrumentor) get the ids without knowing about us.

The message span's context goes into the span index when the span *starts*, or as soon as
`set_message_id` binds its id, so feedback clicked while the answer still streams finds the
span it rates. What that entry keeps is the very dict in which the message gathers the wanted
attributes of its spans as they end (the model, the agent version): complete once the message
span ends, without a second write to the in-process index (a shared store gets the final one).

A message that opts in (`message_id_from_response=True`) and has no id yet takes the provider's
response id from the first span of it that ends recording one (the LLM call's span), and binds
it as `set_message_id` would: see `provider_response_id` for where the id is read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext
from opentelemetry.util.types import Attributes, AttributeValue

from brixo_otel import attributes as attrs
from brixo_otel._instrument._scope import (
    CONVERSATION_KEY,
    INTERACTION_KEY,
    MESSAGE_KEY,
    InteractionScope,
    MessageScope,
)
from brixo_otel._internal import guard, swallowed

if TYPE_CHECKING:
    from brixo_otel._correlation._index import SpanIndex
    from brixo_otel._feedback._metrics import FeedbackMetrics


#: Spans inside open messages that we track at most; only spans that never end could reach it.
_MAX_OPEN_CHILDREN = 100_000


class BrixoSpanProcessor(SpanProcessor):
    """Tags spans with message and conversation ids, and indexes message spans.

    `indexed_attributes` are the attributes worth keeping next to a message's span context
    (the model, the agent version), so feedback can be dimensioned by them. They are gathered
    from the message span and from the spans inside it: LLM instrumentations put the model on
    their own child span, not on ours.
    """

    def __init__(
        self,
        index: SpanIndex | None,
        *,
        indexed_attributes: Sequence[str] = (),
        metrics: FeedbackMetrics | None = None,
        resource_attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        self._index = index
        self._metrics = metrics
        self._indexed_attributes = frozenset(indexed_attributes)
        #: Wanted attributes the provider's resource holds (agent version, environment when
        #: brixo-otel made the provider): kept with every message, unless a span set its own,
        #: since a process that rates the message cannot read this process's resource.
        self._from_resource = {
            name: value
            for name, value in (resource_attributes or {}).items()
            if name in self._indexed_attributes
        }
        self._open_messages: dict[int, MessageScope] = {}
        #: span id of a span inside an open message → that message's scope
        self._children: dict[int, MessageScope] = {}
        self._enabled = True
        # One bound method for every scope to call back, rather than one made per message.
        self._bound_late = self._index_bound_id
        #: What the end of a message tells the index. A message is put once, at its start (or
        #: when its id is bound), with the dict it gathers its attributes in, completed in place
        #: when it ends; the built-in indexes keep that dict as given, so the memory tier needs
        #: no second put and a shared store only the final write (`complete`). Any other index
        #: may have copied what it was given: it gets a second put.
        self._index_end: Callable[[str, SpanContext, Mapping[str, AttributeValue]], None] | None = (
            None if index is None else getattr(index, "complete", index.put)
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if not self._enabled:
            return
        ctx = otel_context.get_current() if parent_context is None else parent_context
        message = ctx.get(MESSAGE_KEY)
        conversation_id: object = None
        if isinstance(message, MessageScope):
            if message.span_id is None:
                # The first span of a scope is the message span; the decorator started it with
                # its ids already set, which is cheaper than setting them one by one here.
                span_context = span.context
                message.span_id = span_context.span_id
                self._open_messages[message.span_id] = message
                if self._from_resource:  # the spans of the message, ending later, override them
                    message.gathered.update(self._from_resource)
                index = self._index
                if index is not None:
                    message.on_bound = self._bound_late
                    if message.message_id is not None:
                        # The very dict the message gathers its attributes in: the built-in
                        # indexes keep it as given, so it is complete when the span ends.
                        try:  # not `with guard(...)`: this runs at the start of every message
                            index.put(message.message_id, span_context, message.gathered)
                        except Exception as exc:
                            if not swallowed("indexing a message span", exc):
                                raise
                return
            children = self._children
            if len(children) >= _MAX_OPEN_CHILDREN:  # spans that never end must not pile up
                children.clear()
            span_id = span.context.span_id
            children[span_id] = message
            if message.message_id is not None:
                span.set_attribute(attrs.MESSAGE_ID, message.message_id)
            else:  # its id may be bound while this span is still open: keep it within reach
                pending = message.pending
                if pending is None:
                    message.pending = pending = {}
                pending[span_id] = span
            conversation_id = message.conversation_id
        if conversation_id is None:
            conversation_id = ctx.get(CONVERSATION_KEY)
            if conversation_id is None:
                interaction = ctx.get(INTERACTION_KEY)
                if isinstance(interaction, InteractionScope):
                    conversation_id = interaction.conversation_id
        if isinstance(conversation_id, str):
            span.set_attribute(attrs.SESSION_ID, conversation_id)
            span.set_attribute(attrs.GEN_AI_CONVERSATION_ID, conversation_id)

    def on_end(self, span: ReadableSpan) -> None:
        if not self._open_messages:
            return
        span_context = span.context
        if span_context is None:
            return
        span_id = span_context.span_id
        child_of = self._children.pop(span_id, None)
        if child_of is not None:
            pending = child_of.pending
            if pending:
                pending.pop(span_id, None)
            if child_of.span_id in self._open_messages:
                with guard("gathering attributes of a message"):
                    self._gather(child_of, span.attributes)
                    if child_of.from_response and child_of.message_id is None:
                        response_id = provider_response_id(span)
                        if response_id is not None:
                            child_of.bind(response_id)
            return
        message = self._open_messages.pop(span_id, None)
        if message is None:
            return
        message.pending = None
        try:  # not `with guard(...)`: this runs at the end of every message span
            # `_keep_wanted` written out: the call cost `@message` ~3 % (1.044 against 1.014 by
            # benchmarks/overhead.py), of a 5 % budget.
            kept = message.gathered
            wanted = self._indexed_attributes
            for name, value in _plain(span.attributes).items():
                if name in wanted:
                    kept[name] = value
            if self._metrics is not None:
                self._metrics.count_message(kept)
            index_end = self._index_end
            if index_end is not None and message.message_id is not None:
                index_end(message.message_id, span_context, kept)
        except Exception as exc:
            if not swallowed("indexing a message span", exc):
                raise

    def _index_bound_id(self, message: MessageScope) -> None:
        """`set_message_id` bound the id of a message already running: index it now."""
        index = self._index
        span = message.span
        if (
            index is None
            or span is None
            or message.message_id is None
            or message.span_id not in self._open_messages  # ended, or we were disabled
        ):
            return
        try:
            kept = self._gather(message, getattr(span, "attributes", None))
            index.put(message.message_id, span.get_span_context(), kept)
        except Exception as exc:
            if not swallowed("indexing a message span", exc):
                raise

    def attributes_so_far(self, message: MessageScope) -> dict[str, AttributeValue]:
        """What the index would keep for a message still in progress (for a link token)."""
        kept = dict(message.gathered)
        if message.span is not None:
            self._keep_wanted(kept, getattr(message.span, "attributes", None))
        return kept

    def _gather(self, message: MessageScope, recorded: Attributes) -> dict[str, AttributeValue]:
        """Add the wanted attributes of a span of the message to what it has gathered; the
        latest wins, and the message span itself, which ends last, has the final word."""
        return self._keep_wanted(message.gathered, recorded)

    def _keep_wanted(
        self, kept: dict[str, AttributeValue], recorded: Attributes
    ) -> dict[str, AttributeValue]:
        """Set into `kept` (and return it) the attributes of a span that the index keeps: in
        place, as this runs at the end of every span of a message."""
        wanted = self._indexed_attributes
        for name, value in _plain(recorded).items():
            if name in wanted:
                kept[name] = value
        return kept

    def disable(self) -> None:
        """Stop tagging and indexing: the client that added us was shut down.

        An SDK TracerProvider has no way to remove a processor, so a replaced client's processor
        stays registered on the app's provider and must become a no-op.
        """
        self._enabled = False
        self._open_messages.clear()
        self._children.clear()
        if self._metrics is not None:  # what it counted stays in the meter's totals
            with guard("counting ended messages"):
                self._metrics.tally()

    def shutdown(self) -> None:
        self.disable()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


#: OpenInference's attributes of an LLM span's output: the provider's whole response, as JSON,
#: whose top-level `id` is the response id (OpenInference has no attribute of its own for it).
_OI_OUTPUT_VALUE: Final = "output.value"
_OI_OUTPUT_MIME_TYPE: Final = "output.mime_type"
_OI_LLM_KIND: Final = "LLM"
_JSON: Final = "application/json"


def provider_response_id(span: ReadableSpan) -> str | None:
    """The provider's response id a finished LLM span records, if any.

    `gen_ai.response.id` (the OpenTelemetry GenAI conventions: the official OpenAI
    instrumentation, OpenLLMetry and most others); else, on an OpenInference `LLM` span, the
    top-level `id` of the response it records as JSON in `output.value`.
    """
    recorded = span.attributes
    if not recorded:
        return None
    value = recorded.get(attrs.GEN_AI_RESPONSE_ID)
    if isinstance(value, str) and value:
        return value
    if (
        recorded.get(attrs.OPENINFERENCE_SPAN_KIND) != _OI_LLM_KIND
        or recorded.get(_OI_OUTPUT_MIME_TYPE) != _JSON
    ):
        return None
    output = recorded.get(_OI_OUTPUT_VALUE)
    if not isinstance(output, str) or not output.lstrip().startswith("{"):
        return None
    try:
        document = json.loads(output)
    except ValueError:
        return None
    found = document.get("id") if isinstance(document, dict) else None
    return found if isinstance(found, str) and found else None


def _plain(recorded: Attributes) -> Mapping[str, AttributeValue]:
    """A span's attributes as a plain dict. The SDK hands out a read-only proxy over its own
    mapping, where every lookup goes through several layers, and even its truth test is a call
    into Python; one `copy()` is much cheaper."""
    try:
        return recorded.copy()  # type: ignore[union-attr,no-any-return]
    except AttributeError:  # None, or a mapping of some other SDK
        return recorded or {}
