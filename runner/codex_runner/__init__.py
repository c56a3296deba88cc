"""codex_runner."""
