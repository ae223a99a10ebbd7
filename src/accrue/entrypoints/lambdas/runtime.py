"""The Lambda functions' application: built once per execution environment, on the first call.

Nothing happens at import (no I/O, no environment read): the first invocation reads the settings
(``ACCRUE_*`` from the function's environment), fetches the JWT secret from Secrets Manager when
``ACCRUE_JWT_SECRET_ARN`` is set and the inbound webhook providers' secrets when
``ACCRUE_WEBHOOK_SECRETS_ARN`` is set, and bootstraps the AWS backend. Later invocations reuse it.
A secret that breaks a rule fails the invocation with a ``ValueError`` naming its variable; nothing
is kept, so the next invocation reads the secrets again (a corrected secret needs no deployment).
Tests inject an application (or AWS clients) with ``use``.
"""

from __future__ import annotations

import threading
from typing import Any

from accrue.bootstrap import Application, bootstrap
from accrue.config import DEVELOPMENT_JWT_SECRET, Settings, with_webhook_secrets

_lock = threading.Lock()
_application: Application | None = None
_clients: dict[str, Any] = {}


def use(application: Application | None = None, **clients: Any) -> None:
    """Install a ready application, or AWS clients for the next build (tests; other runtimes)."""
    global _application
    with _lock:
        _application = application
        _clients.clear()
        _clients.update(clients)


def reset() -> None:
    use(None)


def application() -> Application:
    global _application
    with _lock:
        if _application is None:
            _application = build(Settings(), dict(_clients))
        return _application


def build(settings: Settings, clients: dict[str, Any]) -> Application:
    if settings.jwt_secret_arn:
        secret = fetch_secret(settings, clients, settings.jwt_secret_arn, "ACCRUE_JWT_SECRET_ARN")
        # The rule for ACCRUE_JWT_SECRET, checked now that the real secret is known.
        if settings.env == "production" and (secret == DEVELOPMENT_JWT_SECRET or len(secret) < 32):
            raise ValueError("ACCRUE_JWT_SECRET_ARN: the secret must be 32+ characters and not the development one")
        settings = settings.model_copy(update={"jwt_secret": secret})
    if settings.webhook_secrets_arn:
        document = fetch_secret(settings, clients, settings.webhook_secrets_arn, "ACCRUE_WEBHOOK_SECRETS_ARN")
        # Validated again as Settings: the rules of ACCRUE_*_WEBHOOK_SECRETS apply to these values too.
        settings = with_webhook_secrets(settings, document, origin="ACCRUE_WEBHOOK_SECRETS_ARN")
    return bootstrap(settings, **clients)


def fetch_secret(settings: Settings, clients: dict[str, Any], secret_id: str, variable: str) -> str:
    """The SecretString of ``secret_id`` (named by the setting ``variable``, for error messages)."""
    client = clients.get("secretsmanager")
    if client is None:
        import boto3

        client = boto3.client("secretsmanager", endpoint_url=settings.aws_endpoint_url)
        clients["secretsmanager"] = client
    value = client.get_secret_value(SecretId=secret_id)
    secret = value.get("SecretString")
    if not secret:
        raise ValueError(f"{variable}: the secret has no string value")
    return str(secret)
