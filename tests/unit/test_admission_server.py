"""The identity webhook's AdmissionReview answers (codex_operator.admission_server)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from codex_operator.admission_server import json_patch, review_response


def _review(**request: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", **request},
    }


def test_changes_become_a_json_patch_and_the_request_is_always_allowed() -> None:
    out = review_response(_review(object={"spec": {"decision": "Approved"}}), lambda r: {"decidedBy": "bob"})
    response = out["response"]
    assert out["kind"] == "AdmissionReview" and response["uid"] == "u-1" and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == [
        {"op": "add", "path": "/spec/decidedBy", "value": "bob"}
    ]


def test_no_changes_no_patch() -> None:
    response = review_response(_review(object={"spec": {}}), lambda r: {})["response"]
    assert response == {"uid": "u-1", "allowed": True}


def test_a_missing_spec_is_created_and_keys_are_escaped() -> None:
    assert json_patch({"a/b~c": 1}, spec_present=False) == [
        {"op": "add", "path": "/spec", "value": {}},
        {"op": "add", "path": "/spec/a~1b~0c", "value": 1},
    ]


@pytest.mark.parametrize(
    "review",
    [{}, {"request": None}, {"request": {"uid": 7}}, {"request": "x"}, {"request": {}}],
)
def test_malformed_reviews_are_refused(review: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="AdmissionReview"):
        review_response(review, lambda r: {"decidedBy": "bob"})
