"""Parse an exported Para (or older Capsule) session into the facts the vault keeps in the clear.

An exported session is plain base64 of JSON with no version field (see the design notes). The parser
checks the shape strictly, keeps only non-secret facts (user id, wallet ids/types/schemes, whether signers
are present, the session's effective expiry) and drops everything else. Every rejection carries a fixed
reason: no part of the input ever reaches an exception message, and decoder errors (which can quote
input) are dropped with ``from None``.

Optional fields that are ``null`` count as absent (JavaScript exporters write ``null`` for unset values).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NoReturn

from vault.errors import InvalidSession, SessionExpired
from vault.sessions._cookie import after, cookie_expiry

__all__ = [
    "MAX_SESSION_CHARS",
    "MAX_WALLETS",
    "ParsedSession",
    "SessionFormat",
    "WalletInfo",
    "normalize_subject",
    "parse_session",
]

MAX_SESSION_CHARS = 64 * 1024
MAX_WALLETS = 64

# Identifiers end up in URL paths, database keys and logs: keep them to a small, inert alphabet.
_USER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_WALLET_ID = _USER_ID
# A wallet's type (EVM, SOLANA, COSMOS) and scheme (DKLS, CGGMP, ED25519).
_WALLET_LABEL = re.compile(r"[A-Za-z0-9_-]{1,32}")

NOT_A_STRING = "the session is not a string"
EMPTY = "the session is empty"
TOO_LARGE = "the session is too large"
NOT_BASE64 = "the session is not valid base64"
NOT_JSON = "the session is not JSON"
DUPLICATE_KEYS = "the session JSON has duplicate keys"
NOT_AN_OBJECT = "the session is not a JSON object"
AUTH_INFO_NOT_OBJECT = "the session's authInfo is not an object"
UNKNOWN_FORMAT = "the session matches no known export format"
BAD_USER_ID = "the session has no valid userId"
NO_WALLETS = "the session has no wallets object"
TOO_MANY_WALLETS = "the session has too many wallets"
BAD_WALLET = "the session has a malformed wallet"
WALLET_ID_MISMATCH = "a wallet's id does not match its key"
BAD_SIGNER = "a wallet's signer is not a string"
FOREIGN_WALLET = "a wallet belongs to a different user"
NO_COOKIE = "the session has no session cookie"
BAD_CURRENT_WALLET_IDS = "the session's currentWalletIds is not an object"
BAD_EXTERNAL_WALLETS = "the session's externalWallets is not an object"


class SessionFormat(StrEnum):
    """Which SDK generation exported the session, told apart by the fields present."""

    PARA = "para"  # current export: has authInfo
    CAPSULE = "capsule"  # older export: email, or phone + countryCode, and no authInfo


@dataclass(frozen=True, slots=True)
class WalletInfo:
    """The non-secret facts about one wallet: no signer, address or public key."""

    id: str
    type: str
    scheme: str | None
    has_signer: bool


@dataclass(frozen=True, slots=True)
class ParsedSession:
    """The non-secret facts about a session. Holds no signer, cookie or public key.

    ``expires_at`` is the effective expiry, an aware UTC datetime: the cookie's ``Max-Age`` counted from the
    ``now`` given to :func:`parse_session` if it has one, else its ``Expires``; when ``parse_session`` was
    given a ``max_lifetime``, the earlier of that and ``now + max_lifetime`` (and ``now + max_lifetime`` for a
    cookie with neither attribute). It is ``None`` only for a cookie with no ``Max-Age`` and no ``Expires``
    parsed without ``max_lifetime``. It is always after that ``now``.

    ``subjects`` are the values that identify the person and the wallets (email or phone, wallet
    addresses), normalised. They are not key material, but they are personal: the vault never stores
    them, only keyed hashes of them in the audit log, and they are kept out of ``repr``.
    """

    user_id: str
    format: SessionFormat
    wallets: tuple[WalletInfo, ...]
    has_signers: bool
    expires_at: datetime | None  # aware UTC: effective expiry (Max-Age, Expires, max_lifetime), or None
    subjects: tuple[str, ...] = field(default=(), repr=False)


class _DuplicateKeyError(Exception):
    pass


def _reject(detail: str) -> NoReturn:
    raise InvalidSession(detail)


def parse_session(serialized: str, *, now: datetime, max_lifetime: timedelta | None = None) -> ParsedSession:
    """Validate an exported session and return its non-secret facts.

    ``now`` must be timezone-aware. The session's expiry is the cookie's (``now + Max-Age``, else
    ``Expires``, else none); with ``max_lifetime`` (which must be positive) it is capped at
    ``now + max_lifetime``, and a cookie without any expiry gets exactly that. A session whose effective
    expiry is at or before ``now`` (``Max-Age=0``, say) raises :class:`SessionExpired`; only a session that
    is otherwise valid can be expired. Any other defect raises :class:`InvalidSession` with a fixed reason.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if max_lifetime is not None and max_lifetime <= timedelta(0):
        raise ValueError("max_lifetime must be positive")
    body = _decode(serialized)
    session_format = _format(body)
    user_id = _user_id(body)
    wallets = _wallets(body, user_id)
    cookie = body.get("sessionCookie")
    if not isinstance(cookie, str) or not cookie:
        _reject(NO_COOKIE)
    expires_at = cookie_expiry(cookie, now=now)
    if max_lifetime is not None:
        latest = after(now, max_lifetime)
        expires_at = latest if expires_at is None else min(expires_at, latest)
    _optional_object(body, "currentWalletIds", BAD_CURRENT_WALLET_IDS)
    _optional_object(body, "externalWallets", BAD_EXTERNAL_WALLETS)
    if expires_at is not None and expires_at <= now:
        raise SessionExpired()
    return ParsedSession(
        user_id=user_id,
        format=session_format,
        wallets=wallets,
        has_signers=any(w.has_signer for w in wallets),
        expires_at=expires_at,
        subjects=_subjects(body),
    )


