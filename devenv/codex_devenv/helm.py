"""helm (built once from the Go module proxy, hack/build-helm.sh) and kustomize
(kubectl's) for the tests of the chart and the manifests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from codex_api.turn_request import generate_private_key, private_key_pem

from .assets import REPO_ROOT, ensure_binaries

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-helm.sh"
CHART_DIR = REPO_ROOT / "charts" / "codex-k8s-operator"
KIND_VALUES = CHART_DIR / "values-kind.yaml"
RELEASE = "codex"

__all__ = [
    "CHART_DIR",
    "KIND_VALUES",
    "RELEASE",
    "HelmError",
    "for_host_operator",
    "helm_binary",
    "kustomize",
    "lint",
    "notes",
    "run",
    "template",
    "template_text",
]


class HelmError(RuntimeError):
    """helm (or kustomize) failed; the message is its stderr."""


def helm_binary() -> Path:
    """The pinned helm, built on first use (a no-op on a warm cache); $CODEX_HELM overrides."""
    override = os.environ.get("CODEX_HELM")
    if override:
        return Path(override)
    path = Path(
        subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-path"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    if not path.is_file():
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=sys.stderr)
    return path


def run(*args: str, check: bool = True, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """helm ARGS: its caches go to a throwaway home; without `kubeconfig`, no cluster."""
    with tempfile.TemporaryDirectory(prefix="helm-home-") as home:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
            "KUBECONFIG": str(kubeconfig) if kubeconfig else f"{home}/no-kubeconfig",
        }
        out = subprocess.run(
            [str(helm_binary()), *args], capture_output=True, text=True, env=env, timeout=300
        )
    if check and out.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stderr.strip()}")
    return out


def _values_args(values: Mapping[str, Any] | None, values_files: Sequence[Path], work: Path) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["-f", str(path)]
    if values:
        file = work / "values.yaml"
        file.write_text(yaml.safe_dump(dict(values)))
        args += ["-f", str(file)]
    return args


def template_text(
    values: Mapping[str, Any] | None = None,
    *,
    values_files: Sequence[Path] = (),
    include_crds: bool = False,
    release: str = RELEASE,
) -> str:
    """`helm template` of the chart with these values (written to a file, after values_files)."""
    with tempfile.TemporaryDirectory(prefix="helm-values-") as work:
        args = ["template", release, str(CHART_DIR), *_values_args(values, values_files, Path(work))]
        if include_crds:
            args.append("--include-crds")
        return run(*args).stdout


def template(
    values: Mapping[str, Any] | None = None,
    *,
    values_files: Sequence[Path] = (),
    include_crds: bool = False,
    release: str = RELEASE,
) -> list[dict[str, Any]]:
    """The rendered objects; HelmError with helm's message when rendering fails."""
    text = template_text(values, values_files=values_files, include_crds=include_crds, release=release)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def config_toml(values: Mapping[str, Any] | None = None) -> str:
    """The TOML the chart renders into its ConfigMap for these values: what
    the operator and the gateway of an install read."""
    for doc in template(values):
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "codex-config":
            return str(doc["data"]["codex-mcp.toml"])
    raise HelmError("the chart rendered no codex-config ConfigMap")


# What the chart derives for an operator that runs as its own pod.
_IN_CLUSTER_WARM_KEYS = ("signing_key_file",)
_IN_CLUSTER_WARM_TABLES = (
    "kubernetes.warm_runners.operator_namespace_labels",
    "kubernetes.warm_runners.operator_pod_labels",
)


