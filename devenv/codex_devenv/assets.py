"""Where the control-plane binaries are, building them on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_ENV = REPO_ROOT / "hack" / "node" / "node.env"  # the test node's host resources
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a shell env file (hack/versions.env, hack/node/node.env)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def pinned_versions() -> dict[str, str]:
    return read_env_file(VERSIONS_FILE)


def bin_dir() -> Path:
    """The cache directory for the pinned versions (it may not be built yet)."""
    override = os.environ.get("CODEX_K8S_BIN_DIR")
    if override:
        return Path(override)
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def ensure_binaries() -> Path:
    """Build whatever is missing (a no-op on a warm cache) and return the bin dir."""
    directory = bin_dir()
    if all((directory / b).is_file() for b in BINARIES):
        return directory
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=sys.stderr)
    return directory
