"""Subscribe tokens, minted the way the host application mints them.

With ``axion_push.subscribe_token_secret`` set, the daemon accepts
``subscribe`` and ``unsubscribe`` only with a token made with that secret
for the user and package. The client runs on Axion's server with the
daemon's own config.yaml, so it holds the secret and makes the token
itself, valid for a few minutes, for each command.

:func:`subscribe_token` mirrors the daemon's ``TokenKey::issue``
(``src/token.rs``) exactly; the tests check a token made here against
``axion-push subscribe-token`` and have the daemon accept it, so a change
of the format on either side fails there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Optional

#: Seconds a token minted for one command stays valid: long enough for a
#: command that waits in the broker, short enough to be worthless if seen.
LIFETIME = 300


def subscribe_token(secret: str, package: str, user: str, expires: int) -> str:
    """``{expires}.{base64url(HMAC-SHA256(secret, "axion-push subscribe
    v1\\n{package}\\n{user}\\n{expires}"))}``, ``expires`` in seconds since
    the epoch."""
    signed = f"axion-push subscribe v1\n{package}\n{user}\n{expires}"
    tag = hmac.new(secret.encode("utf-8"), signed.encode("utf-8"), hashlib.sha256).digest()
    return f"{expires}.{base64.urlsafe_b64encode(tag).rstrip(b'=').decode('ascii')}"


def fresh_token(secret: str, package: str, user: str, now: Optional[float] = None) -> str:
    """A token for one command, valid for :data:`LIFETIME` seconds."""
    expires = int(time.time() if now is None else now) + LIFETIME
    return subscribe_token(secret, package, user, expires)
