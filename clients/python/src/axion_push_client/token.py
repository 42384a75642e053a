"""Subscribe tokens, minted the way the host application mints them.

With ``axion_push.subscribe_token_secret`` set, the daemon accepts
``subscribe``, ``unsubscribe`` and ``list`` (and a browser's login on the
embedded broker's WebSocket listener) only with a token made with that
secret for the user and package. The client runs on Axion's server with the
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
import struct
import time
import unicodedata
from typing import Optional

#: Seconds a token minted for one command stays valid: long enough for a
#: command that waits in the broker, short enough to be worthless if seen.
LIFETIME = 300

#: The longest a token may be valid from the moment the daemon checks it
#: (``MAX_LIFETIME_SECS`` in ``src/token.rs``).
MAX_LIFETIME = 7 * 24 * 3600

_DOMAIN = b"axion-push token v2"


def _signed(package: str, user: str, expires: int) -> bytes:
    """``axion-push token v2`` then each of package, user and the decimal
    expiry as its UTF-8 length (4 bytes, big-endian) and its UTF-8 bytes:
    fields that cannot be shifted into one another, whatever they hold."""
    out = bytearray(_DOMAIN)
    for field in (package, user, str(expires)):
        data = field.encode("utf-8")
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


def subscribe_token(secret: str, package: str, user: str, expires: int) -> str:
    """``v2.{expires}.{base64url(HMAC-SHA256(secret, signed))}``, ``expires``
    in seconds since the epoch; see :func:`_signed` for the signed bytes."""
    for kind, name in (("package", package), ("user", user)):
        if any(unicodedata.category(c) == "Cc" for c in name):
            raise ValueError(f"{kind} contains a control character, which names may not contain")
    tag = hmac.new(secret.encode("utf-8"), _signed(package, user, expires), hashlib.sha256).digest()
    return f"v2.{expires}.{base64.urlsafe_b64encode(tag).rstrip(b'=').decode('ascii')}"


def fresh_token(secret: str, package: str, user: str, now: Optional[float] = None) -> str:
    """A token for one command, valid for :data:`LIFETIME` seconds."""
    expires = int(time.time() if now is None else now) + LIFETIME
    return subscribe_token(secret, package, user, expires)
