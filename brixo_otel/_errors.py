"""Errors raised at configuration time. Run-time problems are logged, never raised."""

from __future__ import annotations


class ConfigurationError(ValueError):
    """An explicit argument to `configure()` or to an exporter cannot work as given."""
