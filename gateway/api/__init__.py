"""The HTTP API (FastAPI): audit queries and health."""
