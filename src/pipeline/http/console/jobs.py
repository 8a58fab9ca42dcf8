"""Background jobs of the session's tenant: recent ones, and one job's progress (its
page refreshes itself while the job is queued or running)."""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.params import PathParameter
from litestar.response import Template
from sqlalchemy import Connection, select

from pipeline.access.console import Session
from pipeline.db.models import OperationJob
from pipeline.http.console.auth import SIGNED_IN, ConsoleNotFound
from pipeline.http.console.pages import page, parse_uuid, read
from pipeline.http.state import ApiState
from pipeline.operations.jobs import JobView, get_job

RECENT: Final = 50


def recent_jobs(conn: Connection, tenant: str) -> list[JobView]:
    ids = conn.execute(
        select(OperationJob.id)
        .where(OperationJob.tenant == tenant)
        .order_by(OperationJob.created_at.desc())
        .limit(RECENT)
    ).scalars()
    return [job for job_id in ids if (job := get_job(conn, job_id, tenant)) is not None]


@get("/jobs", **SIGNED_IN)
async def jobs_page(
    api: NamedDependency[ApiState], console_session: NamedDependency[Session]
) -> Template:
    tenant = console_session.principal.tenant
    jobs = await read(api, lambda conn: recent_jobs(conn, tenant))
    return page("jobs.html", console_session, jobs=jobs)


async def _job(api: ApiState, session: Session, job_id: str) -> dict[str, Any]:
    parsed = parse_uuid(job_id, "job")
    tenant = session.principal.tenant
    job = await read(api, lambda conn: get_job(conn, parsed, tenant))
    if job is None:
        raise ConsoleNotFound(f"no job with id {job_id}")
    handled = job.done + job.skipped + job.failed
    percent = round(100 * handled / job.total) if job.total else (100 if job.finished_at else 0)
    request = msgspec.json.format(msgspec.json.encode(job.request), indent=2).decode()
    return {"job": job, "handled": handled, "percent": percent, "request": request}


@get("/jobs/{job_id:str}", **SIGNED_IN)
async def job_page(
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
    job_id: Annotated[str, PathParameter()],
) -> Template:
    return page("job.html", console_session, **await _job(api, console_session, job_id))


@get("/jobs/{job_id:str}/fragment", **SIGNED_IN)
async def job_fragment(
    api: NamedDependency[ApiState],
    console_session: NamedDependency[Session],
    job_id: Annotated[str, PathParameter()],
) -> Template:
    return page("_job.html", console_session, **await _job(api, console_session, job_id))


ROUTES = [jobs_page, job_page, job_fragment]
