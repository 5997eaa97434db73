"""Make synthetic exported Para / Capsule sessions for the vault's tests and benchmarks.

An exported session is plain base64 of compact JSON with no version field. Current (Para) SDKs export
``{authInfo, userId, wallets, currentWalletIds, sessionCookie, externalWallets}``; older (Capsule) SDKs export
``{email | phone+countryCode, userId, wallets, currentWalletIds, sessionCookie}``. ``wallets`` maps a wallet
id to a wallet object whose ``signer`` is the user's MPC key share (here: random bytes, base64); exporting
with ``excludeSigners`` deletes each ``signer`` and nothing else. The session cookie carries its expiry in an
``Expires`` attribute (Para's default lifetime: two hours), and optionally a ``Max-Age`` attribute as well.

Everything is random and deterministic per seed (given ``now``): no real key share, user or cookie.
``refresh_session`` makes a re-export of a made session: same user and wallets, a new cookie.

    python -m tests.sessiongen      # prints one session
"""

from __future__ import annotations

import base64
import copy
import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["make_session", "reencode", "refresh_session", "secret_strings", "signer_strings"]

SESSION_LIFETIME = timedelta(hours=2)
EXPIRED_AGO = timedelta(minutes=5)
SOLANA_SIGNER_BYTES = 700


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _b64(rng: random.Random, n: int) -> str:
    return base64.b64encode(rng.randbytes(n)).decode()


def _http_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _cookie(rng: random.Random, expires: datetime | None, max_age: int | str | None = None) -> str:
    sig = _b64(rng, 32).rstrip("=").replace("+", "%2B").replace("/", "%2F")
    parts = [f"capsule.sid=s%3A{_uuid(rng)}.{sig}", "Path=/"]
    if expires is not None:
        parts.append(f"Expires={_http_date(expires)}")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    parts += ["HttpOnly", "Secure", "SameSite=None"]
    return "; ".join(parts)


def _wallet(rng: random.Random, user_id: str, kind: str, signer: bool, signer_bytes: int) -> dict[str, Any]:
    evm = kind == "EVM"
    wallet: dict[str, Any] = {
        "id": _uuid(rng),
        "userId": user_id,
        "type": kind,
        "scheme": "DKLS" if evm else "ED25519",
        "address": "0x" + rng.randbytes(20).hex() if evm else _b64(rng, 32).rstrip("="),
        "publicKey": rng.randbytes(33 if evm else 32).hex(),
        "isPregen": False,
        "partnerId": _uuid(rng),
        "createdAt": "2026-10-01T12:00:00.000Z",
        "name": None,
    }
    if signer:
        # A DKLS share serialises to a few kilobytes; an ED25519 share is smaller.
        wallet["signer"] = _b64(rng, signer_bytes)
    return wallet


