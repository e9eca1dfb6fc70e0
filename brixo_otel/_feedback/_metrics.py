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
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Final

from opentelemetry import metrics
from opentelemetry.util.types import AttributeValue

from brixo_otel import attributes as attrs
from brixo_otel._errors import ConfigurationError
from brixo_otel._forksafe import after_fork_in_child
from brixo_otel._settings import DEFAULT_METRIC_DIMENSIONS
from brixo_otel._tally import Dimensions, tally
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

#: Ended messages not counted yet, at most. They are counted when the metrics are collected, on
#: the reader's thread; only when this many pile up between two collections (or nothing ever
#: collects) does the end of a message count them on the app's thread.
MAX_UNCOUNTED_MESSAGES: Final = 8192


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
        # Observed rather than added to: a synchronous `Counter.add` on an SDK provider costs
        # several microseconds, paid at the end of every message on the app's thread; here an
        # ended message costs one list append, and is counted when the reader collects.
        self._given = meter_provider
        self._message_tally = tally(
            meter,
            MESSAGES_COUNTER,
            unit="{message}",
            description="Instrumented assistant messages, by what produced them",
        )
        self._dimensions = frozenset(check_dimensions(dimensions))
        self._seen: dict[str, set[AttributeValue]] = {}
        self._max_values = max_values_per_dimension
        self._lock = threading.Lock()
        #: The kept attributes of ended messages not counted yet, oldest first. A list: app
        #: threads only append (atomic), and the one counting takes a prefix off in one step.
        self._uncounted: list[Mapping[str, AttributeValue]] = []
        self._tally_lock = threading.Lock()
        self._message_tally.sources.add(self)
        after_fork_in_child(self, FeedbackMetrics._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        """Fresh locks: a parent thread may have held one at the fork."""
        self._lock = threading.Lock()
        self._tally_lock = threading.Lock()

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
        """One message ended with these kept attributes, which must not change afterwards."""
        uncounted = self._uncounted
        uncounted.append(span_attributes)  # atomic: no lock on the app's thread
        if len(uncounted) >= MAX_UNCOUNTED_MESSAGES:
            self.tally()

    def tally(self) -> None:
        """Count the ended messages queued so far into the meter's totals (at each collection,
        and when the client that counts them stops).

        Messages with the same kept attributes are grouped first, in C (`Counter` over their
        items), so the dimensions are worked out once per distinct set, in order of first
        appearance (which keeps the per-dimension cap of `_bounded` as one by one would).
        """
        with self._tally_lock:
            uncounted = self._uncounted
            taken = len(uncounted)
            if not taken:
                return
            batch = uncounted[:taken]
            del uncounted[:taken]  # one step; what was appended meanwhile stays, past `taken`
            if _reads_nothing(self._given or metrics.get_meter_provider()):
                return  # as the synchronous counter did, on a provider no reader is behind
            grouped: Counter[tuple[tuple[str, AttributeValue], ...]]
            try:
                grouped = Counter(map(tuple, map(dict.items, batch)))  # type: ignore[arg-type]
            except TypeError:  # a mapping that is not a dict, or a value that is not hashable
                grouped = Counter(_grouping_key(attributes) for attributes in batch)
            counted: dict[Dimensions, int] = {}
            for items, count in grouped.items():
                key = tuple(sorted(self._bounded(dict(items)).items())) if items else ()
                counted[key] = counted.get(key, 0) + count
        self._message_tally.add(counted)

    def count_feedback(
        self, value: str, target: str, rated_attributes: Mapping[str, AttributeValue]
    ) -> None:
        dimensions = self._bounded(rated_attributes)
        dimensions[attrs.SIGNAL_VALUE] = value
        dimensions[attrs.SIGNAL_TARGET] = target
        self._feedback.add(1, dimensions)


def _reads_nothing(provider: object) -> bool:
    """Whether `provider` is one of the OpenTelemetry API's own stand-ins (the proxy used until
    an SDK provider is set, or the no-op), which no reader can collect from."""
    return type(provider).__module__.startswith("opentelemetry.metrics")


def _grouping_key(
    attributes: Mapping[str, AttributeValue],
) -> tuple[tuple[str, AttributeValue], ...]:
    """The attributes as a key; without them if a value cannot be hashed (never one of the SDK's,
    whose sequences are tuples): the message is still counted."""
    key = tuple(attributes.items())
    try:
        hash(key)
    except TypeError:
        return ()
    return key
