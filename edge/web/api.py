"""The route table: how a component declares its routes, and the OpenAPI document built from it.

Theory of operation
-------------------
A component (login, admin, directory, chat later...) is a :class:`Component`: a Quart
blueprint plus the :class:`RouteSpec` of each route, declared with one decorator::

    accounts = Component("admin", tag="administration")

    @accounts.route("/api/admin/accounts", "POST", summary="Create an account",
                    access=Access.ADMIN, body=NewAccount, response=AccountView, status=201)
    async def create(call: Call, body: NewAccount) -> AccountView: ...

and is added to an app with :func:`register`, which mounts the blueprint and records its
specs: the OpenAPI document (:func:`openapi_document`) is generated from those records only,
so every route is described and nothing is described that does not exist (a test checks the
URL map against the document).

Every request passes the same gate, in this order, before the handler runs:

1. state-changing methods (anything but GET/HEAD/OPTIONS) and WebSocket handshakes must carry
   an ``Origin`` equal to the edge's origin (``[web] origins``, or ``https://`` + the request's
   Host): a cross-site page cannot post, nor open a WebSocket with the user's cookie;
2. the route's :class:`Access`: a live full session from the ``__Host-zastava`` cookie, and a
   role where the route needs one (401 without a session, 403 without the role); a guest's
   routes (``Access.GUEST``, :mod:`edge.web.guests`) read the ``__Host-zastava-guest`` cookie
   instead, which no other route reads: a guest's pass opens nothing else;
3. state-changing requests with a session also need ``X-CSRF-Token`` (the synchronizer token
   of that session, :func:`edge.auth.sessions.check_csrf`): 403 otherwise;
4. a declared body must be ``application/json`` (415), within ``MAX_CONTENT_LENGTH`` (413),
   valid JSON (400) of the declared shape (400 naming the field); a declared query likewise.

A route declared with ``body_cap`` (an upload) reads its raw body itself, as a stream; its
cap replaces ``MAX_CONTENT_LENGTH`` for that route alone (:mod:`edge.web.app` sets it on the
request before the first byte is buffered), so one route can take 25 MiB while every other
one still refuses a body over ``max_body_bytes``.

Handlers receive a :class:`Call` (state, ``now``, address, session) and return a dataclass
(sent as JSON with the route's status), ``None`` (204) or a ready :class:`quart.Response`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from quart import Blueprint, Quart, Response, current_app, jsonify, request, websocket
from quart.wrappers import Request, Websocket

from edge.auth.results import ValidSession
from edge.auth.sessions import check_csrf
from edge.auth.store import AccountRole
from edge.web import shapes
from edge.web.errors import ApiError

if TYPE_CHECKING:
    from edge.web.state import WebState

COOKIE: Final = "__Host-zastava"
GUEST_COOKIE: Final = "__Host-zastava-guest"  # a meeting guest's pass (edge.web.guests)
CSRF_HEADER: Final = "X-CSRF-Token"
STATE_KEY: Final = "zastava.web.state"
ROUTES_KEY: Final = "zastava.web.routes"
BODY_CAPS_KEY: Final = "zastava.web.body_caps"  # {(method, path): cap} of raw-body routes
ORIGINS_KEY: Final = "zastava.web.origins"  # the app's origin policy, if not allowed_origins
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
WEBSOCKET: Final = "WEBSOCKET"
UNKNOWN_ADDRESS: Final = "0.0.0.0"


class Access(enum.Enum):
    PUBLIC = "public"  # anyone (state-changing requests still need the same Origin)
    TOKEN = "token"  # a session cookie of any scope; the handler's auth call checks it
    USER = "user"  # a live full session
    ADMIN = "admin"  # ... whose account has the role admin
    OFFICER = "security-officer"  # ... whose account has the role security-officer
    METRICS = "metrics"  # a client address in [web] metrics_allow
    GUEST = "guest"  # a guest pass (GUEST_COOKIE), never a session; the handler checks it

    @property
    def role(self) -> AccountRole | None:
        return {
            Access.ADMIN: AccountRole.ADMIN,
            Access.OFFICER: AccountRole.SECURITY_OFFICER,
        }.get(self)

    @property
    def needs_session(self) -> bool:
        return self in (Access.USER, Access.ADMIN, Access.OFFICER)


@dataclass(frozen=True)
class ErrorBody:
    """What every refusal carries."""

    error: str


@dataclass(frozen=True)
class RouteSpec:
    path: str  # the Quart rule, e.g. /api/admin/accounts/<login>
    method: str  # GET, POST, PUT, DELETE, or WEBSOCKET
    endpoint: str
    summary: str
    access: Access
    tag: str
    body: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    description: str = ""
    servers: tuple[str, ...] = ()  # served on another listener (the device port)
    # A route that streams its raw body itself (an upload), and that body's cap: it replaces
    # [web] max_body_bytes for this route only (the path must have no converters).
    body_cap: Callable[[WebState], int] | None = None

    @property
    def state_changing(self) -> bool:
        return self.method == WEBSOCKET or self.method not in SAFE_METHODS


@dataclass
class Call:
    """What a handler gets besides its body: the app's state and this request's facts."""

    state: WebState
    now: dt.datetime
    address: str
    token: str | None  # the session cookie, as sent
    session: ValidSession | None  # set for routes that need a live session

    @property
    def login(self) -> str:
        assert self.session is not None, "route declared without a session"
        return self.session.login


Handler = Callable[..., Awaitable[Any]]
H = TypeVar("H", bound=Handler)


def state_of(app: Quart | None = None) -> WebState:
    state: WebState = (app or current_app).extensions[STATE_KEY]
    return state


def client_address(scope: dict[str, Any] | Any) -> str:
    client = scope.get("client")
    return str(client[0]) if client else UNKNOWN_ADDRESS


def allowed_origins(state: WebState, host: str) -> frozenset[str]:
    return frozenset(state.settings.origins) or frozenset({f"https://{host.lower()}"})


def check_origin(state: WebState, r: Request | Websocket) -> None:
    policy: Callable[[WebState, str], frozenset[str]]
    policy = current_app.extensions.get(ORIGINS_KEY, allowed_origins)
    origin = r.headers.get("Origin")
    if origin is None or origin.lower() not in policy(state, r.host):
        raise ApiError(403, "cross-origin request refused")


def _metrics_allowed(state: WebState, address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return any(ip in net for net in state.settings.metrics_allow)


async def _gate(spec: RouteSpec, r: Request | Websocket) -> Call:
    state = state_of()
    now = state.clock()
    address = client_address(r.scope)
    if spec.state_changing:
        check_origin(state, r)
    if spec.access is Access.METRICS and not _metrics_allowed(state, address):
        raise ApiError(403, "metrics are not served to this address")
    token = r.cookies.get(GUEST_COOKIE if spec.access is Access.GUEST else COOKIE)
    session = None
    if spec.access.needs_session:
        if token is not None:
            session = await state.run(state.auth.validate_session, token, now)
        if session is None:
            raise ApiError(401, "log in first")
        role = spec.access.role
        if role is not None and role not in session.roles:
            raise ApiError(403, f"this needs the role {role.value}")
    elif spec.access in (Access.TOKEN, Access.GUEST) and token is None:
        raise ApiError(401, "log in first")
    if spec.state_changing and spec.method != WEBSOCKET and token is not None:
        if spec.access is not Access.PUBLIC and not check_csrf(token, r.headers.get(CSRF_HEADER)):
            raise ApiError(403, "missing or wrong CSRF token")
    return Call(state, now, address, token, session)


async def _body(cls: type) -> Any:
    mimetype = request.mimetype
    if mimetype != "application/json":
        raise ApiError(415, "send the body as application/json")
    data = await request.get_data(cache=False, as_text=False)
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    try:
        return shapes.parse(cls, obj)
    except shapes.ShapeError as e:
        raise ApiError(400, str(e)) from None


def json_response(value: object, status: int = 200) -> Response:
    response = jsonify(shapes.dump(value))
    response.status_code = status
    return response


class Component:
    """A blueprint and the specs of its routes: what :func:`register` adds to an app."""

    def __init__(self, name: str, *, tag: str, servers: tuple[str, ...] = ()) -> None:
        self.blueprint = Blueprint(name, __name__)
        self.tag = tag
        self.servers = servers
        self.routes: list[RouteSpec] = []

    def route(
        self,
        path: str,
        method: str,
        *,
        summary: str,
        access: Access,
        body: type | None = None,
        query: type | None = None,
        response: type | None = None,
        status: int = 200,
        errors: tuple[int, ...] = (),
        content_type: str = "application/json",
        description: str = "",
        body_cap: Callable[[WebState], int] | None = None,
    ) -> Callable[[H], H]:
        if body_cap is not None and (body is not None or "<" in path):
            raise ValueError(f"{path}: a raw-body route has a fixed path and no JSON body")

        def decorate(fn: H) -> H:
            spec = RouteSpec(
                path,
                method,
                f"{self.blueprint.name}.{fn.__name__}",
                summary,
                access,
                self.tag,
                body,
                query,
                response,
                status,
                errors,
                content_type,
                description,
                self.servers,
                body_cap,
            )

            async def view(**path_args: Any) -> Response:
                call = await _gate(spec, request)
                args: list[Any] = []
                if spec.body is not None:
                    args.append(await _body(spec.body))
                if spec.query is not None:
                    try:
                        args.append(shapes.parse_query(spec.query, request.args.to_dict()))
                    except shapes.ShapeError as e:
                        raise ApiError(400, str(e)) from None
                result = await fn(call, *args, **path_args)
                if isinstance(result, Response):
                    return result
                if result is None:
                    return Response(status=204)
                return json_response(result, spec.status)

            self.blueprint.add_url_rule(path, fn.__name__, view, methods=[method])
            self.routes.append(spec)
            return fn

        return decorate

    def websocket(
        self, path: str, *, summary: str, access: Access = Access.USER, description: str = ""
    ) -> Callable[[H], H]:
        def decorate(fn: H) -> H:
            spec = RouteSpec(
                path,
                WEBSOCKET,
                f"{self.blueprint.name}.{fn.__name__}",
                summary,
                access,
                self.tag,
                description=description,
                servers=self.servers,
            )

            async def view(**path_args: Any) -> None:
                call = await _gate(spec, websocket)
                await fn(call, **path_args)

            self.blueprint.add_websocket(path, fn.__name__, view)
            self.routes.append(spec)
            return fn

        return decorate


def register(app: Quart, component: Component) -> None:
    """Mount ``component``'s routes on ``app`` and list them in its OpenAPI document."""
    app.register_blueprint(component.blueprint)
    app.extensions.setdefault(ROUTES_KEY, []).extend(component.routes)
    for spec in component.routes:
        if spec.body_cap is not None:
            caps = app.extensions.setdefault(BODY_CAPS_KEY, {})
            caps[(spec.method, spec.path)] = spec.body_cap(state_of(app))


