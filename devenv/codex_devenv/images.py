"""The project's container images for the test node, without a registry.

`ensure_images()` runs hack/build-images.sh (once per process; the script
itself skips every step whose inputs did not change) and returns the OCI
archives it saved in the cache, by name. `load_into(node)` imports them into
a TestNode's containerd (namespace k8s.io), so pods resolve
`localhost/codex-runner:<version>` with `imagePullPolicy: Never`.

Images are built with podman (runc) on a local base image made from a
debootstrap bookworm rootfs; see the script's header for the steps and the
cache layout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .assets import REPO_ROOT

if TYPE_CHECKING:
    from .node import TestNode

BUILD_IMAGES_SCRIPT = REPO_ROOT / "hack" / "build-images.sh"
DEFAULT_IMAGES = ("runner", "operator")


def image_version() -> str:
    """The tag of the project's images: the version in pyproject.toml."""
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def image_ref(name: str) -> str:
    """`runner` -> `localhost/codex-runner:0.1.0`, the name pods use."""
    return f"localhost/codex-{name}:{image_version()}"


RUNNER_IMAGE = image_ref("runner")
OPERATOR_IMAGE = image_ref("operator")

_lock = threading.Lock()
_built: dict[tuple[str, ...], dict[str, Path]] = {}


def build_problems() -> list[str]:
    """Why this host cannot build the images (empty list: it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (debootstrap and podman's system storage need root)")
    return problems


def ensure_images(names: Sequence[str] = DEFAULT_IMAGES) -> dict[str, Path]:
    """Build (or find cached) the images and return {name: OCI archive}.

    The script runs at most once per process for a given set of names. Its
    progress and step timings go to stderr.
    """
    key = tuple(sorted(names))
    with _lock:
        if key not in _built:
            problems = build_problems()
            if problems:
                raise RuntimeError("cannot build the images here: " + "; ".join(problems))
            t0 = time.monotonic()
            proc = subprocess.run(
                ["bash", str(BUILD_IMAGES_SCRIPT)],
                stdout=subprocess.PIPE,
                stderr=sys.stderr,
                text=True,
                env={**os.environ, "IMAGES": " ".join(key)},
                cwd=REPO_ROOT,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"hack/build-images.sh failed with exit code {proc.returncode}")
            archives = parse_script_output(proc.stdout)
            missing = set(key) - set(archives)
            if missing:
                raise RuntimeError(f"hack/build-images.sh produced no archive for {sorted(missing)}")
            print(f"[images] ready in {time.monotonic() - t0:.1f}s: {archives}", file=sys.stderr)
            _built[key] = archives
        return dict(_built[key])


def parse_script_output(stdout: str) -> dict[str, Path]:
    """The script's stdout: one `NAME<TAB>ARCHIVE` line per image."""
    out: dict[str, Path] = {}
    for line in stdout.splitlines():
        if "\t" in line:
            name, path = line.split("\t", 1)
            out[name.strip()] = Path(path.strip())
    return out


def archive_manifest(archive: Path) -> tuple[str, str | None]:
    """(manifest digest, reference name) of the single image in an OCI archive."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise RuntimeError(f"{archive}: no index.json")
        index = json.load(member)
    (manifest,) = index["manifests"]
    annotations = manifest.get("annotations") or {}
    name = annotations.get("io.containerd.image.name") or annotations.get("org.opencontainers.image.ref.name")
    return str(manifest["digest"]), name


def node_images(node: TestNode) -> dict[str, str]:
    """{reference: target digest} of every image in the node's containerd (k8s.io namespace)."""
    out: dict[str, str] = {}
    for line in node.ctr("images", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            out[fields[0]] = fields[2]
    return out


def load_into(node: TestNode, names: Iterable[str] = DEFAULT_IMAGES) -> dict[str, str]:
    """Import the images into the node's containerd; returns {name: reference}.

    An image already present with the same manifest digest is not imported
    again. If an archive's import does not carry the full name (a bare tag
    as its ref.name), the imported manifest is tagged with it.
    """
    archives = ensure_images(tuple(names))
    refs: dict[str, str] = {}
    for name, archive in archives.items():
        ref = image_ref(name)
        digest, _ = archive_manifest(archive)
        if node_images(node).get(ref) != digest:
            seconds = node.import_image(archive)
            print(f"[images] imported {ref} into {node.name} in {seconds:.1f}s", file=sys.stderr)
            present = node_images(node)
            if present.get(ref) != digest:
                source = next((r for r, d in present.items() if d == digest), None)
                if source is None:
                    raise RuntimeError(f"importing {archive} left no image with manifest {digest}")
                node.ctr("images", "tag", "--force", source, ref)
        if node_images(node).get(ref) != digest:
            raise RuntimeError(f"{ref} is not in {node.name}'s containerd after the import")
        refs[name] = ref
    return refs
