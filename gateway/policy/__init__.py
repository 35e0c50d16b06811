"""Policy: load policy files, decide a scope for an identity, encode ids into subjects."""
