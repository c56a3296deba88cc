"""Typed status: the one way the operator writes, and every reader reads, the
status of a CodexSession or an ApprovalRequest.

Writes are strict: a patch goes through the pydantic model first, so a
misspelt key or an out-of-range value fails in the operator (and in its unit
tests) instead of being pruned by the API server without a word. Reads are
lenient: the object comes from the API server, which validated it against the
CRD generated from the same model, but a newer operator may have written a
field this reader does not know yet; unknown keys are dropped and a field that
does not parse is left unset rather than failing the whole read.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .approval import ApprovalRequestStatus
from .common import KubeModel
from .session import CodexSessionStatus

M = TypeVar("M", bound=KubeModel)


def _model_of(annotation: Any) -> type[KubeModel] | None:
    """The KubeModel inside ``X | None`` or ``list[X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, KubeModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


@cache
def _fields(model: type[BaseModel]) -> dict[str, type[KubeModel] | None]:
    """Wire key -> nested model (or None) of every field of ``model``; computed once per model."""
    return {(field.alias or name): _model_of(field.annotation) for name, field in model.model_fields.items()}


def _known(model: type[BaseModel], data: Any) -> Any:
    """``data`` without the keys ``model`` does not declare, recursively."""
    if not isinstance(data, Mapping):
        return data
    fields = _fields(model)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            continue
        inner = fields[key]
        if inner is not None:
            value = [_known(inner, v) for v in value] if isinstance(value, list) else _known(inner, value)
        out[key] = value
    return out


def _read(model: type[M], obj: Mapping[str, Any] | None) -> M:
    raw = (obj or {}).get("status") or {}
    try:  # what the API server stored normally matches the model as it is
        return model.model_validate(raw)
    except ValidationError:
        pass
    known = _known(model, raw)
    try:
        return model.model_validate(known)
    except ValidationError as err:
        bad = {e["loc"][0] for e in err.errors() if e.get("loc")}
        return model.model_validate({k: v for k, v in known.items() if k not in bad})


def session_status(obj: Mapping[str, Any] | None) -> CodexSessionStatus:
    """The status of a CodexSession object (an empty status when it has none)."""
    return _read(CodexSessionStatus, obj)


def approval_status(obj: Mapping[str, Any] | None) -> ApprovalRequestStatus:
    """The status of an ApprovalRequest object (an empty status when it has none)."""
    return _read(ApprovalRequestStatus, obj)


def phase_of(obj: Mapping[str, Any] | None) -> str | None:
    """Only ``status.phase`` of a CodexSession or ApprovalRequest: the hot path
    (gauges every few seconds, resync over every object) reads nothing else."""
    phase = ((obj or {}).get("status") or {}).get("phase")
    return phase if isinstance(phase, str) else None


def _patch(model: type[KubeModel], fields: Mapping[str, Any]) -> dict[str, Any]:
    # exclude_unset keeps an explicit None: in a merge patch that removes the field.
    return model.model_validate(dict(fields)).model_dump(mode="json", by_alias=True, exclude_unset=True)


def session_status_patch(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch of CodexSession status; raises ValidationError on a key or value the CRD refuses."""
    return _patch(CodexSessionStatus, fields)


def approval_status_patch(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch of ApprovalRequest status; raises ValidationError on a key or value the CRD refuses."""
    return _patch(ApprovalRequestStatus, fields)
