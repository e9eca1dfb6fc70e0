"""The one fork-safety rule of the package: after a fork, a child re-creates its process state.

Locks, connections, HTTP clients and threads of the parent are unusable in a child (a lock held
by another thread at fork time stays held forever; an HTTP pool's lock may be one of them).
Objects register a method that starts their per-process state afresh; the child calls it, and
the parent's objects are never touched. Nothing is locked *before* a fork, so `os.fork()` is
never held up by us.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_registered: list[tuple[weakref.ref[Any], Callable[[Any], None]]] = []
_module_resets: list[Callable[[], None]] = []
#: Size of the registry after its last pruning of owners that died.
_pruned_at = 64


def after_fork_in_child(owner: T, reinitialise: Callable[[T], None]) -> None:
    """Call `reinitialise(owner)` in every child forked from now on, while `owner` lives."""
    global _pruned_at
    _registered.append((weakref.ref(owner), reinitialise))  # list.append is atomic
    if len(_registered) > 2 * _pruned_at:  # owners come and go (clients in tests): forget dead
        _registered[:] = [entry for entry in list(_registered) if entry[0]() is not None]
        _pruned_at = max(64, len(_registered))


def module_state_after_fork(reset: Callable[[], None]) -> None:
    """Call `reset()` in every child forked from now on: for a module's own locks and state."""
    _module_resets.append(reset)


def _run_in_child() -> None:
    for reset in list(_module_resets):
        with contextlib.suppress(Exception):
            reset()
    alive = []
    for ref, reinitialise in list(_registered):
        owner = ref()
        if owner is None:
            continue
        alive.append((ref, reinitialise))
        with contextlib.suppress(Exception):  # a child that cannot reset one must still start
            reinitialise(owner)
    _registered[:] = alive


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_in_child)
