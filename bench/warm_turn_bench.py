"""P7 (issue 14, first step): how much of a turn a warm runner saves, before
any pod is involved. The same fake model and the same Codex binary, in one
run, four ways of running one trivial turn:

- bare: `codex exec --json` (a new process and thread; P3's baseline);
- resume: `codex exec resume --json THREAD` (a new process, the thread
  reloaded from disk: what a reply costs today inside the pod);
- pool first turn: `thread/start` + a turn on an app-server that was started
  and initialized before the clock (codex_runner.app_server; a warm pool
  pod's first turn);
- warm reply: a turn on that thread of that app-server (a reply handed to a
  live pod).

Kinds alternate in rounds so machine noise spreads evenly; the ratio to bare
is what counts (docs/benchmarks.md P7). Also prints the app-server's RSS idle
and after the turns (memory per idle warm pod, before the agent's own).

Usage: .venv/bin/python bench/warm_turn_bench.py [--turns 15]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from codex_devenv import fake_model as fm
from codex_devenv.codex_cli import codex_binary, exec_env, run_exec, write_codex_home
from codex_runner.app_server import AppServer


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (Codex starts helpers)."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total / 1024


def row(name: str, seconds: list[float], base: float) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"{name:28s} n={len(ms):3d}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  {p50 / base:5.2f}x bare"


async def measure(turns: int, work: Path) -> None:
    binary = codex_binary()
    workspace = work / "ws"
    workspace.mkdir()
    times: dict[str, list[float]] = {"bare": [], "resume": [], "pool first turn": [], "warm reply": []}
    with fm.FakeModelServer() as model:
        model.set_script(then=fm.say("ok", usage=fm.Usage(input_tokens=50, output_tokens=2)))
        home = write_codex_home(work / "codex-home", model.url)
        env = exec_env(home)
        run_exec("warm up", codex_home=home, cwd=workspace, binary=binary)  # page cache, first-run files
        warm = await AppServer.start(binary, env=env, cwd=workspace)
        idle = rss_mib(warm.pid)
        thread = await warm.start_thread(cwd=workspace, sandbox="read-only")
        await warm.run_turn(thread, "warm up", timeout=60)
        resumable = run_exec("start", codex_home=home, cwd=workspace, binary=binary).thread_id
        try:
            for i in range(turns):
                t0 = time.perf_counter()
                bare = run_exec(f"bare {i}", codex_home=home, cwd=workspace, binary=binary)
                times["bare"].append(time.perf_counter() - t0)
                assert bare.returncode == 0, bare.describe()

                t0 = time.perf_counter()
                resumed = run_exec(
                    f"resume {i}", codex_home=home, cwd=workspace, resume=resumable, binary=binary
                )
                times["resume"].append(time.perf_counter() - t0)
                assert resumed.returncode == 0, resumed.describe()

                # A pool pod's app-server is started before its claim: off the clock.
                pool = await AppServer.start(binary, env=env, cwd=workspace)
                try:
                    t0 = time.perf_counter()
                    first = await pool.run_turn(
                        await pool.start_thread(cwd=workspace, sandbox="read-only"), f"first {i}", timeout=60
                    )
                    times["pool first turn"].append(time.perf_counter() - t0)
                finally:
                    await pool.close()
                assert first.status == "completed", first

                t0 = time.perf_counter()
                reply = await warm.run_turn(thread, f"reply {i}", timeout=60)
                times["warm reply"].append(time.perf_counter() - t0)
                assert reply.status == "completed", reply
            busy = rss_mib(warm.pid)
        finally:
            await warm.close()
    base = statistics.median(s * 1000 for s in times["bare"])
    print(f"codex {binary.name} {binary.parent}; fake model on 127.0.0.1; {turns} rounds")
    for name, seconds in times.items():
        print(row(name, seconds, base))
    print(f"app-server RSS: idle after initialize {idle:.0f} MiB, after {turns + 1} turns {busy:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warm-bench-") as work:
        asyncio.run(measure(args.turns, Path(work)))


if __name__ == "__main__":
    main()
