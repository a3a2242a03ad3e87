"""agent/renew."""
