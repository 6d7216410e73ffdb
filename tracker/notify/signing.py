"""Standard Webhooks signing: `whsec_` secrets and the `webhook-*` headers of one attempt.

The receiver's side is the official `standardwebhooks` library; tests verify every delivery with
it. Signed content is `{webhook-id}.{webhook-timestamp}.{body}` over the exact bytes sent
(notifications-reference.md, section 1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24  # the spec asks for 24 to 64 random bytes; Svix uses 24


def new_secret() -> str:
    """A fresh `whsec_` secret: base64 of SECRET_BYTES random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: base64-decoded after the `whsec_` prefix, as the libraries do
    (reference section 5, item 11: never the secret's text itself)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64 HMAC-SHA256>` entry."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(
    secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature per secret (two during a rotation)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_),
        "content-type": "application/json",
    }
