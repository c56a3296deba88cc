"""The runner's network fence (codex_runner.network_fence): Codex starts only
once the pod cannot reach the API server, and the turn fails closed when
that does not happen in time."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from codex_runner.network_fence import PROBE_TIMEOUT, api_server_target, wait_until_fenced


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def env(host: str = "10.96.0.1", port: str = "443") -> dict[str, str]:
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}


def test_fenced_at_once_when_the_first_probe_is_refused() -> None:
    t = FakeTime()
    fence = wait_until_fenced(
        10, env(), opens=lambda h, p, to: (False, "ECONNREFUSED"), clock=t.clock, sleep=t.sleep
    )
    assert (fence.fenced, fence.probes, fence.target, fence.detail) == (
        True,
        1,
        "10.96.0.1:443",
        "ECONNREFUSED",
    )


def test_waits_while_the_api_server_answers_then_goes_on() -> None:
    t = FakeTime()
    answers = iter([True, True, True, False])
    seen: list[tuple[str, int]] = []

    def opens(host: str, port: int, timeout: float) -> tuple[bool, str]:
        seen.append((host, port))
        t.now += 0.002
        return (True, "connected") if next(answers) else (False, "no answer")

    fence = wait_until_fenced(10, env(port="6443"), opens=opens, clock=t.clock, sleep=t.sleep)
    assert fence.fenced and fence.probes == 4 and seen == [("10.96.0.1", 6443)] * 4
    assert 0.15 < fence.waited_seconds < 0.2


def test_fails_closed_when_the_api_server_stays_reachable() -> None:
    t = FakeTime()

    def opens(host: str, port: int, timeout: float) -> tuple[bool, str]:
        t.now += 0.001
        return True, "connected"

    fence = wait_until_fenced(2, env(), opens=opens, clock=t.clock, sleep=t.sleep)
    assert not fence.fenced
    assert 1.9 <= fence.waited_seconds <= 2.0 and fence.probes > 30
    assert "the API server (10.96.0.1:443) was still reachable after 2 s" in fence.detail
    assert "NetworkPolicy is not in force" in fence.detail


def test_no_probe_outlives_the_deadline() -> None:
    t = FakeTime()
    timeouts: list[float] = []

    def opens(host: str, port: int, timeout: float) -> tuple[bool, str]:
        timeouts.append(timeout)
        t.now += timeout
        return True, "connected"

    wait_until_fenced(0.7, env(), opens=opens, clock=t.clock, sleep=t.sleep)
    assert timeouts[0] == PROBE_TIMEOUT and all(to <= PROBE_TIMEOUT for to in timeouts)
    assert t.now < 0.7 + PROBE_TIMEOUT


@pytest.mark.parametrize(
    "bad",
    [{}, env(host=""), env(port=""), env(port="http"), env(port="0"), env(port="70000"), env(port="-1")],
)
def test_outside_a_pod_it_cannot_check_and_says_so(bad: dict[str, str]) -> None:
    assert api_server_target(bad) is None
    fence = wait_until_fenced(5, bad, opens=lambda *a: pytest.fail("probed"))  # type: ignore[arg-type]
    assert not fence.fenced and "KUBERNETES_SERVICE_HOST/PORT are not set" in fence.detail


def test_ipv6_target_is_written_with_brackets() -> None:
    fence = wait_until_fenced(1, env(host="fd00::1"), opens=lambda h, p, to: (False, "ENETUNREACH"))
    assert fence.target == "[fd00::1]:443"


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def test_real_sockets_a_listening_server_is_not_a_fence(listener: int) -> None:
    fence = wait_until_fenced(0.3, env("127.0.0.1", str(listener)))
    assert not fence.fenced and fence.probes >= 2


def test_real_sockets_a_refusing_port_is_a_fence(listener: int) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    fence = wait_until_fenced(5, env("127.0.0.1", str(port)))
    assert fence.fenced and fence.probes == 1 and fence.detail == "ECONNREFUSED"
