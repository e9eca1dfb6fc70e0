"""Correlation: from a message id to the span context (and dimensions) of the message it names."""
