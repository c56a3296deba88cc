"""The operator's probe endpoints, up from the first moment (followers too).

- ``/healthz`` (liveness): the process and its event loop answer.
- ``/readyz`` (readiness): this replica leads and kopf runs. Followers are
  alive but not ready, so the webhook's Service sends admission reviews only
  to the leader, the one replica that serves them.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


class HealthServer:
    def __init__(self, port: int, ready: Callable[[], bool]) -> None:
        self.port = port
        self.ready = ready
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
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "standby"}, status=503)
