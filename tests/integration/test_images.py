"""The real images on the real node: hack/build-images.sh builds
localhost/codex-runner and localhost/codex-operator (podman, no registry),
devenv's images.load_into imports them into the test node's containerd, and
pods run them with the runner's securityContext (non-root uid 10001,
read-only root filesystem, no capabilities, RuntimeDefault seccomp, an
emptyDir at /tmp) under PodSecurity `restricted`.

Checked from `kubectl logs` of each pod: the user, the pinned Codex CLI and
the entry points work, the root filesystem refuses writes, and the final
image holds no compiler, build tool or pip.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from codex_devenv.assets import pinned_versions
from codex_devenv.node import hardened_test_pod

# A cold build (debootstrap + two images) takes about two minutes on 2 cores.
pytestmark = pytest.mark.timeout(900)

RUNNER_UID = 10001

# Build tools that must not be in a final image (PATH lookups), and Debian
# packages that would bring them in.
BUILD_TOOLS = ("gcc", "cc", "c++", "g++", "cpp", "clang", "make", "ld", "as", "pip", "pip3")
BUILD_PACKAGES = (
    r"^(gcc|g\+\+|cpp|clang)(-[0-9.]+)?$|^(binutils.*|make|libc6-dev|build-essential|python3-pip"
    r"|python3-pip-whl|python3-setuptools-whl|python3(\.[0-9]+)?-venv)$"
)

# Shared by both images: identity, read-only root, no build tools.
COMMON_CHECKS = rf"""
echo "uid=$(id -u) gid=$(id -g)"
if touch /usr/x 2>/dev/null; then echo "rootfs: writable"; else echo "rootfs: read-only"; fi
mkdir -p "$HOME" && echo ok > "$HOME/probe" && echo "tmp: writable"
for t in {" ".join(BUILD_TOOLS)}; do
  if command -v "$t" >/dev/null 2>&1; then echo "tool $t: present at $(command -v "$t")"; else echo "tool $t: absent"; fi
done
python3 -m pip --version >/dev/null 2>&1 && echo "python pip: present" || echo "python pip: absent"
python3 -c 'import ensurepip' >/dev/null 2>&1 && echo "ensurepip: present" || echo "ensurepip: absent"
echo "build packages: [$(dpkg-query -W -f '${{Package}}\n' | grep -E '{BUILD_PACKAGES}' | tr '\n' ' ')]"
python3 -c 'import codex_api' >/dev/null 2>&1 && echo "product: present" || echo "product: absent"
python3 -c 'import codex_devenv' >/dev/null 2>&1 && echo "harness: present" || echo "harness: absent"
echo "find: $(find /opt/codex -name 'codex_api*' -maxdepth 6 2>/dev/null | head -1)"
echo "harness files: [$(find / -xdev \( -name 'codex_devenv*' -o -name 'fake_model*' -o -name 'codex-devenv' \) 2>/dev/null | tr '\n' ' ')]"
"""


def run_to_completion(
    cp: Any, ns: str, pod: dict[str, Any], timeout: float = 120
) -> tuple[dict[str, Any], str]:
    """Create the pod, wait for Succeeded/Failed, return (pod, logs)."""
    name = pod["metadata"]["name"]
    t0 = time.monotonic()
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(pod))
    deadline = t0 + timeout
    current: dict[str, Any] = {}
    while time.monotonic() < deadline:
        current = json.loads(cp.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)
        if current.get("status", {}).get("phase") in {"Succeeded", "Failed"}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(
            f"pod {ns}/{name} did not finish in {timeout}s: {json.dumps(current.get('status'))}"
        )
    print(f"\n[images] {name}: create -> {current['status']['phase']} in {time.monotonic() - t0:.2f}s")
    logs = cp.kubectl("logs", "-n", ns, name).stdout
    return current, logs


def assert_hardened(pod: dict[str, Any], logs: str) -> None:
    assert pod["status"]["phase"] == "Succeeded", logs
    (status,) = pod["status"]["containerStatuses"]
    assert status["containerID"].startswith("containerd://")
    assert f"uid={RUNNER_UID} gid={RUNNER_UID}" in logs
    assert "rootfs: read-only" in logs
    assert "tmp: writable" in logs
    for tool in BUILD_TOOLS:
        assert f"tool {tool}: absent" in logs, logs
    assert "python pip: absent" in logs
    assert "ensurepip: absent" in logs
    assert "build packages: []" in logs, logs
    # Product and harness apart: no control-plane harness, no fake model in a product image.
    # (the same probes find the product, so an absent tool cannot pass for an absent harness)
    assert "product: present" in logs and "find: /opt/codex/" in logs, logs
    assert "harness: absent" in logs, logs
    assert "harness files: []" in logs, logs


def test_images_are_in_the_nodes_containerd(node_cluster: Any) -> None:
    from codex_devenv.images import OPERATOR_IMAGE, RUNNER_IMAGE

    _, node, refs = node_cluster
    assert refs == {"runner": RUNNER_IMAGE, "operator": OPERATOR_IMAGE}
    assert RUNNER_IMAGE == "localhost/codex-runner:0.1.0"
    listed = node.images()
    assert RUNNER_IMAGE in listed
    assert OPERATOR_IMAGE in listed


def test_runner_image_runs_codex_under_the_runner_security_context(node_cluster: Any, node_ns: str) -> None:
    from codex_devenv.images import RUNNER_IMAGE

    cp, _, _ = node_cluster
    script = (
        COMMON_CHECKS
        + r"""
