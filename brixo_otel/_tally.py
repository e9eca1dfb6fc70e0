"""Counters counted in the process and read by the metrics reader, not added to one by one.

An SDK counter's `add` costs microseconds: at the end of every message, or in every
`feedback()`, that is a large share of what the app's thread pays. A tally costs a dict update
instead, and reports its totals through one observable counter when the reader collects:
the same cumulative sum a counter would export.

One tally per meter and counter name, whoever counts into it: an SDK meter keeps the callbacks
of the first instrument of a name and ignores those of a later one (a client configured again
on the same provider), and a cumulative counter must not lose what a replaced client counted.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Protocol, TypeAlias

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.util.types import AttributeValue

#: A point's attributes as a key: (name, value) pairs in name order.
Dimensions: TypeAlias = tuple[tuple[str, AttributeValue], ...]


class Source(Protocol):
    """Something that keeps counts of its own and adds them to the tally when asked."""

    def tally(self) -> None: ...


class Count:
    """A count any thread adds to without a lock, read by one reader at a time.

    `add` steps an `itertools.count`, which is atomic; reading steps it too, and takes the
    reads back off."""

    def __init__(self) -> None:
        steps = itertools.count()
        self.add = steps.__next__
        self._reads = 0

    def read(self) -> int:
        """What was added so far. The caller keeps readers apart (a reader's own step must
        not fall between another's step and its count of reads)."""
        reads = self._reads
        self._reads = reads + 1
        return self.add() - reads


class Tally:
    """The totals of one counter on one meter, and the one callback that reports them."""

    def __init__(self, meter: metrics.Meter, name: str, unit: str, description: str) -> None:
        self.totals: dict[Dimensions, int] = {}
        self.lock = threading.Lock()
        #: Whose own counts to take in before reporting (weakly: they go with their client,
        #: after adding what they had left).
        self.sources: weakref.WeakSet[Source] = weakref.WeakSet()
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def add(self, counted: Mapping[Dimensions, int]) -> None:
        with self.lock:
            totals = self.totals
            for key, count in counted.items():
                totals[key] = totals.get(key, 0) + count

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        for source in list(self.sources):
            source.tally()
        with self.lock:
            return [Observation(total, dict(key)) for key, total in self.totals.items()]


_tallies: weakref.WeakKeyDictionary[metrics.Meter, dict[str, Tally]] = weakref.WeakKeyDictionary()
_tallies_lock = threading.Lock()


def tally(meter: metrics.Meter, name: str, *, unit: str, description: str) -> Tally:
    """The meter's tally for the counter `name`, made (and its instrument created) on first
    use."""
    with _tallies_lock:
        named = _tallies.setdefault(meter, {})
        found = named.get(name)
        if found is None:
            found = named[name] = Tally(meter, name, unit, description)
        return found
