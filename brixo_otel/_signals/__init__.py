"""Feedback signals: the validated model, the durable outbox and the background delivery."""