echo "codex: $(codex --version 2>/dev/null)"
echo "runner: $(codex-runner --help 2>&1 | head -1)"
echo "path: $PATH"
echo "codex at: $(command -v codex)"
"""
    )
    pod, logs = run_to_completion(
        cp,
        node_ns,
        hardened_test_pod("runner-image", RUNNER_IMAGE, script, uid=RUNNER_UID, container_name="main"),
    )
    print(logs)
    assert_hardened(pod, logs)
    assert f"codex: codex-cli {pinned_versions()['CODEX_VERSION']}" in logs
    assert "runner: usage: codex-runner" in logs
    assert "codex at: /usr/local/bin/codex" in logs
    assert pod["spec"]["containers"][0]["image"] == RUNNER_IMAGE


def test_operator_image_runs_under_the_same_security_context(node_cluster: Any, node_ns: str) -> None:
    from codex_devenv.images import OPERATOR_IMAGE

    cp, _, _ = node_cluster
    script = COMMON_CHECKS + 'echo "operator: $(codex-operator --help 2>&1 | head -1)"\n'
    pod, logs = run_to_completion(
        cp,
        node_ns,
        hardened_test_pod("operator-image", OPERATOR_IMAGE, script, uid=RUNNER_UID, container_name="main"),
    )
    print(logs)
    assert_hardened(pod, logs)
    assert "operator: usage: codex-operator" in logs


def test_image_entrypoints_and_users(node_cluster: Any) -> None:
    """The image configs as the kubelet sees them: non-root numeric user, the documented entrypoints."""
    from codex_devenv.images import ensure_images

    archives = ensure_images()
    configs = {name: _image_config(path) for name, path in archives.items()}
    assert configs["runner"]["User"] == f"{RUNNER_UID}:{RUNNER_UID}"
    assert configs["runner"]["Entrypoint"] == ["codex-runner"]
    assert configs["runner"]["WorkingDir"] == "/workspace"
    assert configs["operator"]["User"] == f"{RUNNER_UID}:{RUNNER_UID}"
    assert configs["operator"]["Entrypoint"][0] == "codex-operator"
    for config in configs.values():
        env = dict(e.split("=", 1) for e in config["Env"])
        assert env["PATH"].startswith("/opt/codex/bin:")


def _image_config(archive: Path) -> dict[str, Any]:
    import tarfile

    with tarfile.open(archive) as tar:

        def blob(digest: str) -> Any:
            member = tar.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")
            assert member is not None
            return json.load(member)

        index_file = tar.extractfile("index.json")
        assert index_file is not None
        (manifest_desc,) = json.load(index_file)["manifests"]
        manifest = blob(manifest_desc["digest"])
        return dict(blob(manifest["config"]["digest"])["config"])
