"""/api/campaigns: create, read, preview, launch and control, message log.

The routes are thin: `CampaignService` (api/campaign_service.py) does the work.
"""

from __future__ import annotations

from typing import cast

from litestar import Controller, get, post
from litestar.params import Parameter
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from api.campaign_service import CampaignService
from api.paging import page
from api.params import MAX_ID, Id, choice, one_of
from api.rows import message_dict
from api.schemas.campaigns import CampaignDetail, CampaignPage, CampaignPreview, SentTestMessages
from api.schemas.rows import MessagePage
from core.campaigns.definition import campaign_dict, get_campaign, variants_of
from core.campaigns.lifecycle import Move
from core.campaigns.schemas import CampaignCreate, PreviewIn, TestSendIn, WinnerIn
from core.db import session_scope
from core.models import Campaign, Message, Variant
from core.statuses import CampaignKind, CampaignStatus, MessageStatus, Phase

CAMPAIGN_STATUSES = tuple(s.value for s in CampaignStatus)
CAMPAIGN_KINDS = tuple(k.value for k in CampaignKind)
MESSAGE_STATUSES = tuple(s.value for s in MessageStatus)
PHASES = tuple(p.value for p in Phase)


class CampaignController(Controller):
    path = "/campaigns"
    tags = ["campaigns"]

    @post("/", operation_id="createCampaign", sync_to_thread=True, status_code=201)
    def create(self, campaigns: CampaignService, data: CampaignCreate) -> CampaignDetail:
        """Create a draft campaign. Every variant is rendered for its audience first: a template that
        fails for some contact is a 422 naming the variable, and nothing is stored."""
        return cast(CampaignDetail, campaigns.create(data))

    @get("/", operation_id="listCampaigns", sync_to_thread=True)
    def list_campaigns(
        self,
        engine: Engine,
        status: str | None = choice(CAMPAIGN_STATUSES, default=None, description="only campaigns in this status"),
        kind: str | None = choice(CAMPAIGN_KINDS, default=None, description="only campaigns of this kind"),
        parent_id: int | None = Parameter(
            default=None, ge=1, le=MAX_ID, description="only follow-ups of this campaign"
        ),
        cursor: str | None = None,
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> CampaignPage:
        """Campaigns by id, with status and progress; filters `status`, `kind` (campaign, follow_up,
        automation) and `parent_id` (an unknown status or kind is a 400)."""
        one_of("status", status, CAMPAIGN_STATUSES)
        one_of("kind", kind, CAMPAIGN_KINDS)
        query = select(Campaign)
        if status:
            query = query.where(col(Campaign.status) == status)
        if kind:
            query = query.where(col(Campaign.kind) == kind)
        if parent_id is not None:
            query = query.where(col(Campaign.parent_id) == parent_id)
        with session_scope(engine, read_only=True) as session:
            return cast(
                CampaignPage, page(session, query, col(Campaign.id), cursor, limit, lambda c: campaign_dict(session, c))
            )

    @get("/{campaign_id:int}", operation_id="getCampaign", sync_to_thread=True)
    def get_one(self, campaigns: CampaignService, campaign_id: Id) -> CampaignDetail:
        """One campaign with its variants, status and progress."""
        return cast(CampaignDetail, campaigns.body(campaign_id))

    @post("/{campaign_id:int}/preview", operation_id="previewCampaign", sync_to_thread=True, status_code=200)
    def preview(self, campaigns: CampaignService, campaign_id: Id, data: PreviewIn | None = None) -> CampaignPreview:
        """Each variant rendered for a few contacts, with characters, encoding, segments and warnings.
        Tracked links are shown with a sample code of the real length; nothing is stored."""
        data = data or PreviewIn()
        return cast(CampaignPreview, campaigns.preview(campaign_id, contact_ids=data.contact_ids, limit=data.limit))

    @post("/{campaign_id:int}/test-send", operation_id="testSendCampaign", sync_to_thread=True, status_code=200)
    def test_send(self, campaigns: CampaignService, campaign_id: Id, data: TestSendIn) -> SentTestMessages:
        """Send every variant for real to up to 20 phones (E.164) through the campaign's provider, as
        messages of phase `test_send`: tracked links like the real messages, left out of every
        statistic. No contact is created or changed: a phone that is no contact is rendered with
        sample values (`name` "Test", empty attributes) and its messages have no `contact_id`. Bad
        phones are a 422 naming each one; so are opted-out contacts' phones, unless
        `"allow_opted_out": true`."""
        return cast(
            SentTestMessages, campaigns.test_send(campaign_id, data.phones, allow_opted_out=data.allow_opted_out)
        )

    @post("/{campaign_id:int}/launch", operation_id="launchCampaign", status_code=202)
    async def launch(self, campaigns: CampaignService, campaign_id: Id) -> CampaignDetail:
        """Start workflow `campaign-<id>`; a campaign launches once (409 after that)."""
        return cast(CampaignDetail, await campaigns.launch(campaign_id))

    @post("/{campaign_id:int}/pause", operation_id="pauseCampaign", status_code=202)
    async def pause(self, campaigns: CampaignService, campaign_id: Id) -> CampaignDetail:
        """Stop sending after the batches in flight; 409 unless the campaign is running or scheduled."""
        return cast(CampaignDetail, await campaigns.control(campaign_id, Move.PAUSE))

    @post("/{campaign_id:int}/resume", operation_id="resumeCampaign", status_code=202)
    async def resume(self, campaigns: CampaignService, campaign_id: Id) -> CampaignDetail:
        """Go on sending where the campaign paused; 409 unless it is paused."""
        return cast(CampaignDetail, await campaigns.control(campaign_id, Move.RESUME))

    @post("/{campaign_id:int}/cancel", operation_id="cancelCampaign", status_code=202)
    async def cancel(self, campaigns: CampaignService, campaign_id: Id) -> CampaignDetail:
        """No further message is created or sent; tracked links keep working. 409 once it has ended."""
        return cast(CampaignDetail, await campaigns.control(campaign_id, Move.CANCEL))

    @post("/{campaign_id:int}/retry-failed", operation_id="retryFailed", status_code=202)
    async def retry_failed(self, campaigns: CampaignService, campaign_id: Id) -> CampaignDetail:
        """Send again, within quiet hours, to each contact whose latest message failed for a reason
        another attempt may fix (not an invalid or unsubscribed number). 409 while the campaign is
        still running, or when nothing is worth retrying."""
        return cast(CampaignDetail, await campaigns.retry_failed(campaign_id))

    @post("/{campaign_id:int}/winner", operation_id="chooseWinner", status_code=202)
    async def choose_winner(
        self, campaigns: CampaignService, campaign_id: Id, data: WinnerIn | None = None
    ) -> CampaignDetail:
        """End a waiting A/B test: `{"variant": "B"}` sends B to the remainder; `{}` decides now by
        the campaign's policy (statistics, else its fallback). 409 when no test is waiting."""
        return cast(CampaignDetail, await campaigns.choose_winner(campaign_id, data.variant if data else None))

    @get("/{campaign_id:int}/messages", operation_id="listMessages", sync_to_thread=True)
    def messages(
        self,
        engine: Engine,
        campaign_id: Id,
        status: str | None = choice(MESSAGE_STATUSES, default=None, description="only messages in this status"),
        variant: str | None = Parameter(default=None, description="only messages of this variant (its name)"),
        phone: str | None = None,
        phase: str | None = choice(PHASES, default=None, description="only messages of this phase"),
        cursor: str | None = None,
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> MessagePage:
        """The message log: one row per recipient and send, with status, error and tracked body.
        Filters `status`, `variant`, `phase`, `phone`; an unknown status, phase or variant is a 400
        naming the values it may take."""
        one_of("status", status, MESSAGE_STATUSES)
        one_of("phase", phase, PHASES)
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            names = {v.id: v.name for v in variants_of(session, campaign_id)}
            one_of("variant", variant, sorted(names.values()))
            query = select(Message).where(col(Message.campaign_id) == campaign_id)
            if status:
                query = query.where(col(Message.status) == status)
            if phone:
                query = query.where(col(Message.phone) == phone)
            if phase:
                query = query.where(col(Message.phase) == phase)
            if variant:
                query = query.where(
                    col(Message.variant_id).in_(
                        select(col(Variant.id)).where(
                            col(Variant.campaign_id) == campaign_id, col(Variant.name) == variant
                        )
                    )
                )
            return cast(
                MessagePage,
                page(
                    session, query, col(Message.id), cursor, limit, lambda m: message_dict(m, names.get(m.variant_id))
                ),
            )
