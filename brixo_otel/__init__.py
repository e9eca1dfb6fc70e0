"""brixo-otel: link user feedback to the OpenTelemetry traces of the LLM messages it rates.

Decorate the call sites that produce assistant messages (`@message`), then report a user's
thumbs with `feedback("thumbs_up", message_id=...)`: the signal is delivered durably to the
Brixo Signals API and emitted into the rated message's trace.
"""

import logging

from brixo_otel._api import (
    afeedback,
    configure,
    feedback,
    flush,
    get_client,
    link_token,
    retract_feedback,
    shutdown,
)
from brixo_otel._client import Client
from brixo_otel._errors import ConfigurationError, InvalidSignal, UnknownMessage
from brixo_otel._instrument._decorators import interaction, message, message_span
from brixo_otel._instrument._scope import conversation, set_message_id
from brixo_otel._policies import OutboxLimits, RetryPolicy
from brixo_otel._signal import Signal
from brixo_otel._vendor_sdk import Brixo
from brixo_otel._version import __version__

logging.getLogger("brixo_otel").addHandler(logging.NullHandler())

__all__ = [
    "Brixo",
    "Client",
    "ConfigurationError",
    "InvalidSignal",
    "OutboxLimits",
    "RetryPolicy",
    "Signal",
    "UnknownMessage",
    "__version__",
    "afeedback",
    "configure",
    "conversation",
    "feedback",
    "flush",
    "get_client",
    "interaction",
    "link_token",
    "message",
    "message_span",
    "retract_feedback",
    "set_message_id",
    "shutdown",
]
