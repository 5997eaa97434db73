"""Exported Para / Capsule sessions: pure parsing and validation, no I/O and no clock.

``parse_session(serialized, now=...)`` checks an exported session and returns a :class:`ParsedSession`
holding only non-secret facts (user id, wallet ids and types, whether signers are present, the cookie's
expiry). Rejections raise :class:`vault.errors.InvalidSession` (or :class:`vault.errors.SessionExpired`)
with a fixed reason that never quotes the input.
"""

from __future__ import annotations

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
]
