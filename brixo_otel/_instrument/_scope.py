"""Ids live in the OpenTelemetry Context, so they follow threads, tasks and generators exactly as
spans do, and never leak between concurrent requests.

A *message scope* is a small mutable object rather than a plain value: `set_message_id` binds an
id known only after the model answers (say, the provider's response id), and the span processor
reads the scope when each child span starts, so spans started after the binding carry the id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from brixo_otel import attributes as attrs
from brixo_otel._internal import log_rate_limited

MESSAGE_KEY: Final = otel_context.create_key("brixo_otel.message")
CONVERSATION_KEY: Final = otel_context.create_key("brixo_otel.conversation")
INTERACTION_KEY: Final = otel_context.create_key("brixo_otel.interaction")


class MessageScope:
    """The message being produced: its ids, and its span once started."""

    __slots__ = (
        "conversation_id",
        "from_response",
        "gathered",
        "message_id",
        "on_bound",
        "pending",
        "span",
        "span_id",
    )

    def __init__(
        self, message_id: str | None, conversation_id: str | None, from_response: bool = False
    ) -> None:
        self.message_id = message_id
        self.conversation_id = conversation_id
        #: Bind the first provider response id seen on a span of the message as its id
        #: (`@message(message_id_from_response=True)`), if it has none by then.
        self.from_response = from_response
        self.span: Span | None = None
        #: Set by the span processor on the first span started in the scope: the message span.
        self.span_id: int | None = None
        #: Attributes worth indexing, gathered from the spans of the message as they end.
        self.gathered: dict[str, AttributeValue] = {}
        #: Set by the span processor when the message span starts: told by `set_message_id`,
        #: so that an id bound late is indexed at once, while the message is still running.
        #: A reference, not a lookup: the processor is found without any registry on this path.
        self.on_bound: Callable[[MessageScope], None] | None = None
        #: Spans started in the message while it had no id and not ended yet (span id → span),
        #: kept by the span processor so that an id bound late reaches them too. Only messages
        #: whose id is not known at start have it; `None` until the first such span.
        self.pending: dict[int, Span] | None = None

    def bind(self, message_id: str) -> None:
        """Make `message_id` the message's id from now on: on the message span and on the spans
        of the message still open, in the span index (through `on_bound`), and on every span
        started in the message from now on. Spans that already ended keep what they had."""
        self.message_id = message_id
        if self.span is not None:
            self.span.set_attribute(attrs.MESSAGE_ID, message_id)
        pending = self.pending
        if pending:
            for span in list(pending.values()):  # a copy: spans end in other threads too
                if span.is_recording():
                    span.set_attribute(attrs.MESSAGE_ID, message_id)
        if self.on_bound is not None:
            self.on_bound(self)


class InteractionScope:
    """One user interaction (the vendor SDK's root span) and what `Brixo.*_context` learned.

    An interaction is also a message scope of its own (`message`), so that it can be rated: a
    message id bound inside it (`set_message_id`, `Brixo.begin_context(message_id=...)`) makes
    the root span the rated message span.
    """

    __slots__ = ("conversation_id", "message", "span")

    def __init__(self, span: Span, message: MessageScope | None = None) -> None:
        self.span = span
        self.conversation_id: str | None = None
        self.message = message


def current_message(ctx: Context | None = None) -> MessageScope | None:
    scope = otel_context.get_value(MESSAGE_KEY, ctx)
    return scope if isinstance(scope, MessageScope) else None


def current_interaction(ctx: Context | None = None) -> InteractionScope | None:
    scope = otel_context.get_value(INTERACTION_KEY, ctx)
    return scope if isinstance(scope, InteractionScope) else None


def current_conversation_id(ctx: Context | None = None) -> str | None:
    """The innermost conversation id: message scope, then conversation scope, then interaction."""
    if ctx is None:
        ctx = otel_context.get_current()
    message = ctx.get(MESSAGE_KEY)
    if isinstance(message, MessageScope) and message.conversation_id is not None:
        return message.conversation_id
    conversation = ctx.get(CONVERSATION_KEY)
    if isinstance(conversation, str):
        return conversation
    interaction = ctx.get(INTERACTION_KEY)
    if isinstance(interaction, InteractionScope):
        return interaction.conversation_id
    return None


def _require_id(argument: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"{argument} must be a non-empty string, got {type(value).__name__} {value!r}"
        )
    return value


@contextmanager
def conversation(conversation_id: str) -> Iterator[None]:
    """Every span started inside carries the conversation id (`brixo.session_id` and
    `gen_ai.conversation.id`), whichever instrumentation starts it.

    Works in sync and async code alike: a `with` block attaches to the Context on entry and
    detaches in `finally`, in the same task or thread.
    """
    _require_id("conversation_id", conversation_id)
    token = otel_context.attach(otel_context.set_value(CONVERSATION_KEY, conversation_id))
    try:
        yield
    finally:
        otel_context.detach(token)


def set_message_id(message_id: str) -> None:
    """Bind the current message's id late, e.g. to the provider's response id.

    The message span gets the id at once, and is indexed under it at once (so feedback on a
    message still streaming finds it); so do the spans of the message still open, and spans
    started from now on in the message inherit it. Inside `@Brixo.interaction` (with no
    `@message` in between) it binds the interaction, which becomes the rated message.
    Outside a message scope there is nothing to bind: that is logged, never raised, because it
    is telemetry and must not break the app.
    """
    _require_id("message_id", message_id)
    scope = current_message()
    if scope is None:
        log_rate_limited(
            logging.WARNING,
            "set_message_id:outside",
            "brixo_otel.set_message_id() was called outside a @message function or "
            "message_span block; the id was not recorded",
        )
        return
    scope.bind(message_id)
