"""Stage controls: pause and resume a stage from the overview (``StageControls``, the
service behind ``POST /stages/{name}/pause`` and ``pipeline stages pause``). Stages are
every tenant's, so, as over the API, only the operator tenant's admins may."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import PathParameter
from litestar.response import Redirect, Response

from pipeline.access.console import Session
from pipeline.errors import PipelineError
from pipeline.http.console.auth import SIGNED_IN, run_of
from pipeline.http.console.pages import page, text
from pipeline.http.state import ApiState


@post("/stages/{stage:str}/{verb:str}", **SIGNED_IN)
async def control_stage(
    request: Request[Any, Any, Any],
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
    stage: Annotated[str, PathParameter(max_length=64)],
    verb: Annotated[str, PathParameter(max_length=16)],
) -> Response[Any]:
    form = await request.form()
    run = run_of(request, console_session)
    try:
        if verb == "pause":
            await anyio.to_thread.run_sync(
                api.stage_controls.pause, stage, run, text(form, "reason")
            )
        elif verb == "resume":
            await anyio.to_thread.run_sync(api.stage_controls.resume, stage, run)
        else:
            return page("refused.html", console_session, status=404, message="pause or resume")
    except PipelineError as refused:  # an unknown stage; a key of another tenant
        return page("refused.html", console_session, status=403, message=refused.reason)
    return Redirect("/console", status_code=303)


ROUTES = [control_stage]
