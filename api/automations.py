"""/api/workflows: the registered automations, their runs, starting and cancelling them.

The routes are thin: `AutomationService` (api/automation_service.py) does the work.
"""

from __future__ import annotations

from typing import Any, cast

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine
from sqlmodel import col

from api.automation_service import AutomationService
from api.paging import page
from api.params import Id, choice, one_of
from api.schemas.automations import AutomationList, AutomationRun, AutomationRunPage
from core.automations import runs
from core.db import session_scope
from core.models import WorkflowRun
from core.statuses import RunStatus

RUN_STATUSES = tuple(s.value for s in RunStatus)


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(default_factory=dict)


def _service(state: State) -> AutomationService:
    service: AutomationService = state.automation_service
    return service


class AutomationController(Controller):
    path = "/workflows"
    tags = ["automations"]

    @get("/", operation_id="listAutomations", sync_to_thread=False)
    def list_automations(self, request: Request[Any, Any, Any]) -> AutomationList:
        """Every registered automation, built-in and plugin: its params as a JSON Schema and its triggers."""
        return cast(AutomationList, {"items": _service(request.app.state).describe()})

    @get("/runs", operation_id="listAutomationRuns", sync_to_thread=True)
    def list_runs(
        self,
        engine: Engine,
        workflow: str | None = Parameter(default=None, description="only runs of this automation"),
        status: str | None = choice(RUN_STATUSES, default=None, description="only runs in this status"),
        cursor: str | None = None,
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> AutomationRunPage:
        """Runs by id; filters `workflow` and `status` (an unknown status is a 400)."""
        one_of("status", status, RUN_STATUSES)
        with session_scope(engine, read_only=True) as session:
            rows = page(session, runs.list_query(workflow, status), col(WorkflowRun.id), cursor, limit, lambda r: r)
            return cast(AutomationRunPage, {"items": runs.run_dicts(session, rows["items"]), "next": rows["next"]})

    @get("/runs/{run_id:int}", operation_id="getAutomationRun", sync_to_thread=True)
    def get_run(self, request: Request[Any, Any, Any], run_id: Id) -> AutomationRun:
        """One run: status, params, the campaigns it sent through, its progress."""
        return cast(AutomationRun, _service(request.app.state).run(run_id))

    @post("/runs/{run_id:int}/cancel", operation_id="cancelAutomationRun", status_code=202)
    async def cancel(self, request: Request[Any, Any, Any], run_id: Id) -> AutomationRun:
        """Cancel a running run: nothing more is sent for it; 409 when it has ended."""
        return cast(AutomationRun, await _service(request.app.state).cancel(run_id))

    @post("/{name:str}/runs", operation_id="startAutomationRun", status_code=201)
    async def start(self, request: Request[Any, Any, Any], name: str, data: RunIn) -> AutomationRun:
        """Start a run of `name` with `params`: 422 naming the field when they do not validate, 404 for an
        unknown name."""
        return cast(AutomationRun, await _service(request.app.state).start(name, data.params))
