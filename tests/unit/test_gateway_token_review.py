"""TokenReview audiences: a token counts only when the API server confirms one
of the gateway's audiences in status.audiences, and a gateway without an
audience does not start unless told explicitly to accept any. The API server
is stubbed here (its answers are the client library's real models); the
integration test with real ServiceAccount tokens is
tests/integration/test_gateway_operations.py::test_token_review_accepts_cluster_tokens_for_the_audience.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from codex_gateway.auth import NoAudience, TokenReviewer, VerifierChain
from codex_gateway.cli import main, parser, token_review_problem

TOKEN = "eyJhbGciOiJSUzI1NiJ9.a-service-account-token"
ROBOT = "system:serviceaccount:apps:robot"


class StubApi:
    """The API server's TokenReview endpoint: records the requests, answers `status`."""

    def __init__(self, status: k8s.V1TokenReviewStatus | None = None, error: Exception | None = None) -> None:
        self.status = status
        self.error = error
        self.requests: list[Any] = []

    async def create_token_review(self, body: Any) -> k8s.V1TokenReview:
        self.requests.append(body)
        if self.error is not None:
            raise self.error
        return k8s.V1TokenReview(spec=body.spec, status=self.status)


def answer(audiences: list[str] | None, authenticated: bool = True) -> k8s.V1TokenReviewStatus:
    return k8s.V1TokenReviewStatus(
        authenticated=authenticated,
        audiences=audiences,
        user=k8s.V1UserInfo(username=ROBOT, groups=["system:serviceaccounts", "codex-admins"]),
    )


def reviewer(api: StubApi, audiences: tuple[str, ...] = ("codex-gateway",), **kwargs: Any) -> TokenReviewer:
    return TokenReviewer(None, audiences, api=api, **kwargs)


async def test_a_confirmed_audience_is_an_identity() -> None:
    api = StubApi(answer(["codex-gateway"]))
    found = await reviewer(api, ("codex-gateway", "codex-gateway-2")).verify_token(TOKEN)
    assert found is not None and found.subject == ROBOT
    assert found.claims == {"groups": ["system:serviceaccounts", "codex-admins"]}
    (request,) = api.requests
    assert request.spec.audiences == ["codex-gateway", "codex-gateway-2"] and request.spec.token == TOKEN


@pytest.mark.parametrize(
    "audiences",
    [
        None,  # an authenticator that does not check audiences (e.g. some webhooks) echoes none
        [],
        ["https://kubernetes.default.svc.cluster.local"],  # the API server's own audience
        ["another-service"],
    ],
    ids=["none", "empty", "api-server", "other"],
)
async def test_an_answer_without_our_audience_is_a_refusal(audiences: list[str] | None) -> None:
    api = StubApi(answer(audiences))
    assert await reviewer(api).verify_token(TOKEN) is None


async def test_refusals_and_failures() -> None:
    assert await reviewer(StubApi(answer(["codex-gateway"], authenticated=False))).verify_token(TOKEN) is None
    no_user = k8s.V1TokenReviewStatus(authenticated=True, audiences=["codex-gateway"], user=None)
    assert await reviewer(StubApi(no_user)).verify_token(TOKEN) is None
    # too short or too long: never sent to the API server
    api = StubApi(answer(["codex-gateway"]))
    assert await reviewer(api).verify_token("short") is None and not api.requests
    # an API server that fails is not a "no": the next verifier (a token file) may still know the token
    down = StubApi(error=ApiException(status=503, reason="Service Unavailable"))
    assert await VerifierChain(reviewer(down)).verify_token(TOKEN) is None


async def test_answers_are_cached_but_failures_are_not() -> None:
    api = StubApi(answer(["codex-gateway"]))
    verifier = reviewer(api)
    assert await verifier.verify_token(TOKEN) is not None
    assert await verifier.verify_token(TOKEN) is not None
    assert len(api.requests) == 1
    down = StubApi(error=ApiException(status=503, reason="Service Unavailable"))
    flaky = reviewer(down)
    await VerifierChain(flaky).verify_token(TOKEN)
    down.error = None
    down.status = answer(["codex-gateway"])
    assert await flaky.verify_token(TOKEN) is not None and len(down.requests) == 2


def test_no_audience_refuses_to_build() -> None:
    with pytest.raises(NoAudience, match="needs at least one audience"):
        TokenReviewer(None, (), api=StubApi())
    with pytest.raises(NoAudience, match="needs at least one audience"):
        TokenReviewer(None, ("",), api=StubApi())
    with pytest.raises(NoAudience, match="not both"):
        TokenReviewer(None, ("codex-gateway",), any_audience=True, api=StubApi())


async def test_any_audience_is_explicit_and_accepts_what_the_api_server_accepts() -> None:
    api = StubApi(answer(["https://kubernetes.default.svc.cluster.local"]))
    verifier = TokenReviewer(None, (), any_audience=True, api=api)
    assert verifier.any_audience and verifier.audiences == []
    found = await verifier.verify_token(TOKEN)
    assert found is not None and found.subject == ROBOT
    assert api.requests[0].spec.audiences is None  # the API server's own audiences


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--token-review"], "--token-review needs --token-audience"),
        (["--token-review", "--token-audience", ""], "must not be empty"),
        (
            ["--token-review", "--token-audience", "a", "--token-review-any-audience"],
            "not both",
        ),
        (["--token-audience", "a"], "need --token-review"),
        (["--token-review-any-audience"], "need --token-review"),
        (["--token-review", "--token-audience", "codex-gateway"], None),
        (["--token-review", "--token-audience", "a", "--token-audience", "b"], None),
        (["--token-review", "--token-review-any-audience"], None),
        ([], None),
    ],
)
def test_token_review_flags(flags: list[str], problem: str | None) -> None:
    found = token_review_problem(parser().parse_args(["--namespace", "ns", *flags]))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_the_gateway_refuses_to_start_without_an_audience(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("abcdefghijklmnopqrstuvwxyz: alice\n")
    assert main(["--namespace", "ns", "--tokens-file", str(tokens), "--token-review"]) == 2
    err = capsys.readouterr().err
    assert "--token-review needs --token-audience" in err and "--token-review-any-audience" in err
    assert main(["--namespace", "ns", "--token-review"]) == 2
