"""The operator's probe endpoints, up from the first moment (followers too).

- ``/healthz`` (liveness): the process and its event loop answer.
- ``/readyz`` (readiness): the leader once its first sync is done; a
  follower always (it serves the identity webhook and stands by). The body
  says which (``role``).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


class HealthServer:
    def __init__(self, port: int, ready: Callable[[], bool], role: Callable[[], str]) -> None:
        self.port = port
        self.ready = ready
        self.role = role
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "0.0.0.0", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.json_response({"status": "ready", "role": self.role()})
        return web.json_response({"status": "starting", "role": self.role()}, status=503)
