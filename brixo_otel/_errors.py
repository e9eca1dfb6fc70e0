"""The errors brixo-otel raises, all of them; everything else is logged, never raised.

- `ConfigurationError` (and `TypeError`) only from `configure()`, `Client(...)` and exporter
  constructors: loud at configuration.
- `InvalidSignal` from `feedback()`, `afeedback()` and `retract_feedback()`: input that can never
  be delivered. It names the field, so a web endpoint can answer per field.
- `UnknownMessage` from `link_token()`: there is no message span to sign a token for.
"""

from __future__ import annotations


class ConfigurationError(ValueError):
    """An explicit argument to `configure()` or to an exporter cannot work as given."""


class InvalidSignal(ValueError):
    """Input to `feedback()` that can never be delivered; raised before anything is queued.

    `field` names the argument at fault (`value`, `message_id`, `score`, `link`, ...) or is None
    when the fault is the combination (neither a message nor a conversation id); `reason` is a
    short stable code (`required`, `not_accepted`, `too_long`, `wrong_type`, `out_of_range`,
    `malformed`, `forged`) for programs, while the message is for people. Delivery problems are
    never raised: they are retried and, in the end, dead-lettered.
    """

    def __init__(self, message: str, *, field: str | None = None, reason: str = "malformed"):
        super().__init__(message)
        self.field = field
        self.reason = reason


class UnknownMessage(LookupError):
    """`link_token()` was asked for a message this process cannot see: called outside a message
    whose id is known, or for an id the span index does not hold (yet, or any more)."""
