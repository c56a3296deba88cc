"""codex_kubectl: the `kubectl codex` plugin (console script `kubectl-codex`)."""
