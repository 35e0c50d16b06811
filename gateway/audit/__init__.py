"""Audit: the durable record of every decision, its store and its writer."""
