"""/api/contacts: upsert (JSON or CSV), list with filters, one contact with its history."""

from __future__ import annotations

import csv
import io
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import Parameter
from sqlalchemy import select

from api.paging import page
from core.campaigns.definition import iso
from core.contacts.directory import upsert_contacts
from core.db import session_scope
from core.models import Click, Contact, Conversion, Message, Reply

IMPORT_MAX_BODY = 20_000_000


def contact_dict(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "phone": contact.phone,
        "name": contact.name,
        "timezone": contact.timezone,
        "attributes": contact.attributes or {},
        "opted_out_at": iso(contact.opted_out_at),
        "created_at": iso(contact.created_at),
        "updated_at": iso(contact.updated_at),
    }


class ContactController(Controller):
    path = "/contacts"
    tags = ["contacts"]

    @post("/", operation_id="upsertContacts", sync_to_thread=True, status_code=200)
    def upsert(self, state: State, data: list[Any]) -> dict[str, Any]:
        """Upsert contacts by E.164 phone; invalid rows are reported by index, valid rows kept."""
        result = upsert_contacts(state.engine, data)
        return {"created": result.created, "updated": result.updated, "invalid": result.invalid}

    @post("/import", operation_id="importContacts", status_code=200, request_max_body_size=IMPORT_MAX_BODY)
    async def import_csv(self, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """CSV with a header row: phone, name, timezone; other columns become attributes."""
        if not request.headers.get("content-type", "").startswith("text/csv"):
            raise ClientException("send the file as text/csv", status_code=415)
        raw = await request.body()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ClientException(f"the CSV is not UTF-8: {exc}") from exc
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
        import anyio.to_thread

        result = await anyio.to_thread.run_sync(upsert_contacts, state.engine, rows)
        return {"created": result.created, "updated": result.updated, "invalid": result.invalid}

    @get("/", operation_id="listContacts", sync_to_thread=True)
    def list_contacts(
        self,
        state: State,
        request: Request[Any, Any, Any],
        phone: str | None = None,
        opted_out: bool | None = None,
        cursor: str | None = None,
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> dict[str, Any]:
        """Contacts by id; filters `phone`, `opted_out`, and `attribute.<name>=value`."""
        wanted = {k[len("attribute.") :]: v for k, v in request.query_params.items() if k.startswith("attribute.")}
        query = select(Contact)
        if phone:
            query = query.where(Contact.phone == phone)
        if opted_out is not None:
            query = query.where(Contact.opted_out_at.is_not(None) if opted_out else Contact.opted_out_at.is_(None))
        with session_scope(state.engine, read_only=True) as session:

            def keep(contact: Contact) -> bool:
                attrs = contact.attributes or {}
                return all(str(attrs.get(k)) == v for k, v in wanted.items())

            return page(session, query, Contact.id, cursor, limit, contact_dict, keep=keep if wanted else None)

    @get("/{contact_id:int}", operation_id="getContact", sync_to_thread=True)
    def get_contact(self, state: State, contact_id: int) -> dict[str, Any]:
        """One contact with its messages, clicks, replies and conversions."""
        with session_scope(state.engine, read_only=True) as session:
            contact = session.get(Contact, contact_id)
            if contact is None:
                raise NotFoundException(f"contact {contact_id} does not exist")
            body = contact_dict(contact)
            from api.rows import click_dict, message_dict  # local: avoids an import cycle

            body["messages"] = [
                message_dict(m)
                for m in session.scalars(
                    select(Message).where(Message.contact_id == contact_id).order_by(Message.id.desc()).limit(200)
                )
            ]
            body["clicks"] = [
                click_dict(c, contact.phone)
                for c in session.scalars(
                    select(Click).where(Click.contact_id == contact_id).order_by(Click.id.desc()).limit(200)
                )
            ]
            body["replies"] = [
                {
                    "id": r.id,
                    "campaign_id": r.campaign_id,
                    "message_id": r.message_id,
                    "body": r.body,
                    "keyword": r.keyword,
                    "received_at": iso(r.received_at),
                }
                for r in session.scalars(select(Reply).where(Reply.contact_id == contact_id).order_by(Reply.id.desc()))
            ]
            body["conversions"] = [
                {
                    "id": c.id,
                    "campaign_id": c.campaign_id,
                    "message_id": c.message_id,
                    "name": c.name,
                    "revenue": c.revenue,
                    "occurred_at": iso(c.occurred_at),
                }
                for c in session.scalars(
                    select(Conversion).where(Conversion.contact_id == contact_id).order_by(Conversion.id.desc())
                )
            ]
            return body
