"""/api/contacts: upsert (JSON or CSV), list with filters, one contact with its history."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any, cast

import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import Parameter
from sqlalchemy import Select, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from api.dependencies import Registry
from api.paging import page
from api.params import Id
from api.rows import click_dict, message_dict
from api.schemas.contacts import (
    ContactConversion,
    ContactDetail,
    ContactPage,
    ContactReply,
    ContactRow,
    ContactsUpserted,
)
from api.schemas.rows import ClickRow, MessageRow, RejectedRow
from core.campaigns.definition import iso
from core.contacts.filters import matching_contacts
from core.contacts.importing import UpsertResult, upsert_contacts
from core.db import session_scope
from core.hooks.contracts import ContactCreated
from core.hooks.registry import PluginRegistry
from core.log import get_logger
from core.models import Click, Contact, Conversion, Message, Reply

log = get_logger("textpulse.api.contacts")

IMPORT_MAX_BODY = 20_000_000
HISTORY_LIMIT = 200  # messages and clicks shown with one contact, the newest

# The row builders below cast their dicts: a stored row's id is set and iso() of a set timestamp
# is a string, which the models' types (`int | None`, `str | None`) cannot say.


def contact_dict(contact: Contact) -> ContactRow:
    return cast(
        ContactRow,
        {
            "id": contact.id,
            "phone": contact.phone,
            "name": contact.name,
            "timezone": contact.timezone,
            "attributes": contact.attributes or {},
            "opted_out_at": iso(contact.opted_out_at),
            "created_at": iso(contact.created_at),
            "updated_at": iso(contact.updated_at),
        },
    )


def list_query(
    wanted: dict[str, str], *, phone: str | None = None, opted_out: bool | None = None
) -> tuple[Select[Contact], Any, list[Any]]:
    """What GET /api/contacts lists, the id column its pages are cut by and the columns equal to
    it (api/paging.py `page`): with an attribute filter, the pages follow contact_id along
    ix_contact_attribute_key_value from the cursor, and contact.id takes the cursor too."""
    query = select(Contact)
    id_column: Any = col(Contact.id)
    also: list[Any] = []
    if wanted:
        matched = matching_contacts(wanted).subquery("matched")
        query = query.join(matched, matched.c.contact_id == col(Contact.id))
        id_column, also = matched.c.contact_id, [col(Contact.id)]
    if phone:
        query = query.where(col(Contact.phone) == phone)
    if opted_out is not None:
        query = query.where(
            col(Contact.opted_out_at).is_not(None) if opted_out else col(Contact.opted_out_at).is_(None)
        )
    return query, id_column, also


def _reply(reply: Reply) -> ContactReply:
    return cast(
        ContactReply,
        {
            "id": reply.id,
            "campaign_id": reply.campaign_id,
            "message_id": reply.message_id,
            "body": reply.body,
            "keyword": reply.keyword,
            "received_at": iso(reply.received_at),
        },
    )


def _conversion(conversion: Conversion) -> ContactConversion:
    return cast(
        ContactConversion,
        {
            "id": conversion.id,
            "campaign_id": conversion.campaign_id,
            "message_id": conversion.message_id,
            "name": conversion.name,
            "revenue": conversion.revenue,
            "occurred_at": iso(conversion.occurred_at),
        },
    )


def _upserted(result: UpsertResult) -> ContactsUpserted:
    return {"created": result.created, "updated": result.updated, "invalid": cast(list[RejectedRow], result.invalid)}


def _announcer(registry: PluginRegistry) -> Callable[[list[ContactCreated]], None] | None:
    """Tells `on_contact_created` listeners (the automation relay among them) of new contacts."""
    if not registry.listens("on_contact_created"):
        return None

    def announce(events: list[ContactCreated]) -> None:
        for event in events:  # stored already: a failing listener is logged, never a failed request
            try:
                registry.pm.hook.on_contact_created(event=event)
            except Exception:
                log.exception("on_contact_created listener failed", contact_id=event.contact_id)

    return announce


def _csv_rows(text: str) -> list[dict[str, Any]]:
    """The rows of a contacts CSV as upsert_contacts takes them (a ClientException for a CSV
    without a phone column; csv.Error for one the csv module cannot read)."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "phone" not in [f.strip().lower() for f in reader.fieldnames]:
        raise ClientException("the CSV needs a header row with a 'phone' column")
    rows = []
    for record in reader:
        fields = {(k or "").strip().lower(): (v or "").strip() for k, v in record.items()}
        row: dict[str, Any] = {"phone": fields.pop("phone", "")}
        for key in ("name", "timezone"):
            if fields.get(key):
                row[key] = fields.pop(key)
            fields.pop(key, None)
        row["attributes"] = {k: v for k, v in fields.items() if k and v != ""}
        rows.append(row)
    return rows


