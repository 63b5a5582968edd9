"""Session-wide fixtures that start the backing services the scale-out tests need (each in its own module)."""

pytest_plugins = ["tests.postgres_server", "tests.s3_server"]
