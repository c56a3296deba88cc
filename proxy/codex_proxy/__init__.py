"""codex_proxy: the model proxy, the only holder of provider keys."""
