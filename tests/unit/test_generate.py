"""`make generate` (codex_devenv.generate): one command owns every file generated
from the models, `--check` catches a stale one, and no runtime package carries
a generator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from codex_devenv import generate
from codex_devenv.assets import REPO_ROOT
from codex_devenv.generate.__main__ import main

RUNTIME_PACKAGES = (
    "api/codex_api",
    "operator/codex_operator",
    "runner/codex_runner",
    "gateway/codex_gateway",
)


def test_every_generated_file_is_current() -> None:
    stale = [str(p.relative_to(REPO_ROOT)) for p in generate.stale()]
    assert stale == [], "run `make generate`"
    assert main(["--check"]) == 0


def test_it_owns_the_crds_the_policies_the_schema_and_the_docs_tables() -> None:
    owned = {str(p.relative_to(REPO_ROOT)) for p in generate.outputs()}
    assert {
        "crds/codex.techsapo.io_codexsessions.yaml",
        "charts/codex-k8s-operator/crds/codex.techsapo.io_approvalrequests.yaml",
        "manifests/base/crds/codex.techsapo.io_codexsessions.yaml",
        "manifests/base/admission.yaml",
        "charts/codex-k8s-operator/files/admission.yaml",
        "charts/codex-k8s-operator/values.schema.json",
        "docs/configuration.md",
        "docs/security.md",
    } <= owned


def test_check_names_a_stale_file_and_write_repairs_only_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {tmp_path / "a.yaml": "a: 1\n", tmp_path / "sub" / "b.md": "# b\n"}
    assert generate.stale(files) == list(files)
    assert generate.write(files) == list(files)
    assert generate.stale(files) == []
    (tmp_path / "a.yaml").write_text("a: 2\n")
    assert generate.stale(files) == [tmp_path / "a.yaml"]
    assert generate.write(files) == [tmp_path / "a.yaml"]
    assert (tmp_path / "a.yaml").read_text() == "a: 1\n"


def test_check_fails_and_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = REPO_ROOT / "docs" / "configuration.md"
    monkeypatch.setattr(generate, "outputs", lambda: {victim: "not what is committed\n"})
    assert main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "stale: docs/configuration.md" in err and "make generate" in err


def test_two_generators_writing_one_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    path = REPO_ROOT / "x"
    monkeypatch.setattr(generate, "GENERATORS", (lambda: {path: "1"}, lambda: {path: "2"}))
    with pytest.raises(RuntimeError, match="generated twice"):
        generate.outputs()


@pytest.mark.parametrize("package", RUNTIME_PACKAGES)
def test_no_runtime_package_holds_a_generator(package: str) -> None:
    """A product package imports nothing of the harness and has no script of its
    own besides its command line: generators are the build's, and product images
    carry no build tools."""
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        name = path.relative_to(REPO_ROOT)
        tree = ast.parse(path.read_text())
        imported = {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not any(m.split(".")[0] == "codex_devenv" for m in imported), name
        if path.stem not in ("cli", "__main__"):
            assert '__name__ == "__main__"' not in path.read_text(), f"{name} is a script: a generator?"
