"""A finished turn's usage and cost from the model proxy's meter.

With `[model_proxy].url` set, the runner's own usage report is not evidence:
it is computed inside the pod, from files in the Codex home that the model's
commands can rewrite. The proxy counted every model request from the
provider's own answer (codex_proxy.meter), so when the turn ends the operator
asks it (`GET /v1/usage` with the session's credential, minted here with the
same key) and builds `status.usage` / `status.cost` from that, through
codex_operator.cost like every other cost. The cost metrics count what the
status says, so they follow.

When the proxy cannot answer, the runner's report is kept and marked: the
`UsageMetered` condition is False with the reason, and a Warning Event says
the figure is the runner's unverified report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import ValidationError

from codex_api.config import CodexMCPConfig, CostConfig
from codex_api.metered import MeteredUsage
from codex_api.model_credential import SessionRef, mint
from codex_api.session import Cost, Usage

from . import cost

log = logging.getLogger("codex_operator.metered")

CONDITION = "UsageMetered"
ATTEMPTS = 3
TIMEOUT_SECONDS = 2.0
PAUSE_SECONDS = 0.3


@dataclass(frozen=True)
class Unavailable:
    """Why the proxy's figure could not be had (safe to show: no credential in it)."""

    reason: str


async def fetch(
    config: CodexMCPConfig,
    signing_key: bytes,
    ref: SessionRef,
    *,
    attempts: int = ATTEMPTS,
    timeout: float = TIMEOUT_SECONDS,
    pause: float = PAUSE_SECONDS,
) -> MeteredUsage | Unavailable:
    """The session's metered usage, asked of the proxy a few times (short timeouts:
    a reconcile waits for this)."""
    url = f"{config.model_proxy.url}/v1/usage"
    headers = {"Authorization": f"Bearer {mint(signing_key, ref)}"}
    why = "not asked"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(pause * attempt)
            try:
                async with http.get(url, headers=headers) as resp:
                    if resp.status == 200:
                        return _answer(ref, await resp.json(content_type=None))
                    why = f"the model proxy answered {resp.status}"
                    if resp.status in (400, 401, 403, 404):
                        break  # asking again gets the same answer (401: not the proxy's signing key)
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                why = f"the model proxy did not answer ({type(err).__name__})"
    log.warning(
        "metered usage of %s/%s unavailable: %s",
        ref.namespace,
        ref.name,
        why,
        extra={"reason": "UsageUnmetered"},
    )
    return Unavailable(why)


def _answer(ref: SessionRef, body: Any) -> MeteredUsage | Unavailable:
    try:
        metered = MeteredUsage.model_validate(body)
    except ValidationError:
        return Unavailable("the model proxy's answer is not a usage report")
    if (metered.namespace, metered.name, metered.uid) != (ref.namespace, ref.name, ref.uid):
        return Unavailable("the model proxy answered for another session")
    return metered


def metered_cost(
    metered: MeteredUsage,
    *,
    wall_bounce: bool,
    model: str,
    prices: CostConfig,
    estimate: Cost | None,
    provider_models: Mapping[str, str],
) -> Cost:
    """status.cost from the metered usage, shaped as the runner's report would be:
    one entry for a plain turn, one per provider id for wall-bounce (each provider
    in the estimate kept, with 0 spent if it was never asked)."""
    if not wall_bounce and len(metered.providers) <= 1:
        priced = metered.providers[0].model if metered.providers else None
        return cost.actual(metered.usage, priced or model, prices, estimate_=estimate)
    runs = [
        (p.provider, p.usage, p.model or provider_models.get(p.provider) or model) for p in metered.providers
    ]
    asked = {p.provider for p in metered.providers}
    runs += [
        (p.provider, Usage(), provider_models.get(p.provider) or model)
        for p in (estimate.providers if estimate else [])
        if p.provider not in asked
    ]
    return cost.actual_providers(runs, prices, estimate_=estimate)


def choose(
    reported: Mapping[str, Any],
    metered: MeteredUsage | Unavailable,
    *,
    wall_bounce: bool,
    model: str,
    prices: CostConfig,
    estimate: Cost | None,
    provider_models: Mapping[str, str],
) -> tuple[dict[str, Any], tuple[str, str, str, str]]:
    """The turn's status fields with usage and cost from the meter (the runner's
    report is dropped), or, without the meter's answer, the runner's as they are;
    and the UsageMetered condition that says which."""
    fields = dict(reported)
    if isinstance(metered, Unavailable):
        if "usage" in fields:
            message = f"{metered.reason}: usage and cost are the runner's own report, unverified"
        else:
            message = f"{metered.reason}: no usage recorded"
        return fields, (CONDITION, "False", "RunnerReport", message)
    fields["usage"] = metered.usage.to_k8s()
    fields["cost"] = metered_cost(
        metered,
        wall_bounce=wall_bounce,
        model=model,
        prices=prices,
        estimate=estimate,
        provider_models=provider_models,
    ).to_k8s()
    message = f"usage and cost as the model proxy metered them ({metered.requests} model requests)"
    return fields, (CONDITION, "True", "MeteredByProxy", message)
