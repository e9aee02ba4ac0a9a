"""The route table's building blocks: parameter specs, endpoints, errors, OpenAPI.

One declaration per endpoint drives three things, so they cannot drift apart: request
validation (bad input -> a 4xx JSON error, never a 500), the OpenAPI schema served at
``/api/openapi.json`` and the schema-driven fuzz test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import FlowillowerError, RunNotFoundError

__all__ = ["P", "Endpoint", "ApiError", "json_response", "make_route", "openapi_schema",
           "sanitize"]


class ApiError(Exception):
    """A request we refuse, with the HTTP status and a message saying what to fix."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message, "status": self.status}
        if self.param:
            body["param"] = self.param
        return JSONResponse(body, status_code=self.status)


@dataclass(frozen=True)
class P:
    """One request parameter (query string or path)."""

    name: str
    type: str = "string"  # string | integer | number | boolean
    where: str = "query"  # query | path
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    many: bool = False  # repeated parameter (?run=a&run=b) -> list
    max_length: int = 2000
    description: str = ""

    def schema(self) -> dict[str, Any]:
        base: dict[str, Any] = {"type": self.type}
        if self.type == "string":
            base["maxLength"] = self.max_length
        if self.minimum is not None:
            base["minimum"] = self.minimum
        if self.maximum is not None:
            base["maximum"] = self.maximum
        if self.enum is not None:
            base["enum"] = list(self.enum)
        if self.default is not None:
            base["default"] = self.default
        return {"type": "array", "items": base} if self.many else base

    def convert(self, raw: str) -> Any:
        """The typed value of one raw string, or ApiError(400)."""
        if len(raw) > self.max_length:
            raise ApiError(400, f"parameter {self.name!r} is longer than {self.max_length} "
                           "characters", self.name)
        if "\x00" in raw:
            raise ApiError(400, f"parameter {self.name!r} contains a NUL byte", self.name)
        value: Any = raw
        if self.type == "integer":
            try:
                value = int(raw)
            except ValueError:
                raise ApiError(400, f"parameter {self.name!r} must be an integer, got "
                               f"{raw[:40]!r}", self.name) from None
        elif self.type == "number":
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ApiError(400, f"parameter {self.name!r} must be a finite number, got "
                               f"{raw[:40]!r}", self.name)
        elif self.type == "boolean":
            lowered = raw.lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", ""):
                raise ApiError(400, f"parameter {self.name!r} must be true or false",
                               self.name)
            value = lowered in ("1", "true", "yes")
        if self.minimum is not None and value < self.minimum:
            raise ApiError(400, f"parameter {self.name!r} must be >= {self.minimum:g}",
                           self.name)
        if self.maximum is not None and value > self.maximum:
            raise ApiError(400, f"parameter {self.name!r} must be <= {self.maximum:g}",
                           self.name)
        if self.enum is not None and value not in self.enum:
            raise ApiError(400, f"parameter {self.name!r} must be one of "
                           f"{', '.join(self.enum)}", self.name)
        return value


View = Callable[..., Any]


@dataclass
class Endpoint:
    """A JSON endpoint: path, method, parameters, body schema and the view it calls."""

    method: str
    path: str
    view: View
    summary: str
    params: list[P] = field(default_factory=list)
    body: dict[str, Any] | None = None  # JSON schema of the request body
    mutating: bool = False
    blocking: bool = True  # run the view in a worker thread (store / sqlite / files)
    tag: str = "runs"

    def parse(self, request: Request) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for p in self.params:
            if p.where == "path":
                raw_values = [request.path_params[p.name]]
            else:
                raw_values = request.query_params.getlist(p.name)
            if not raw_values:
                if p.required:
                    raise ApiError(400, f"missing required parameter {p.name!r}", p.name)
                values[p.name] = [] if p.many else p.default
                continue
            if p.many:
                if len(raw_values) > 1000:
                    raise ApiError(400, f"too many {p.name!r} parameters (max 1000)", p.name)
                values[p.name] = [p.convert(v) for v in raw_values]
            else:
                values[p.name] = p.convert(raw_values[-1])
        return values


