"""codex_devenv."""
