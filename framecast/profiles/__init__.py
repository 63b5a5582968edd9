"""Built-in bindings profiles: `default.toml` (real weights) and `tiny.toml` (offline test models)."""