def routes_of(app: Quart) -> list[RouteSpec]:
    routes: list[RouteSpec] = app.extensions.get(ROUTES_KEY, [])
    return routes


# OpenAPI

_CONVERTER: Final = re.compile(r"<(?:(\w+):)?(\w+)>")


def openapi_path(rule: str) -> str:
    """``/api/accounts/<login>`` -> ``/api/accounts/{login}``."""
    return _CONVERTER.sub(lambda m: "{" + m.group(2) + "}", rule)


def _parameters(spec: RouteSpec) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for converter, name in _CONVERTER.findall(spec.path):
        kind = "integer" if converter == "int" else "string"
        params.append({"name": name, "in": "path", "required": True, "schema": {"type": kind}})
    if spec.query is not None:
        hints = shapes._hints(spec.query)
        for f in dataclasses.fields(spec.query):
            params.append(
                {
                    "name": shapes.json_name(f),
                    "in": "query",
                    "required": f.default is dataclasses.MISSING,
                    "schema": shapes.json_schema(hints[f.name], f.metadata),
                }
            )
    return params


def _security(spec: RouteSpec) -> list[dict[str, list[str]]]:
    if spec.access in (Access.PUBLIC, Access.METRICS):
        return []
    if spec.access is Access.GUEST:
        if spec.state_changing:
            return [{"guest": [], "csrf": []}]
        return [{"guest": []}]
    if spec.state_changing and spec.method != WEBSOCKET:
        return [{"session": [], "csrf": []}]
    return [{"session": []}]


