"""The OpenTelemetry record of a signal: the `brixo.feedback` span, its log event, the counters."""