class ContactController(Controller):
    path = "/contacts"
    tags = ["contacts"]

    @post("/", operation_id="upsertContacts", sync_to_thread=True, status_code=200)
    def upsert(self, engine: Engine, registry: Registry, data: list[Any]) -> ContactsUpserted:
        """Upsert contacts by E.164 phone; invalid rows are reported by index, valid rows kept."""
        return _upserted(upsert_contacts(engine, data, on_created=_announcer(registry)))

    @post("/import", operation_id="importContacts", status_code=200, request_max_body_size=IMPORT_MAX_BODY)
    async def import_csv(self, engine: Engine, registry: Registry, request: Request[Any, Any, Any]) -> ContactsUpserted:
        """CSV with a header row: phone, name, timezone; other columns become attributes."""
        if not request.headers.get("content-type", "").startswith("text/csv"):
            raise ClientException("send the file as text/csv", status_code=415)
        raw = await request.body()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ClientException(f"the CSV is not UTF-8: {exc}") from exc
        if "\x00" in text:
            raise ClientException("the CSV holds a NUL character, which no field takes")
        try:
            rows = _csv_rows(text)
        except csv.Error as exc:  # a cell past the csv module's field limit, say
            raise ClientException(f"the CSV cannot be read: {exc}") from None
        announce = _announcer(registry)
        return _upserted(await anyio.to_thread.run_sync(lambda: upsert_contacts(engine, rows, on_created=announce)))

    @get("/", operation_id="listContacts", sync_to_thread=True)
    def list_contacts(
        self,
        engine: Engine,
        request: Request[Any, Any, Any],
        phone: str | None = None,
        opted_out: bool | None = None,
        cursor: str | None = None,
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> ContactPage:
        """Contacts by id; filters `phone`, `opted_out`, and `attribute.<name>=value` (compared as
        text: `attribute.age=30` matches the number 30 and the string "30", `attribute.vip=true`
        the boolean)."""
        wanted = {k[len("attribute.") :]: v for k, v in request.query_params.items() if k.startswith("attribute.")}
        query, id_column, also = list_query(wanted, phone=phone, opted_out=opted_out)
        with session_scope(engine, read_only=True) as session:
            return page(session, query, id_column, cursor, limit, contact_dict, also=also)

    @get("/{contact_id:int}", operation_id="getContact", sync_to_thread=True)
    def get_contact(self, engine: Engine, contact_id: Id) -> ContactDetail:
        """One contact with its messages, clicks, replies and conversions."""
        with session_scope(engine, read_only=True) as session:
            contact = session.get(Contact, contact_id)
            if contact is None:
                raise NotFoundException(f"contact {contact_id} does not exist")
            messages = session.scalars(
                select(Message)
                .where(col(Message.contact_id) == contact_id)
                .order_by(col(Message.id).desc())
                .limit(HISTORY_LIMIT)
            ).all()
            clicks = session.scalars(
                select(Click)
                .where(col(Click.contact_id) == contact_id)
                .order_by(col(Click.id).desc())
                .limit(HISTORY_LIMIT)
            ).all()
            replies = session.scalars(
                select(Reply).where(col(Reply.contact_id) == contact_id).order_by(col(Reply.id).desc())
            ).all()
            conversions = session.scalars(
                select(Conversion).where(col(Conversion.contact_id) == contact_id).order_by(col(Conversion.id).desc())
            ).all()
            return {
                **contact_dict(contact),
                "messages": [cast(MessageRow, message_dict(m)) for m in messages],
                "clicks": [cast(ClickRow, click_dict(c, contact.phone)) for c in clicks],
                "replies": [_reply(r) for r in replies],
                "conversions": [_conversion(c) for c in conversions],
            }
