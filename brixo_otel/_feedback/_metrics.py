"""Feedback metrics: thumbs and messages counted by what produced the message.

Two counters make "thumbs-up rate by model" one query in any metrics backend:
`brixo.feedback` (by value and target) over `brixo.messages`, both carrying the same dimensions
taken from the rated span — even when the feedback arrives in another process, through the span
index or a link token. Dimensions come from an allow-list and never include message or
conversation ids: every distinct attribute value is a new time series, and ids would make one per
message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Final

from opentelemetry import metrics
from opentelemetry.util.types import AttributeValue

from brixo_otel import attributes as attrs
from brixo_otel._errors import ConfigurationError
from brixo_otel._settings import DEFAULT_METRIC_DIMENSIONS
from brixo_otel._version import __version__

#: By default: what produced the rated message (see the settings table).
DEFAULT_DIMENSIONS: Final = DEFAULT_METRIC_DIMENSIONS
#: Ids are unbounded by nature; refused as dimensions whatever the app asks for.
FORBIDDEN_DIMENSIONS: Final = frozenset(
    {attrs.MESSAGE_ID, attrs.SESSION_ID, attrs.GEN_AI_CONVERSATION_ID, attrs.SIGNAL_ID}
)
#: Distinct values kept per dimension; later newcomers are counted as OTHER_VALUE.
MAX_VALUES_PER_DIMENSION: Final = 200
OTHER_VALUE: Final = "_other"

FEEDBACK_COUNTER: Final = "brixo.feedback"
MESSAGES_COUNTER: Final = "brixo.messages"


def check_dimensions(dimensions: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dimensions)
    if isinstance(dimensions, str) or not all(isinstance(d, str) and d for d in chosen):
        raise TypeError(f"metric_dimensions must be a list of attribute names, got {dimensions!r}")
    forbidden = sorted(FORBIDDEN_DIMENSIONS.intersection(chosen))
    if forbidden:
        raise ConfigurationError(
            f"metric_dimensions may not include ids {forbidden}: each id would create a time "
            "series per message; use attributes such as the model or the agent version"
        )
    return chosen


class FeedbackMetrics:
    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None,
        dimensions: Iterable[str] = DEFAULT_DIMENSIONS,
        *,
        max_values_per_dimension: int = MAX_VALUES_PER_DIMENSION,
    ) -> None:
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("brixo_otel", __version__)
        self._feedback = meter.create_counter(
            FEEDBACK_COUNTER,
            unit="{signal}",
            description="User feedback signals, by value, target and what produced the message",
        )
        self._messages = meter.create_counter(
            MESSAGES_COUNTER,
            unit="{message}",
            description="Instrumented assistant messages, by what produced them",
        )
        self._dimensions = frozenset(check_dimensions(dimensions))
        self._seen: dict[str, set[AttributeValue]] = {}
        self._max_values = max_values_per_dimension
        self._lock = threading.Lock()

    def _bounded(self, source: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
        chosen: dict[str, AttributeValue] = {}
        for name, value in source.items():
            if name not in self._dimensions:
                continue
            seen = self._seen.get(name)
            if seen is None or value not in seen:
                with self._lock:
                    seen = self._seen.setdefault(name, set())
                    if value not in seen:
                        if len(seen) >= self._max_values:
                            value = OTHER_VALUE
                        else:
                            seen.add(value)
            chosen[name] = value
        return chosen

    def count_message(self, span_attributes: Mapping[str, AttributeValue]) -> None:
        self._messages.add(1, self._bounded(span_attributes) if span_attributes else None)

    def count_feedback(
        self, value: str, target: str, rated_attributes: Mapping[str, AttributeValue]
    ) -> None:
        dimensions = self._bounded(rated_attributes)
        dimensions[attrs.SIGNAL_VALUE] = value
        dimensions[attrs.SIGNAL_TARGET] = target
        self._feedback.add(1, dimensions)