def for_host_operator(text: str, work: Path, operator_cidr: str) -> str:
    """The rendered configuration `text` for an operator run as a host process
    instead of the chart's pod. With warm runners on, the chart points the
    operator at its mounted key (/etc/codex-agent-key) and lets the operator's
    pods reach the agents by pod labels; a host process has neither. Here the
    key is a fresh file in `work` and the agents admit `operator_cidr` (the
    bridge address the host reaches the pods from). Everything else is as
    rendered; with warm runners off, `text` is returned unchanged."""
    warm = tomllib.loads(text).get("kubernetes", {}).get("warm_runners", {})
    if not warm.get("idle_seconds"):
        return text
    key_file = work / "agent-signing-key.pem"
    key_file.write_bytes(private_key_pem(generate_private_key()))
    out: list[str] = []
    section = ""
    for line in text.splitlines():
        header = re.match(r"^\[([^\]]+)\]\s*$", line)
        if header:
            section = header.group(1)
        if section in _IN_CLUSTER_WARM_TABLES or (
            section == "kubernetes.warm_runners" and line.split("=")[0].strip() in _IN_CLUSTER_WARM_KEYS
        ):
            continue
        out.append(line)
        if header and section == "kubernetes.warm_runners":
            out += [
                f"signing_key_file = {json.dumps(str(key_file))}",
                f"operator_cidrs = [{json.dumps(operator_cidr)}]",
            ]
    return "\n".join(out) + "\n"


def notes(values: Mapping[str, Any] | None = None, *, values_files: Sequence[Path] = ()) -> str:
    """templates/NOTES.txt as `helm install` would print it, rendered without a cluster (a
    copy of the chart with the notes as a named template that a ConfigMap includes)."""
    with tempfile.TemporaryDirectory(prefix="helm-notes-") as work:
        chart = Path(work) / CHART_DIR.name
        shutil.copytree(CHART_DIR, chart)
        text = (chart / "templates" / "NOTES.txt").read_text()
        (chart / "templates" / "NOTES.txt").unlink()
        (chart / "templates" / "_notes.tpl").write_text(
            '{{- define "test.notes" -}}\n' + text + "{{- end -}}\n"
        )
        (chart / "templates" / "notes-test.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-test\n"
            'data:\n  notes: {{ include "test.notes" . | quote }}\n'
        )
        args = ["template", RELEASE, str(chart), "--show-only", "templates/notes-test.yaml"]
        args += _values_args(values, values_files, Path(work))
        return str(yaml.safe_load(run(*args).stdout)["data"]["notes"])


def lint(values: Mapping[str, Any] | None = None, *, strict: bool = True) -> subprocess.CompletedProcess[str]:
    """`helm lint [--strict]` of the chart; the CompletedProcess (not raising) so tests can read it."""
    with tempfile.TemporaryDirectory(prefix="helm-values-") as work:
        args = ["lint", str(CHART_DIR), *_values_args(values, (), Path(work))]
        if strict:
            args.append("--strict")
        return run(*args, check=False)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` with the pinned kubectl (its built-in kustomize)."""
    out = subprocess.run(
        [str(ensure_binaries() / "kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise HelmError(f"kubectl kustomize {directory} failed:\n{out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


# What `make kind-certs` generates into the kind overlay (never committed): the
# script that makes each, and where.
KIND_GENERATED = (
    ("webhook-cert.sh", "webhook-tls"),
    ("redis-password.sh", "redis-auth/password"),
    ("redis-password.sh", "model-proxy/signing-key"),
    ("agent-key.sh", "agent-key/private.pem"),
)


def manifests_without_generated_files(dest: Path) -> Path:
    """A copy of manifests/ at `dest` without what `make kind-certs` made in this checkout."""
    shutil.copytree(
        REPO_ROOT / "manifests",
        dest,
        ignore=shutil.ignore_patterns("*.crt", "*.key", "*.pem", "password", "signing-key"),
    )
    return dest


def manifests_with_generated_files(dest: Path) -> Path:
    """A copy of manifests/ at `dest` whose kind overlay has the files `make kind-certs`
    makes (fresh ones, not this checkout's); returns `dest`."""
    manifests_without_generated_files(dest)
    kind = dest / "overlays" / "kind"
    for script, out in KIND_GENERATED:
        subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / script), str(kind / out)], check=True, capture_output=True
        )
    return dest
