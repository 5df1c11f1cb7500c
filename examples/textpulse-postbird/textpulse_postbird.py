"""Postbird: an example Textpulse provider plugin in one file.

Postbird is an imaginary SMS gateway with a plain JSON API:
  POST {api_url}/v1/messages  {"to", "text", "callback_url"}  Authorization: Bearer <api_key>,
       Idempotency-Key: <key>  ->  201 {"id"} | 4xx/5xx {"error": {"code", "message"}}
  webhooks (to callback_url and to the inbound URL you give Postbird): JSON bodies signed with
       X-Postbird-Signature: hex HMAC-SHA256 of the raw body with webhook_secret
       status  {"id", "state": accepted|delivered|failed|expired, "error"?: {"code", "message"}, "at"?}
       inbound {"id", "from", "to", "text"}

Everything a provider does is here: settings, sending (with the gateway's idempotency key, so a
retried send is never delivered twice and no `find_sent` is needed), verifying and parsing both
webhooks, and answering an inbound message; and the optional abilities it has (`reports_delivery`,
`unsubscribed_error_codes`, `check_config`, `close`). It imports from `textpulse` only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from textpulse import (
    InboundMessage,
    MessageStatus,
    OutgoingMessage,
    PluginContext,
    Provider,
    SendResult,
    StatusUpdate,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
    hookimpl,
)

# Postbird's states → Textpulse's (queued, sending, sent, delivered, undelivered, failed, cancelled).
STATES = {
    "accepted": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "failed": MessageStatus.FAILED,
    "expired": MessageStatus.UNDELIVERED,
}


class PostbirdProvider:
    name = "postbird"  # campaigns say "provider": "postbird"; webhooks are /webhooks/postbird/...
    reports_delivery = True  # CTR is then computed on delivered messages
    unsubscribed_error_codes = frozenset({"recipient_opted_out"})  # such a refusal opts the contact out

    def __init__(self, settings: dict[str, Any]) -> None:
        self.api_url = str(settings.get("api_url") or "").rstrip("/")
        self.api_key = str(settings.get("api_key") or "")
        self.webhook_secret = str(settings.get("webhook_secret") or "")
        self._client: httpx.Client | None = None

    # -- optional: what is wrong with the settings (shown before a campaign is sent through it) ---
    def check_config(self) -> list[str]:
        wanted = {"api_url": self.api_url, "api_key": self.api_key, "webhook_secret": self.webhook_secret}
        return [f"postbird: {key} is not set" for key, value in wanted.items() if not value]

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.api_url, timeout=10, headers={"authorization": f"Bearer {self.api_key}"}
            )
        return self._client

    # -- sending: called by the send activity (in a worker thread) with up to one batch ----------
    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        if not self.api_url or not self.api_key:
            return [
                SendResult(
                    m.message_id,
                    False,
                    error_code="not_configured",
                    error_text="set api_url and api_key in [plugins.postbird]",
                )
                for m in messages
            ]
        results: list[SendResult] = []
        for message in messages:
            try:
                response = self._http().post(
                    "/v1/messages",
                    headers={"idempotency-key": message.idempotency_key},
                    json={"to": message.to, "text": message.body, "callback_url": message.status_callback_url},
                )
            except httpx.HTTPError as exc:
                # Safe to retry even if it arrived: the idempotency key makes Postbird answer the same id.
                results.append(
                    SendResult(message.message_id, False, error_code="network", error_text=str(exc), transient=True)
                )
                continue
            if response.status_code in (200, 201):
                results.append(SendResult(message.message_id, True, provider_message_id=response.json()["id"]))
                continue
            error = (
                response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            ).get("error", {})
            results.append(
                SendResult(
                    message.message_id,
                    False,
                    error_code=str(error.get("code") or response.status_code),
                    error_text=str(error.get("message") or response.reason_phrase),
                    # Worth another try later: throttled or down. Anything else is the final answer.
                    transient=response.status_code == 429 or response.status_code >= 500,
                )
            )
        return results

    # -- webhooks: called by the API (in its thread pool) with the request as received ------------
    def _verified_json(self, request: WebhookRequest) -> dict[str, Any]:
        if not self.webhook_secret:
            raise WebhookError(403, "postbird webhooks are refused: no webhook_secret is configured")
        expected = hmac.new(self.webhook_secret.encode(), request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("x-postbird-signature", "")):
            raise WebhookError(403, "X-Postbird-Signature is missing or does not match")
        if not request.content_type.startswith("application/json"):
            raise WebhookError(415, f"expected application/json, got {request.content_type or 'nothing'}")
        try:
            data = json.loads(request.body)
        except ValueError as exc:
            raise WebhookError(400, f"body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise WebhookError(400, "body must be a JSON object")
        return data

    @staticmethod
    def _text(data: dict[str, Any], key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise WebhookError(400, f"field '{key}' is required and must be a string")
        return value

    def parse_status(self, request: WebhookRequest) -> list[StatusUpdate]:
        data = self._verified_json(request)
        state = self._text(data, "state")
        if state not in STATES:
            raise WebhookError(400, f"field 'state' must be one of {', '.join(STATES)}, got {state!r}")
        error: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else {}
        at = data.get("at")
        try:
            occurred_at = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError as exc:
            raise WebhookError(400, f"field 'at' is not an ISO 8601 time: {at!r}") from exc
        return [
            StatusUpdate(
                provider_message_id=self._text(data, "id"),
                status=STATES[state],
                error_code=error.get("code"),
                error_text=error.get("message"),
                occurred_at=occurred_at if occurred_at and occurred_at.tzinfo else None,
            )
        ]

    def parse_inbound(self, request: WebhookRequest) -> InboundMessage:
        data = self._verified_json(request)
        return InboundMessage(
            from_phone=self._text(data, "from"),
            to=self._text(data, "to"),
            body=str(data.get("text") or ""),
            provider_message_id=data.get("id"),
        )

    def inbound_response(self, inbound: InboundMessage, answer: str | None) -> WebhookResponse:
        # Postbird sends `reply` back to the sender (Textpulse's HELP text, for example).
        return WebhookResponse(200, json.dumps({"reply": answer}).encode(), "application/json")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@hookimpl
def register_providers(register: Callable[[Provider], None], config: PluginContext) -> None:
    """Textpulse calls this once per process; `plugin_settings` merges plugins.toml and the environment."""
    register(PostbirdProvider(config.plugin_settings("postbird")))
