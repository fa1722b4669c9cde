"""`artfs ui`: a read-only web page of a store's projects, versions, diffs and lineage.

Starlette routes with plain (blocking) handlers, which Starlette runs in its
worker threads, so a slow store delays one page, not the server; uvicorn
serves them. Jinja2 renders with autoescaping on, so every string from the
store (descriptions, metadata, paths, creators) reaches the page escaped.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from artfs.errors import ArtfsError, InvalidInput, NotFound
from artfs.names import ArtifactName, check_name, parse_version
from artfs.versions import lineage
from artfs.web import graph, views

log = logging.getLogger(__name__)
MAX_DEPTH = 4


def human_size(n: int | None) -> str:
    if n is None or n < 0:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["size"] = human_size
    env.filters["when"] = when
    env.globals["version_link"] = views.version_link
    return env


def _int(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        raise InvalidInput(f"{name} must be a number") from None


LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def create_app(store: Any, allowed_hosts: list[str] | None = None) -> Starlette:
    """The web app over one `artfs.api.store.Store`. `allowed_hosts`: the Host headers answered
    (a page on loopback refuses others, so a web site cannot read it through DNS rebinding)."""
    env = _env()
    reg = store.registry

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(store_url=store.url, **context), status_code=status)

    def artifact_of(request: Request) -> ArtifactName:
        p = request.path_params
        return ArtifactName(check_name(p["project"], "project"), check_name(p["artifact"], "artifact"))

    def index(request: Request) -> Response:
        return render("index.html", projects=reg.projects())

    def project(request: Request) -> Response:
        name = check_name(request.path_params["project"], "project")
        return render("project.html", project=name, a=views.artifacts(reg, name, _int(request, "page", 1)))

    def artifact(request: Request) -> Response:
        data = views.versions_page(reg, artifact_of(request), _int(request, "page", 1))
        return render("artifact.html", v=data)

    def version(request: Request) -> Response:
        a = artifact_of(request)
        selector = request.path_params["version"]
        rec = views.resolve(reg, a, selector)
        if parse_version(selector) is None:  # an alias: the page of the version it names today
            return RedirectResponse(f"/p/{a.project}/{a.name}/{rec.name}", status_code=302)
        data = views.version_page(
            reg, rec, reg.manifest(rec), request.query_params.get("dir", ""), _int(request, "page", 1)
        )
        return render("version.html", v=data)

    def lineage_page(request: Request) -> Response:
        a = artifact_of(request)
        rec = views.resolve(reg, a, request.path_params["version"])
        depth = min(max(1, _int(request, "depth", 2)), MAX_DEPTH)
        g = lineage.walk(reg, rec, depth)
        start = f"{rec.artifact}:{rec.name}"
        svg, problem = "", ""
        try:
            svg = graph.to_svg(graph.to_dot(g, start))
        except ArtfsError as e:
            problem = str(e)
        return render(
            "lineage.html",
            rec=rec,
            svg=svg,
            problem=problem,
            depth=depth,
            max_depth=MAX_DEPTH,
            logged=sorted(g.logged),
            used=sorted(g.used),
            run_url=graph.run_url,
        )

    def diff_page(request: Request) -> Response:
        a = artifact_of(request)
        q = request.query_params
        if not q.get("a") or not q.get("b"):
            raise InvalidInput("choose two versions to compare (?a=vN&b=vM)")
        old, new = views.resolve(reg, a, q["a"]), views.resolve(reg, a, q["b"])
        data = views.diff(old, new, reg.manifest(old), reg.manifest(new))
        return render("diff.html", d=data, shown=views.DIFF_SHOWN)

    def run(request: Request) -> Response:
        return render("run.html", r=views.run_page(reg, request.path_params["run"]))

    routes = [
        Route("/", index),
        Route("/p/{project}", project),
        Route("/p/{project}/{artifact}", artifact),
        Route("/p/{project}/{artifact}/{version}", version),
        Route("/p/{project}/{artifact}/{version}/lineage", lineage_page),
        Route("/diff/{project}/{artifact}", diff_page),
        Route("/run/{run}", run),
    ]
    middleware = (
        [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts, www_redirect=False)] if allowed_hosts else []
    )
    app = Starlette(routes=routes, middleware=middleware)

    async def not_found(request: Request, exc: Exception) -> Response:
        return render("error.html", status=404, title="Not found", message=str(exc) or "no such page")

    async def bad_input(request: Request, exc: Exception) -> Response:
        return render("error.html", status=400, title="Bad request", message=str(exc))

    async def failed(request: Request, exc: Exception) -> Response:
        log.warning("%s: %s", request.url.path, exc)
        return render("error.html", status=502, title="The store did not answer", message=str(exc))

    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(404, not_found)
    app.add_exception_handler(InvalidInput, bad_input)
    app.add_exception_handler(ArtfsError, failed)
    return app