_ERROR_TEXT: Final = {
    400: "bad input (malformed JSON, wrong types, a refused value)",
    401: "no live session",
    403: "not allowed (role, CSRF token, Origin)",
    404: "no such thing",
    409: "conflict",
    413: "request body over the limit",
    415: "body not application/json",
    429: "throttled; see Retry-After",
    503: "not available now",
}


def _operation(spec: RouteSpec) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": spec.endpoint.replace(".", "_"),
        "summary": spec.summary,
        "tags": [spec.tag],
        "security": _security(spec),
        "x-zastava-access": spec.access.value,
    }
    if spec.description:
        op["description"] = spec.description
    params = _parameters(spec)
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": shapes.json_schema(spec.body)}},
        }
    elif spec.body_cap is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    responses: dict[str, Any] = {}
    if spec.method == WEBSOCKET:
        op["x-websocket"] = True
        responses["101"] = {"description": "switching to the WebSocket protocol"}
    elif spec.status == 204:
        responses["204"] = {"description": "done"}
    else:
        ok: dict[str, Any] = {"description": "success"}
        if spec.response is not None:
            ok["content"] = {spec.content_type: {"schema": shapes.json_schema(spec.response)}}
        else:
            ok["content"] = {spec.content_type: {}}
        responses[str(spec.status)] = ok
    errors = set(spec.errors)
    if spec.access.needs_session or spec.access in (Access.TOKEN, Access.GUEST):
        errors.add(401)
    if spec.access.role is not None or spec.state_changing or spec.access is Access.METRICS:
        errors.add(403)
    if spec.body is not None:
        errors |= {400, 413, 415}
    if spec.body_cap is not None:
        errors |= {400, 413}
    if spec.query is not None:
        errors.add(400)
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for code in sorted(errors):
        responses[str(code)] = {"description": _ERROR_TEXT.get(code, "refused")}
        responses[str(code)]["content"] = error_content
    op["responses"] = responses
    if spec.servers:
        op["servers"] = [{"url": s} for s in spec.servers]
    return op


def openapi_document(routes: list[RouteSpec], *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for spec in routes:
        method = "get" if spec.method == WEBSOCKET else spec.method.lower()
        item = paths.setdefault(openapi_path(spec.path), {})
        if method in item:
            raise ValueError(f"two routes for {spec.method} {spec.path}")
        item[method] = _operation(spec)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": 'The edge\'s HTTP API. Errors are JSON {"error": "..."}. '
            "State-changing requests need the session's X-CSRF-Token and a same-origin "
            "Origin header.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": shapes.json_schema(ErrorBody)},
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": COOKIE},
                "csrf": {"type": "apiKey", "in": "header", "name": CSRF_HEADER},
                "guest": {"type": "apiKey", "in": "cookie", "name": GUEST_COOKIE},
            },
        },
    }
