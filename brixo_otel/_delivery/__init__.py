"""Delivery: the durable outbox, the retry decision and the background worker."""
