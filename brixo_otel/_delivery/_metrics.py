"""Telemetry about delivery itself, through the OpenTelemetry metrics API.

The instruments are created on the meter provider the app injects (or the global one), so with no
SDK installed they are no-ops and cost nothing. `reason` attributes are short classes (`http_400`,
`not_found`, `max_age`), never free text: a metric label must have few values and no user data.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter_provider

from brixo_otel._forksafe import after_fork_in_child
from brixo_otel._tally import Count, Dimensions, tally
from brixo_otel._version import __version__


class DeliveryMetrics:
    """The counters and the depth gauge of one signal processor."""

    def __init__(
        self,
        meter_provider: MeterProvider | None,
        depth: Callable[[], Mapping[str, int] | None],
    ) -> None:
        meter = (meter_provider or get_meter_provider()).get_meter("brixo_otel", __version__)
        # Counted on the app's thread at every `feedback()`, where an SDK counter's `add` would
        # cost a fifth of its commit: a lock-free count per destination, added to the meter's
        # tally when the reader collects.
        self._enqueued = tally(
            meter,
            "brixo.signals.enqueued",
            unit="{signal}",
            description="Signals committed to the outbox, per destination.",
        )
        self._enqueued_counts: dict[str, Count] = {}
        self._enqueued_reported: dict[str, int] = {}
        self._tally_lock = threading.Lock()
        self._enqueued.sources.add(self)
        after_fork_in_child(self, DeliveryMetrics._after_fork_in_child)
        self._delivered = meter.create_counter(
            "brixo.signals.delivered",
            unit="{signal}",
            description="Signals a destination accepted.",
        )
        self._retried = meter.create_counter(
            "brixo.signals.retried",
            unit="{attempt}",
            description="Failed attempts that will be retried.",
        )
        self._dead_lettered = meter.create_counter(
            "brixo.signals.dead_lettered",
            unit="{signal}",
            description="Signals given up on and kept in the outbox with the reason.",
        )
        self._skipped = meter.create_counter(
            "brixo.signals.skipped",
            unit="{signal}",
            description="Signals a destination does not take (e.g. a rating it has no field for).",
        )
        self._held = meter.create_counter(
            "brixo.signals.held",
            unit="{signal}",
            description="Signals held in memory because the outbox could not take them in time.",
        )
        self._refused = meter.create_counter(
            "brixo.signals.refused",
            unit="{signal}",
            description="Signals refused: outbox full, or memory buffer full while unwritable.",
        )

        # `depth` must not keep the processor alive: the meter provider outlives it.
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            counts = depth()
            if not counts:
                return []
            return [Observation(n, {"destination": dest}) for dest, n in counts.items()]

        meter.create_observable_gauge(
            "brixo.outbox.depth",
            callbacks=[observe],
            unit="{signal}",
            description="Signals pending or in flight in the outbox, per destination.",
        )

    def _after_fork_in_child(self) -> None:
        """A fresh lock: a parent thread may have held it at the fork."""
        self._tally_lock = threading.Lock()

    def enqueued(self, destination: str) -> None:
        self.enqueued_counter(destination)()

    def enqueued_counter(self, destination: str) -> Callable[[], object]:
        """What counts one signal enqueued for `destination`: a call with nothing to look up,
        for the app's thread."""
        count = self._enqueued_counts.get(destination)
        if count is None:
            with self._tally_lock:
                count = self._enqueued_counts.setdefault(destination, Count())
        return count.add

    def tally(self) -> None:
        """Add the signals enqueued since the last reading to the meter's tally (before each
        collection, and when the processor stops)."""
        with self._tally_lock:
            counted: dict[Dimensions, int] = {}
            for destination, count in list(self._enqueued_counts.items()):
                total = count.read()
                new = total - self._enqueued_reported.get(destination, 0)
                if new:
                    self._enqueued_reported[destination] = total
                    counted[(("destination", destination),)] = new
        self._enqueued.add(counted)

    def delivered(self, destination: str) -> None:
        self._delivered.add(1, {"destination": destination})

    def retried(self, destination: str, reason: str) -> None:
        self._retried.add(1, {"destination": destination, "reason": reason})

    def dead_lettered(self, destination: str, reason: str) -> None:
        self._dead_lettered.add(1, {"destination": destination, "reason": reason})

    def skipped(self, destination: str) -> None:
        self._skipped.add(1, {"destination": destination})

    def held(self) -> None:
        self._held.add(1)

    def refused(self, destination: str, reason: str) -> None:
        self._refused.add(1, {"destination": destination, "reason": reason})
