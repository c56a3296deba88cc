"""How a session's runner reaches its model: straight, with the provider key
from its Secret, or through the model proxy with a credential of its own.

With `[model_proxy].url` set, every endpoint a runner calls (the main one and
each wall-bounce provider) is seen through the proxy: its base_url is the
proxy's path for that provider, and its egress peer is the proxy (its CIDRs
or its pods' labels, on the URL's port) instead of the provider. The same
variables (`api_key_env`) carry the session's credential instead of a key,
so Codex's provider configuration does not change shape. One function
answers for the pod builder, the NetworkPolicy builder and the turn's
settings, so the three cannot disagree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

from codex_api.config import CodexMCPConfig, ModelEndpointConfig
from codex_api.model_credential import SessionRef, mint

from .wall_bounce import WallBouncePlan

E = TypeVar("E", bound=ModelEndpointConfig)


@dataclass(frozen=True)
class ModelAccess:
    endpoint: ModelEndpointConfig
    wall_bounce: WallBouncePlan | None
    # None: the runner reads each provider's key from its Secret.
    credential: str | None


def _through_proxy(endpoint: E, config: CodexMCPConfig) -> E:
    proxy = config.model_proxy
    return endpoint.model_copy(
        update={
            "base_url": proxy.base_url(endpoint.provider_id),
            "egress_cidrs": list(proxy.egress_cidrs),
            "egress_ports": [proxy.port],
            "in_cluster_namespace_labels": dict(proxy.namespace_labels),
            "in_cluster_pod_labels": dict(proxy.pod_labels),
        }
    )


def runner_endpoint(config: CodexMCPConfig) -> ModelEndpointConfig:
    """The model endpoint as a runner sees it (the proxy's path for it, when there is a proxy)."""
    endpoint = config.kubernetes.model_endpoint
    return _through_proxy(endpoint, config) if config.model_proxy.url else endpoint


def model_access(
    config: CodexMCPConfig, wall_bounce: WallBouncePlan | None, session: SessionRef, signing_key: bytes | None
) -> ModelAccess:
    endpoint = config.kubernetes.model_endpoint
    if not config.model_proxy.url:
        return ModelAccess(endpoint, wall_bounce, None)
    if signing_key is None:
        raise RuntimeError(
            f"[model_proxy].url is set but ${config.model_proxy.signing_key_env} was not given to the operator"
        )
    if wall_bounce is not None:
        providers = tuple(_through_proxy(p, config) for p in wall_bounce.providers)
        wall_bounce = dataclasses.replace(wall_bounce, providers=providers)
    return ModelAccess(runner_endpoint(config), wall_bounce, mint(signing_key, session))
