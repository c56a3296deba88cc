"""codex_api."""
