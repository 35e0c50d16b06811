"""Callout: the auth callout pipeline (handler) and its NATS subscription (service)."""
