"""The CRDs come from the pydantic models, and the committed YAML is current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from codex_api.approval import ApprovalRequestSpec
from codex_api.common import KubeModel
from codex_api.session import CodexSessionSpec, CodexSessionStatus
from codex_devenv.generate import crds

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("out_dir", crds.OUT_DIRS)
def test_committed_crds_are_current(out_dir: str) -> None:
    stale = crds.stale_files(REPO / out_dir)
    assert stale == [], f"run `make generate`: stale {stale} in {out_dir}"


def test_a_missing_or_edited_crd_is_stale(tmp_path: Path) -> None:
    assert crds.stale_files(tmp_path) == list(crds.rendered_files())
    for name, text in crds.rendered_files().items():
        (tmp_path / name).write_text(text)
    assert crds.stale_files(tmp_path) == []
    victim = tmp_path / crds.file_name(crds.RESOURCES[0])
    edited = victim.read_text().replace("maxLength: 65536", "maxLength: 1")
    assert edited != victim.read_text()
    victim.write_text(edited)
    assert crds.stale_files(tmp_path) == [victim.name]


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if "items" in node:
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("resource", crds.RESOURCES, ids=lambda r: r.kind)
def test_schema_is_strict_and_structural(resource: crds.Resource) -> None:
    doc = yaml.safe_load(crds.render(resource))
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert doc["spec"]["names"]["categories"] == ["codex"]
    root = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(root["properties"]["spec"], "spec") + _walk(
        root["properties"]["status"], "status"
    ):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert "type" in node, path
        if node["type"] == "string":
            assert "enum" in node or "maxLength" in node, path
        if node["type"] == "array":
            assert "maxItems" in node, path
        if not path.endswith(("[]", "{}")):
            assert node.get("description"), path


def test_printer_columns_for_sessions() -> None:
    doc = yaml.safe_load(crds.render(crds.RESOURCES[0]))
    columns = [
        c["name"] for c in doc["spec"]["versions"][0]["additionalPrinterColumns"] if "priority" not in c
    ]
    assert columns == ["Phase", "Sandbox", "Risk", "Model", "Age"]


def test_generator_refuses_unbounded_strings() -> None:
    class Bad(KubeModel):
        """A model that forgets a bound."""

        note: str = Field(description="no maxLength")

    with pytest.raises(crds.SchemaRuleError, match=r"bad\.note: string without maxLength"):
        crds.structural_schema(Bad, "bad")


def test_generator_refuses_undescribed_fields() -> None:
    class Bad(KubeModel):
        """A model that forgets a description."""

        count: int = 0

    with pytest.raises(crds.SchemaRuleError, match=r"bad\.count: no description"):
        crds.structural_schema(Bad, "bad")


def test_generator_refuses_real_unions() -> None:
    class Bad(BaseModel):
        """A union is not structural."""

        value: int | str = Field(description="either")

    with pytest.raises(crds.SchemaRuleError, match="unions"):
        crds.structural_schema(Bad, "bad")


def test_models_accept_what_the_schema_accepts() -> None:
    spec = CodexSessionSpec.model_validate({"prompt": "hi", "sandbox": "isolated", "fullAuto": True})
    assert spec.full_auto is True and spec.to_k8s()["fullAuto"] is True
    status = CodexSessionStatus.model_validate({"phase": "Running", "riskLevel": "medium"})
    assert status.to_k8s() == {"phase": "Running", "riskLevel": "medium", "conditions": []}
    with pytest.raises(ValueError):
        ApprovalRequestSpec.model_validate({"sessionRef": "x"})
