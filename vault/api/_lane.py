"""The lean path: grant, renew and release answered without FastAPI's routing and dependency solving.

Measured (bench/results/profile-lease-before.md and lane.md), FastAPI's middleware stack, routing
through every route of the internal app and solving a lease route's dependencies (request, response,
vault, signer context) cost a third of a vault process's CPU per lease cycle. The internal app
(:class:`~vault.api._apps.InternalApp`) hands every request to :meth:`LeaseLane.handle` first, which
answers ``POST`` to the four lease routes of :data:`~vault.api._leases.LANE_ROUTES` with the same steps
in the same order as FastAPI does for the routes in :mod:`vault.api._leases`: authenticate the signer
(:func:`~vault.api._deps.require_role`), check the path id against the route's pattern, parse the body
(:func:`~vault.api._deps.read_json`), call the route's function, and map every error with the one error
mapping (:mod:`vault.api._errors`, which also audits the refusal of an authenticated request), inside
the same guard and body limit as the app's middleware (vault/api/_middleware.py). Any other request goes
on to FastAPI. tests/integration/test_lease_lane.py sends the same requests through both
and requires the same answers, byte for byte.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from vault import errors as e
from vault.api._deps import read_json, require_role
from vault.api._errors import vault_error
from vault.api._leases import LANE_ROUTES, NO_STORE, LaneRoute
from vault.api._leases import router as leases_router
from vault.api._middleware import BodyLimit, Guard
from vault.service import Role, Vault

__all__ = ["LeaseLane"]

_authenticate = require_role(Role.SIGNER)


class _Compiled:
    """One lease route: its path, its id's pattern, its route object and the guarded ASGI app answering it."""

    __slots__ = ("app", "param", "path", "route", "spec")

    def __init__(self, spec: LaneRoute, route: BaseRoute, max_body_bytes: int) -> None:
        prefix, _, suffix = spec.template.partition("{" + spec.param + "}")
        self.spec = spec
        self.path = re.compile(re.escape(prefix) + "([^/]+)" + re.escape(suffix))  # Starlette's {param}
        self.param = re.compile(spec.pattern)
        self.route = route
        # The same guard and body limit as the app's own middleware (vault/api/_middleware.py).
        self.app = Guard(BodyLimit(self._endpoint, max_bytes=max_body_bytes))

    async def _endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        value = scope["path_params"][self.spec.param]
        response = await _answer(self, value, Request(scope, receive))
        await response(scope, receive, send)


class LeaseLane:
    """Answers the lease routes of ``app`` ahead of it: :meth:`handle` is called before the app is."""

    def __init__(self, app: FastAPI, *, max_body_bytes: int) -> None:
        self.app = app
        routes = zip(LANE_ROUTES, _routes(), strict=True)
        self._routes = [_Compiled(spec, route, max_body_bytes) for spec, route in routes]

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if it is for a lease route (True); else leave it to the app (False)."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path = scope["path"]
        for compiled in self._routes:
            if (match := compiled.path.fullmatch(path)) is not None:
                # What Starlette sets before the router runs: the app (for its state), the route (for the
                # audit of a refusal, which names the route template) and the path parameter.
                scope["app"], scope["route"] = self.app, compiled.route
                scope["path_params"] = {compiled.spec.param: match.group(1)}
                await compiled.app(scope, receive, send)
                return True
        return False


def _routes() -> list[BaseRoute]:
    by_template = {getattr(route, "path", None): route for route in leases_router.routes}
    return [by_template[spec.template] for spec in LANE_ROUTES]


async def _answer(compiled: _Compiled, value: str, request: Request) -> Response:
    spec = compiled.spec
    try:
        vault: Vault = request.app.state.vault
        ctx = await _authenticate(request, vault)
        if compiled.param.fullmatch(value) is None:
            raise e.InvalidRequest(f"invalid field(s): path.{spec.param}")
        body = await read_json(request, spec.body)
        result = await spec.handler(vault, ctx, value, body)
    except e.VaultError as exc:
        return await vault_error(request, exc)
    if spec.grant:
        return Response(result.model_dump_json(), 201, NO_STORE, media_type="application/json")
    return Response(result.model_dump_json(), media_type="application/json")
