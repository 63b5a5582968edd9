"""GPU workers: claim jobs, heartbeat, and drive an engine process that owns torch."""