def make_session(
    seed: int = 0,
    *,
    signers: bool = True,
    legacy: bool = False,
    legacy_phone: bool = False,
    expired: bool = False,
    no_expiry: bool = False,
    now: datetime | None = None,
    user_id: str | None = None,
    evm_signer_bytes: int = 2600,
    max_age: int | str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Return ``(serialized, body)``: one exported session and its decoded JSON object.

    ``signers=False`` is an ``excludeSigners`` export. ``legacy`` makes a Capsule export with ``email``;
    ``legacy_phone`` one with ``phone`` + ``countryCode``. The cookie expires two hours after ``now`` (whole
    seconds), five minutes before it if ``expired``, and has no ``Expires`` at all if ``no_expiry``.
    ``max_age`` adds a ``Max-Age=<max_age>`` attribute after ``Expires`` (written as given: a ``str`` makes
    a malformed one); it changes nothing else: ids, signers and the cookie's value are as without it.
    """
    rng = random.Random(seed)
    now = now if now is not None else datetime.now(UTC)
    uid = _uuid(rng)
    if user_id is not None:
        uid = user_id
    email = f"user{seed}@example.com"
    phone = f"555{rng.randrange(10**7):07d}"
    wallets = [
        _wallet(rng, uid, "EVM", signers, evm_signer_bytes),
        _wallet(rng, uid, "SOLANA", signers, SOLANA_SIGNER_BYTES),
    ]
    expires = _expires(now, expired=expired, no_expiry=no_expiry)
    body: dict[str, Any] = {}
    if legacy or legacy_phone:
        if legacy_phone:
            body["phone"] = phone
            body["countryCode"] = "1"
        else:
            body["email"] = email
    else:
        body["authInfo"] = {"auth": {"email": email}, "authType": "email", "identifier": email}
    body["userId"] = uid
    body["wallets"] = {w["id"]: w for w in wallets}
    body["currentWalletIds"] = {w["type"]: [w["id"]] for w in wallets}
    body["sessionCookie"] = _cookie(rng, expires, max_age)
    if not (legacy or legacy_phone):
        body["externalWallets"] = {}
    return reencode(body), body


def refresh_session(
    body: dict[str, Any],
    seed: int = 0,
    *,
    signers: bool = True,
    expired: bool = False,
    no_expiry: bool = False,
    now: datetime | None = None,
    max_age: int | str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Return ``(serialized, body)``: a re-export of the session ``body`` (which is not modified).

    The user, the wallets (ids, addresses, key shares) and every other field are kept; the cookie is new
    (random per ``seed``, expiry as in :func:`make_session` from ``now``). ``signers=False`` makes it an
    ``excludeSigners`` re-export: every wallet's ``signer`` is deleted.
    """
    rng = random.Random(seed)
    now = now if now is not None else datetime.now(UTC)
    refreshed = copy.deepcopy(body)
    if not signers:
        for wallet in _wallet_values(refreshed):
            wallet.pop("signer", None)
    refreshed["sessionCookie"] = _cookie(rng, _expires(now, expired=expired, no_expiry=no_expiry), max_age)
    return reencode(refreshed), refreshed


def _expires(now: datetime, *, expired: bool, no_expiry: bool) -> datetime | None:
    # Counted in UTC: elapsed time, not wall-clock arithmetic in now's zone (which a DST change skews).
    base = now.astimezone(UTC).replace(microsecond=0)
    return None if no_expiry else (base - EXPIRED_AGO if expired else base + SESSION_LIFETIME)


def refresh_serialized(serialized: str, seed: int = 0, **options: Any) -> str:
    """:func:`refresh_session` of a serialized session: what the SDK exports again after a refresh."""
    return refresh_session(json.loads(base64.b64decode(serialized)), seed, **options)[0]


def reencode(body: Any) -> str:
    """Serialize ``body`` the way the SDK does: base64 of compact JSON."""
    return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()


def _wallet_values(body: dict[str, Any]) -> list[dict[str, Any]]:
    wallets = body.get("wallets")
    if not isinstance(wallets, dict):
        return []
    return [w for w in wallets.values() if isinstance(w, dict)]


def signer_strings(body: dict[str, Any]) -> list[str]:
    """Every wallet's ``signer`` (the user's key shares)."""
    return [w["signer"] for w in _wallet_values(body) if isinstance(w.get("signer"), str) and w["signer"]]


def secret_strings(body: dict[str, Any]) -> list[str]:
    """Every value that must never leak: all but the user id and wallet ids/types/schemes.

    Signers, the session cookie (whole and its value alone), addresses, public keys, email and phone.
    """
    secrets = signer_strings(body)
    for wallet in _wallet_values(body):
        secrets += [wallet[k] for k in ("address", "publicKey") if isinstance(wallet.get(k), str)]
    cookie = body.get("sessionCookie")
    if isinstance(cookie, str) and cookie:
        secrets.append(cookie)
        value = cookie.split(";", 1)[0].partition("=")[2]
        if value:
            secrets.append(value)
    for key in ("email", "phone"):
        if isinstance(body.get(key), str):
            secrets.append(body[key])
    auth_info = body.get("authInfo")
    if isinstance(auth_info, dict):
        if isinstance(auth_info.get("identifier"), str):
            secrets.append(auth_info["identifier"])
        auth = auth_info.get("auth")
        if isinstance(auth, dict):
            secrets += [v for v in auth.values() if isinstance(v, str)]
    # Dedupe, keep order; drop empties (an empty string is "in" every message).
    return [s for s in dict.fromkeys(secrets) if s]


def main() -> None:
    serialized, _ = make_session()
    sys.stdout.write(serialized + "\n")


if __name__ == "__main__":
    main()
