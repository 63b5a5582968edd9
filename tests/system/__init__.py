"""System tiers: the load test and the chaos test (drivers, their short tiers, and `scripts/load-test|chaos-test`)."""