def sanitize(obj: Any) -> Any:
    """JSON has no NaN / infinity: write them as strings the front end shows as such."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "NaN" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    return obj


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    """Compact JSON; non-finite floats are turned into strings first only when needed."""
    try:
        body = json.dumps(content, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":"), default=str)
    except ValueError:  # a NaN somewhere: walk the structure (rare, so not done upfront)
        body = json.dumps(sanitize(content), ensure_ascii=False, separators=(",", ":"),
                          default=str)
    return Response(body, status_code=status, media_type="application/json",
                    headers=headers)


async def _read_body(request: Request, endpoint: Endpoint) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype != "application/json":
        # Also a CSRF defence: a cross-site form cannot send application/json.
        raise ApiError(415, "send the request body as JSON (Content-Type: application/json)")
    raw = await request.body()
    if len(raw) > 1_000_000:
        raise ApiError(413, "request body too large (max 1 MB)")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    schema = endpoint.body or {}
    allowed = schema.get("properties", {})
    unknown = set(body) - set(allowed)
    if unknown and schema.get("additionalProperties") is False:
        raise ApiError(400, f"unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    for name, spec in allowed.items():
        if name in body and not _matches(body[name], spec):
            raise ApiError(400, f"field {name!r} must be {_describe(spec)}", name)
    return body


def _matches(value: Any, spec: dict[str, Any]) -> bool:
    kind = spec.get("type")
    if kind == "string":
        return isinstance(value, str) and len(value) <= spec.get("maxLength", 10**6)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return (isinstance(value, list) and len(value) <= spec.get("maxItems", 10**4)
                and all(_matches(v, spec.get("items", {})) for v in value))
    return True


def _describe(spec: dict[str, Any]) -> str:
    if spec.get("type") == "array":
        return f"a list of {_describe(spec.get('items', {}))}s"
    if spec.get("type") == "string" and "maxLength" in spec:
        return f"a string of at most {spec['maxLength']} characters"
    return f"a {spec.get('type', 'value')}"


def make_route(endpoint: Endpoint) -> Route:
    """A Starlette route calling the endpoint's view off the event loop."""

    async def handle(request: Request) -> Response:
        try:
            kwargs = endpoint.parse(request)
            if endpoint.body is not None:
                kwargs["body"] = await _read_body(request, endpoint)
            if endpoint.blocking:
                result = await run_in_threadpool(endpoint.view, **kwargs)
            else:
                result = endpoint.view(**kwargs)
                if isinstance(result, Awaitable):
                    result = await result
        except ApiError as exc:
            return exc.response()
        except FlowillowerError as exc:  # our errors carry a what-to-do message
            status = 404 if isinstance(exc, RunNotFoundError) else 400
            return ApiError(status, str(exc)).response()
        if isinstance(result, Response):
            return result
        return json_response(result)

    return Route(endpoint.path, handle, methods=[endpoint.method])


def openapi_schema(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    """OpenAPI 3.0 document of the JSON API (hand-built from the route table)."""
    paths: dict[str, dict[str, Any]] = {}
    error = {"description": "bad request", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}
    for ep in endpoints:
        op: dict[str, Any] = {
            "summary": ep.summary,
            "operationId": f"{ep.method.lower()}_{ep.view.__name__}",
            "tags": [ep.tag],
            "parameters": [
                {"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                 "description": p.description, "schema": p.schema(),
                 **({"style": "form", "explode": True} if p.many else {})}
                for p in ep.params],
            "responses": {"200": {"description": "OK", "content": {
                "application/json": {"schema": {"type": "object"}}}},
                "400": error, "404": error},
        }
        if ep.body is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": ep.body}}}
        if ep.mutating:
            op["security"] = [{"token": []}]
            op["responses"]["403"] = error
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "flowillower UI API", "version": version,
                 "description": "Read runs, series, media and model graphs of a flowillower "
                                "store; annotate and delete runs. Every UI page draws from "
                                "these endpoints."},
        "paths": paths,
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error", "status"],
                                  "properties": {"error": {"type": "string"},
                                                 "status": {"type": "integer"},
                                                 "param": {"type": "string"}}}},
            "securitySchemes": {"token": {"type": "apiKey", "in": "header",
                                          "name": "X-Flowillower-Token"}},
        },
    }
