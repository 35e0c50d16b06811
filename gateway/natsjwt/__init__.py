"""NATS JWTs and keys: nkeys (ed25519, curve25519), the JWT codec, auth callout claims, xkey.

Pure functions and values; nothing here does I/O.
"""
