"""The in-memory span index: bounded by count, expiring by age, O(1) per operation."""

from __future__ import annotations

import threading

import pytest
from opentelemetry.trace import SpanContext, TraceFlags

from brixo_otel._correlation._index import InMemorySpanIndex


def context(n: int) -> SpanContext:
    return SpanContext(trace_id=n + 1, span_id=n + 1, is_remote=False, trace_flags=TraceFlags(1))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_round_trip_keeps_span_context_and_attributes() -> None:
    index = InMemorySpanIndex()
    index.put("m", context(7), {"gen_ai.request.model": "gpt-5"})
    found = index.get("m")
    assert found is not None
    assert found.span_context == context(7)
    assert dict(found.attributes) == {"gen_ai.request.model": "gpt-5"}
    assert index.get("other") is None


def test_capacity_evicts_the_oldest_written() -> None:
    index = InMemorySpanIndex(max_entries=3)
    for n in range(5):
        index.put(f"m-{n}", context(n), {})
    assert len(index) == 3
    assert [index.get(f"m-{n}") is not None for n in range(5)] == [False, False, True, True, True]
    index.put("m-2", context(99), {})  # rewriting makes it the newest
    index.put("m-5", context(5), {})
    assert index.get("m-3") is None
    found = index.get("m-2")
    assert found is not None and found.span_context == context(99)


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    index = InMemorySpanIndex(ttl_seconds=60, clock=clock)
    index.put("m", context(1), {})
    clock.now += 59.9
    assert index.get("m") is not None
    clock.now += 0.2
    assert index.get("m") is None
    assert len(index) == 0  # an expired entry is dropped when seen


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"max_entries": 0}, "max_entries"), ({"ttl_seconds": 0}, "ttl_seconds")],
)
def test_bad_bounds_are_refused(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        InMemorySpanIndex(**kwargs)  # type: ignore[arg-type]


def test_concurrent_writers_and_readers_stay_within_bounds() -> None:
    index = InMemorySpanIndex(max_entries=500)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(2000):
                index.put(f"{worker}-{n}", context(n), {})
                index.get(f"{worker}-{n // 2}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(index) == 500


def test_get_local_is_get() -> None:
    """Every built-in index answers `get_local`, the no-I/O lookup for the app's thread."""
    index = InMemorySpanIndex()
    index.put("m", context(1), {})
    found = index.get_local("m")
    assert found is not None and found.span_context == context(1)


def test_get_hands_out_a_copy_of_a_mapping_its_writer_still_completes() -> None:
    index = InMemorySpanIndex()
    gathering: dict[str, object] = {}
    index.put("m", context(1), gathering)  # type: ignore[arg-type]
    gathering["gen_ai.request.model"] = "gpt-5"  # completed in place, as a message span ends
    found = index.get("m")
    assert found is not None and dict(found.attributes) == {"gen_ai.request.model": "gpt-5"}
    found.attributes["gen_ai.request.model"] = "changed by a reader"  # type: ignore[index]
    again = index.get("m")
    assert again is not None and again.attributes == {"gen_ai.request.model": "gpt-5"}
