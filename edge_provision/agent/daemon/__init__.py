"""agent/daemon."""
