"""/api/campaigns: create, read, preview, launch and control, message log."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.exceptions import ClientException
from litestar.params import Parameter
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.paging import page
from api.rows import message_dict
from core.campaigns import audience
from core.campaigns.definition import (
    CampaignConflict,
    CampaignInvalid,
    campaign_dict,
    create_campaign,
    get_campaign,
    iter_audience,
    set_status,
    variants_of,
)
from core.campaigns.rendering import render_message
from core.campaigns.schemas import CampaignCreate, PreviewIn, TestSendIn, WinnerIn
from core.campaigns.templates import compile_body
from core.campaigns.testsend import InvalidPhones, send_test_messages
from core.db import session_scope
from core.log import get_logger
from core.models import Campaign, Contact, Message, Variant, utcnow
from workflows.inputs import CampaignInput

log = get_logger("textpulse.api.campaigns")

# Where a control request may come from, and where it leads.
TRANSITIONS = {
    "pause": (("running", "scheduled"), "paused"),
    "resume": (("paused",), "running"),
    "cancel": (("draft", "scheduled", "running", "paused", "waiting"), "cancelled"),
}


def _current_status(engine: Any, campaign_id: int) -> str:
    with session_scope(engine, read_only=True) as session:
        return get_campaign(session, campaign_id).status


def _launch_input(engine: Any, settings: Any, campaign_id: int) -> tuple[CampaignInput, bool]:
    """The workflow's input from the campaign's settings; and whether it waits for a schedule."""
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
    schedule_at = campaign.schedule_at
    scheduled = schedule_at is not None and schedule_at > datetime.now(UTC)
    return CampaignInput(
        campaign_id,
        batch_size=settings.batch_size,
        max_concurrent_batches=settings.max_concurrent_batches,
        send_timeout_seconds=settings.send_timeout_seconds,
        start_at_epoch=schedule_at.timestamp() if scheduled and schedule_at else None,
        ab_wait_seconds=float((campaign.ab_test or {}).get("wait_seconds", 7200)),
        ab_poll_seconds=float(settings.ab_poll_seconds),
        rate_limit_per_second=campaign.rate_limit_per_second,
    ), scheduled


def _campaign_body(engine: Any, campaign_id: int) -> dict[str, Any]:
    with session_scope(engine, read_only=True) as session:
        return campaign_dict(session, get_campaign(session, campaign_id))


class CampaignController(Controller):
    path = "/campaigns"
    tags = ["campaigns"]

    @post("/", operation_id="createCampaign", sync_to_thread=True, status_code=201)
    def create(self, state: State, data: CampaignCreate) -> dict[str, Any]:
        """Create a draft campaign. Every variant is rendered for its audience first: a template that
        fails for some contact is a 422 naming the variable, and nothing is stored."""
        return create_campaign(state.engine, data, providers=set(state.registry.providers))

    @get("/", operation_id="listCampaigns", sync_to_thread=True)
    def list_campaigns(
        self,
        state: State,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> dict[str, Any]:
        """Campaigns by id, with status and progress; filter `status`."""
        query = select(Campaign)
        if status:
            query = query.where(Campaign.status == status)
        with session_scope(state.engine, read_only=True) as session:
            return page(session, query, Campaign.id, cursor, limit, lambda c: campaign_dict(session, c))

    @get("/{campaign_id:int}", operation_id="getCampaign", sync_to_thread=True)
    def get_one(self, state: State, campaign_id: int) -> dict[str, Any]:
        """One campaign with its variants, status and progress."""
        with session_scope(state.engine, read_only=True) as session:
            return campaign_dict(session, get_campaign(session, campaign_id))

    @post("/{campaign_id:int}/preview", operation_id="previewCampaign", sync_to_thread=True, status_code=200)
    def preview(self, state: State, campaign_id: int, data: PreviewIn | None = None) -> dict[str, Any]:
        """Each variant rendered for a few contacts, with characters, encoding, segments and warnings.
        Tracked links are shown with a sample code of the real length; nothing is stored."""
        data = data or PreviewIn()
        registry = state.registry
        public_url = state.settings.public_url
        with session_scope(state.engine, read_only=True) as session:
            campaign = get_campaign(session, campaign_id)
            if data.contact_ids:
                contacts = list(
                    session.scalars(select(Contact).where(Contact.id.in_(data.contact_ids)).order_by(Contact.id))
                )[: data.limit]
            else:
                contacts = []
                for contact in iter_audience(session, campaign):
                    contacts.append(contact)
                    if len(contacts) >= data.limit:
                        break
            out = []
            for variant in variants_of(session, campaign_id):
                if variant.is_control:
                    continue
                template = compile_body(variant.body, variant=variant.name)
                samples = []
                for contact in contacts:
                    rendered = render_message(
                        template,
                        contact,
                        tracking=campaign.tracking or {},
                        variant=variant.name,
                        tracked_url=lambda _p, _d: registry.shortener.tracked_url(
                            registry.shortener.new_code(), public_url
                        ),
                    )
                    samples.append(
                        {
                            "contact_id": contact.id,
                            "phone": contact.phone,
                            "body": rendered.body,
                            "characters": rendered.segments.characters,
                            "encoding": rendered.segments.encoding,
                            "segments": rendered.segments.segments,
                            "warnings": list(rendered.segments.warnings),
                            "links": rendered.destinations,
                        }
                    )
                out.append({"variant": variant.name, "samples": samples})
            return {"variants": out}

    @post("/{campaign_id:int}/test-send", operation_id="testSendCampaign", sync_to_thread=True, status_code=200)
    def test_send(self, state: State, campaign_id: int, data: TestSendIn) -> dict[str, Any]:
        """Send every variant for real to up to 20 phones (E.164) through the campaign's provider, as
        messages of phase `test_send`: tracked links like the real messages, left out of every
        statistic. Unknown phones become contacts; bad phones are a 422 naming each one."""
        try:
            sent = send_test_messages(state.engine, state.registry, campaign_id, data.phones)
        except InvalidPhones as exc:
            raise ClientException(str(exc), status_code=422, extra=exc.problems) from None
        return {"messages": [message_dict(message, variant) for message, variant in sent]}

    @post("/{campaign_id:int}/launch", operation_id="launchCampaign", status_code=202)
    async def launch(self, state: State, campaign_id: int) -> dict[str, Any]:
        """Start workflow `campaign-<id>`; a campaign launches once (409 after that)."""
        engine = state.engine
        workflow_input, scheduled = await anyio.to_thread.run_sync(_launch_input, engine, state.settings, campaign_id)
        moved = await anyio.to_thread.run_sync(
            lambda: set_status(
                engine, campaign_id, "scheduled" if scheduled else "running", only_from=("draft",), launched_at=utcnow()
            )
        )
        if not moved:
            status = await anyio.to_thread.run_sync(_current_status, engine, campaign_id)
            raise CampaignConflict(f"campaign {campaign_id} was launched already (status {status})")
        try:
            client = await state.temporal.get()
            await client.start_workflow(
                "CampaignWorkflow",
                workflow_input,
                id=state.settings.workflow_id(campaign_id),
                task_queue=state.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            raise CampaignConflict(f"campaign {campaign_id} was launched already") from None
        except Exception:
            await anyio.to_thread.run_sync(lambda: set_status(engine, campaign_id, "draft", launched_at=None))
            log.exception("launch failed", campaign_id=campaign_id)
            raise
        return await anyio.to_thread.run_sync(_campaign_body, engine, campaign_id)

    async def _control(self, state: State, campaign_id: int, action: str) -> dict[str, Any]:
        allowed, target = TRANSITIONS[action]
        engine = state.engine
        moved = await anyio.to_thread.run_sync(lambda: set_status(engine, campaign_id, target, only_from=allowed))
        if not moved:
            status = await anyio.to_thread.run_sync(_current_status, engine, campaign_id)
            raise CampaignConflict(
                f"cannot {action} campaign {campaign_id}: it is {status}; "
                f"{action} works when it is {' or '.join(allowed)}"
            )
        try:
            client = await state.temporal.get()
            handle = client.get_workflow_handle(state.settings.workflow_id(campaign_id))
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.RUNNING:
                await handle.signal(action)
        except RPCError as exc:
            log.info("no workflow to signal", campaign_id=campaign_id, action=action, error=str(exc))
        return await anyio.to_thread.run_sync(_campaign_body, engine, campaign_id)

    @post("/{campaign_id:int}/pause", operation_id="pauseCampaign", status_code=202)
    async def pause(self, state: State, campaign_id: int) -> dict[str, Any]:
        """Stop sending after the batches in flight."""
        return await self._control(state, campaign_id, "pause")

    @post("/{campaign_id:int}/resume", operation_id="resumeCampaign", status_code=202)
    async def resume(self, state: State, campaign_id: int) -> dict[str, Any]:
        """Go on sending where the campaign paused."""
        return await self._control(state, campaign_id, "resume")

    @post("/{campaign_id:int}/cancel", operation_id="cancelCampaign", status_code=202)
    async def cancel(self, state: State, campaign_id: int) -> dict[str, Any]:
        """No further message is created or sent; tracked links keep working."""
        return await self._control(state, campaign_id, "cancel")

    @post("/{campaign_id:int}/retry-failed", operation_id="retryFailed", status_code=202)
    async def retry_failed(self, state: State, campaign_id: int) -> dict[str, Any]:
        """Send again, within quiet hours, to each contact whose latest message failed for a reason
        another attempt may fix (not an invalid or unsubscribed number). 409 while the campaign is
        still running, or when nothing is worth retrying."""
        engine, registry = state.engine, state.registry

        def begin() -> int:
            with session_scope(engine, read_only=True) as session:
                status = get_campaign(session, campaign_id).status
                if status != "completed":
                    raise CampaignConflict(
                        f"cannot retry campaign {campaign_id}: it is {status}; retry-failed works once it is completed"
                    )
                if not audience.retryable(session, registry, campaign_id):
                    raise CampaignConflict(f"campaign {campaign_id} has no failed message worth retrying")
            if not set_status(engine, campaign_id, "running", only_from=("completed",), completed_at=None):
                raise CampaignConflict(f"campaign {campaign_id} changed meanwhile; try again")
            return audience.retry_round(engine, campaign_id)

        round_ = await anyio.to_thread.run_sync(begin)
        workflow_input, _ = await anyio.to_thread.run_sync(_launch_input, engine, state.settings, campaign_id)
        try:
            client = await state.temporal.get()
            await client.start_workflow(
                "CampaignWorkflow",
                dataclasses.replace(workflow_input, retry_round=round_, start_at_epoch=None),
                id=f"{state.settings.workflow_id(campaign_id)}-retry-{round_}",
                task_queue=state.settings.task_queue,
            )
        except Exception:
            await anyio.to_thread.run_sync(lambda: set_status(engine, campaign_id, "completed"))
            raise
        return await anyio.to_thread.run_sync(_campaign_body, engine, campaign_id)

    @post("/{campaign_id:int}/winner", operation_id="chooseWinner", status_code=202)
    async def choose_winner(self, state: State, campaign_id: int, data: WinnerIn | None = None) -> dict[str, Any]:
        """End a waiting A/B test: `{"variant": "B"}` sends B to the remainder; `{}` decides now by
        the campaign's policy (statistics, else its fallback). 409 when no test is waiting."""
        engine = state.engine
        variant = (data.variant if data else None) or ""
        body = await anyio.to_thread.run_sync(_campaign_body, engine, campaign_id)
        if body["status"] != "waiting":
            raise CampaignConflict(
                f"campaign {campaign_id} has no A/B test waiting for a winner (status {body['status']})"
            )
        names = [v["name"] for v in body["variants"] if not v["is_control"]]
        if variant and variant not in names:
            raise CampaignInvalid(f"variant {variant!r} is not one of {', '.join(names)}")
        client = await state.temporal.get()
        await client.get_workflow_handle(state.settings.workflow_id(campaign_id)).signal("choose_winner", variant)
        return body

    @get("/{campaign_id:int}/messages", operation_id="listMessages", sync_to_thread=True)
    def messages(
        self,
        state: State,
        campaign_id: int,
        status: str | None = None,
        variant: str | None = None,
        phone: str | None = None,
        phase: str | None = None,
        cursor: str | None = None,
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> dict[str, Any]:
        """The message log: one row per recipient and send, with status, error and tracked body."""
        with session_scope(state.engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            names = {v.id: v.name for v in variants_of(session, campaign_id)}
            query = select(Message).where(Message.campaign_id == campaign_id)
            if status:
                query = query.where(Message.status == status)
            if phone:
                query = query.where(Message.phone == phone)
            if phase:
                query = query.where(Message.phase == phase)
            if variant:
                query = query.where(
                    Message.variant_id.in_(
                        select(Variant.id).where(Variant.campaign_id == campaign_id, Variant.name == variant)
                    )
                )
            return page(session, query, Message.id, cursor, limit, lambda m: message_dict(m, names.get(m.variant_id)))
