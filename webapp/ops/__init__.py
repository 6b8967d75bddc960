"""Running the service: request ids, metrics, per-request reports and logs,
session-event logging, and the health check."""
