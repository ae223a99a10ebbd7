"""Outbound webhook requests over httpx, signed per Standard Webhooks with the ``standardwebhooks``
library, and pinned to an address the SSRF guard has just approved."""

from __future__ import annotations

import socket
import ssl
import time
from datetime import datetime
from math import floor

import certifi
import httpx
from standardwebhooks.webhooks import Webhook

from accrue.adapters.local import ssrf
from accrue.domain.webhooks import UrlRefused
from accrue.ports import HttpAttemptResult, WebhookSender

USER_AGENT = "accrue-webhooks/0.1"


class HttpxWebhookSender(WebhookSender):
    def __init__(
        self,
        *,
        timeout_seconds: float = 10.0,
        allow_loopback: bool = False,
        allow_http: bool = True,
        resolver: ssrf.Resolver = socket.getaddrinfo,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.allow_loopback = allow_loopback
        self.allow_http = allow_http
        self.resolver = resolver
        self.transport = transport
        # Built once: loading the CA bundle costs far more than a request to a nearby receiver.
        self.ssl_context = ssl.create_default_context(cafile=certifi.where())

    def check_url(self, url: str) -> None:
        self._target(url)

    def _target(self, url: str) -> ssrf.Target:
        return ssrf.check_url(
            url, allow_loopback=self.allow_loopback, allow_http=self.allow_http, resolver=self.resolver
        )

    @staticmethod
    def signed_headers(secret: str, message_id: str, timestamp: datetime, payload: str) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(floor(timestamp.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, timestamp, payload),
        }

    def deliver(self, url: str, secret: str, message_id: str, timestamp: datetime, payload: str) -> HttpAttemptResult:
        started = time.monotonic()
        try:
            # Checked again at delivery time: the name may resolve elsewhere than at creation.
            target = self._target(url)
        except UrlRefused as exc:
            return HttpAttemptResult(status_code=None, error=f"refused: {exc.rule}", duration_ms=0)
        address = target.addresses[0]
        pinned = httpx.URL(url).copy_with(host=str(address))
        headers = self.signed_headers(secret, message_id, timestamp, payload)
        headers["host"] = target.host_header
        # TLS still verifies the certificate against the name, not the pinned address. A fresh client
        # per delivery: a pooled connection made for one name must never carry another's request.
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            with (
                httpx.Client(
                    verify=self.ssl_context,
                    timeout=self.timeout_seconds,
                    follow_redirects=False,
                    trust_env=False,  # an environment proxy would bypass the address pinning
                    transport=self.transport,
                ) as client,
                client.stream(
                    "POST", pinned, content=payload.encode(), headers=headers, extensions=extensions
                ) as response,
            ):
                # The body is never read: only the status matters, and a slow body must not stall us.
                status = response.status_code
        except httpx.HTTPError as exc:
            return HttpAttemptResult(
                status_code=None,
                error=f"{type(exc).__name__}: {exc}"[:500],
                duration_ms=_elapsed_ms(started),
            )
        return HttpAttemptResult(status_code=status, error=None, duration_ms=_elapsed_ms(started))


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
