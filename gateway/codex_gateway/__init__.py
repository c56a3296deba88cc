"""codex_gateway."""
