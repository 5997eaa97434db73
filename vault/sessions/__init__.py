"""Exported Para / Capsule sessions: pure parsing and validation, no I/O and no clock.

``parse_session(serialized, now=...)`` checks an exported session and returns a :class:`ParsedSession`
holding only non-secret facts (user id, wallet ids and types, whether signers are present, the session's
effective expiry: the cookie's ``Max-Age`` or ``Expires``, capped by an optional ``max_lifetime``).
Rejections raise :class:`vault.errors.InvalidSession` (or :class:`vault.errors.SessionExpired`) with a fixed
reason that never quotes the input.

``wallet_change(old, new)`` tells whether a refreshed session keeps the wallets (and signers) of the one it
would replace: ``None`` if so, else a fixed reason.
"""

from __future__ import annotations

from vault.sessions._compare import wallet_change
from vault.sessions._parse import (
    MAX_SESSION_CHARS,
    ParsedSession,
    SessionFormat,
    WalletInfo,
    normalize_subject,
    parse_session,
)

__all__ = [
    "MAX_SESSION_CHARS",
    "ParsedSession",
    "SessionFormat",
    "WalletInfo",
    "normalize_subject",
    "parse_session",
    "wallet_change",
]