def normalize_subject(value: str) -> str:
    """The form in which an identifying value is hashed for the audit log (case-insensitive, trimmed)."""
    return value.strip().lower()


def _subjects(body: dict[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    auth_info = body.get("authInfo")
    auth = auth_info.get("auth") if isinstance(auth_info, dict) else None
    for source in (body, auth if isinstance(auth, dict) else {}):
        for key in ("email", "phone"):
            value = source.get(key)
            if isinstance(value, str) and value.strip():
                found.append(normalize_subject(value))
    for wallet in body.get("wallets", {}).values():
        address = wallet.get("address") if isinstance(wallet, dict) else None
        if isinstance(address, str) and address.strip():
            found.append(normalize_subject(address))
    return tuple(dict.fromkeys(found))


def _decode(serialized: object) -> dict[str, Any]:
    if not isinstance(serialized, str):
        _reject(NOT_A_STRING)
    if len(serialized) > MAX_SESSION_CHARS:
        _reject(TOO_LARGE)
    text = serialized.strip()
    if not text:
        _reject(EMPTY)
    if len(text) % 4:
        text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSession(NOT_BASE64) from None
    try:
        body = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKeyError:
        raise InvalidSession(DUPLICATE_KEYS) from None
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, huge integers
        raise InvalidSession(NOT_JSON) from None
    if not isinstance(body, dict):
        _reject(NOT_AN_OBJECT)
    return body


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKeyError
    return obj


def _no_constant(_name: str) -> NoReturn:
    # NaN, Infinity and -Infinity are not JSON.
    raise ValueError("not JSON")


def _format(body: dict[str, Any]) -> SessionFormat:
    auth_info = body.get("authInfo")
    if auth_info is not None:
        if not isinstance(auth_info, dict):
            _reject(AUTH_INFO_NOT_OBJECT)
        return SessionFormat.PARA
    if isinstance(body.get("email"), str):
        return SessionFormat.CAPSULE
    if isinstance(body.get("phone"), str) and isinstance(body.get("countryCode"), str):
        return SessionFormat.CAPSULE
    _reject(UNKNOWN_FORMAT)


def _user_id(body: dict[str, Any]) -> str:
    user_id = body.get("userId")
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        _reject(BAD_USER_ID)
    return user_id


def _wallets(body: dict[str, Any], user_id: str) -> tuple[WalletInfo, ...]:
    wallets = body.get("wallets")
    if not isinstance(wallets, dict):
        _reject(NO_WALLETS)
    if len(wallets) > MAX_WALLETS:
        _reject(TOO_MANY_WALLETS)
    return tuple(_wallet(key, wallet, user_id) for key, wallet in wallets.items())


def _wallet(key: str, wallet: object, user_id: str) -> WalletInfo:
    if not isinstance(wallet, dict):
        _reject(BAD_WALLET)
    wallet_id = wallet.get("id")
    if not isinstance(wallet_id, str):
        _reject(BAD_WALLET)
    if wallet_id != key:
        _reject(WALLET_ID_MISMATCH)
    if not _WALLET_ID.fullmatch(wallet_id):
        _reject(BAD_WALLET)
    wallet_type = wallet.get("type")
    if not isinstance(wallet_type, str) or not _WALLET_LABEL.fullmatch(wallet_type):
        _reject(BAD_WALLET)
    scheme = wallet.get("scheme")
    if scheme is not None and (not isinstance(scheme, str) or not _WALLET_LABEL.fullmatch(scheme)):
        _reject(BAD_WALLET)
    signer = wallet.get("signer")
    if signer is not None and not isinstance(signer, str):
        _reject(BAD_SIGNER)
    owner = wallet.get("userId")
    if owner is not None and owner != user_id:
        _reject(FOREIGN_WALLET)
    return WalletInfo(id=wallet_id, type=wallet_type, scheme=scheme, has_signer=bool(signer))


def _optional_object(body: dict[str, Any], field: str, detail: str) -> None:
    value = body.get(field)
    if value is not None and not isinstance(value, dict):
        _reject(detail)
