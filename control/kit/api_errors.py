"""Error mapping at the edge: typed errors → status + `{"type", "message"}`; request
validation → 422 InvalidRequest (400 InvalidJSON for unparseable bodies), every problem listed."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from control.models.errors import InvalidJSON, InvalidRequest, NotFound, PydiegoError


def _problems(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append({"field": ".".join(loc), "problem": err.get("msg", "")})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(PydiegoError)
    async def _domain(request: Request, exc: PydiegoError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            err: PydiegoError = InvalidJSON("request body is not valid JSON")
        else:
            problems = _problems(exc)
            summary = "; ".join(f"{p['field'] or 'body'}: {p['problem']}" for p in problems[:20])
            err = InvalidRequest(f"invalid request: {summary}", errors=problems)
        return JSONResponse(err.to_body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err = NotFound(f"no route {request.method} {request.url.path}")
            return JSONResponse(err.to_body(), status_code=404)
        # FastAPI raises a bare 400 when it cannot parse a body (e.g. JSON nested past Python's
        # recursion limit); every body is JSON, so that is InvalidJSON.
        kind = {400: "InvalidJSON", 405: "MethodNotAllowed"}.get(exc.status_code, "InvalidRequest")
        return JSONResponse({"type": kind, "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
