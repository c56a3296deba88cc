"""codex_operator."""
