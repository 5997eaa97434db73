"""vault.sessions.parse_session: both export formats, every rejection rule, and no leaks."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from tests.sessiongen import make_session, reencode, refresh_session, secret_strings, signer_strings
from vault.errors import InvalidSession, SessionExpired
from vault.sessions import (
    MAX_SESSION_CHARS,
    ParsedSession,
    SessionFormat,
    WalletInfo,
    parse_session,
    wallet_change,
)
from vault.sessions._compare import SIGNERS_REMOVED, WALLETS_CHANGED
from vault.sessions._cookie import MAX_AGE_LIMIT, cookie_expiry

NOW = datetime(2026, 10, 1, 12, 0, 0, tzinfo=UTC)

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
BAD_EXPIRES = "the session cookie's Expires is not an HTTP date"
DUPLICATE_EXPIRES = "the session cookie has more than one Expires attribute"
BAD_MAX_AGE = "the session cookie's Max-Age is not a whole number of seconds up to ten years"
DUPLICATE_MAX_AGE = "the session cookie has more than one Max-Age attribute"
BAD_CURRENT_WALLET_IDS = "the session's currentWalletIds is not an object"
BAD_EXTERNAL_WALLETS = "the session's externalWallets is not an object"


def _session(**kwargs: Any) -> tuple[str, dict[str, Any]]:
    return make_session(kwargs.pop("seed", 7), now=NOW, **kwargs)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _first_wallet(body: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], next(iter(body["wallets"].values())))


def _set_cookie_expires(body: dict[str, Any], expires: str) -> None:
    name_value = body["sessionCookie"].split(";", 1)[0]
    body["sessionCookie"] = f"{name_value}; Path=/; {expires}; HttpOnly; Secure"


# --- accepted sessions -------------------------------------------------------------------------------------


def test_para_session_parses() -> None:
    serialized, body = _session()
    parsed = parse_session(serialized, now=NOW)
    assert parsed.user_id == body["userId"]
    assert parsed.format is SessionFormat.PARA
    assert [w.id for w in parsed.wallets] == list(body["wallets"])
    assert [(w.type, w.scheme) for w in parsed.wallets] == [("EVM", "DKLS"), ("SOLANA", "ED25519")]
    assert all(w.has_signer for w in parsed.wallets)
    assert parsed.has_signers is True
    assert parsed.expires_at == NOW + timedelta(hours=2)
    assert parsed.expires_at is not None
    assert parsed.expires_at.utcoffset() == timedelta(0)


def test_realistic_size() -> None:
    serialized, _ = _session()
    assert 6_000 < len(serialized) < 9_000


def test_capsule_email_session_parses() -> None:
    serialized, body = _session(legacy=True)
    assert "authInfo" not in body and "email" in body
    parsed = parse_session(serialized, now=NOW)
    assert parsed.format is SessionFormat.CAPSULE
    assert parsed.user_id == body["userId"]
    assert [w.id for w in parsed.wallets] == list(body["wallets"])
    assert parsed.has_signers is True
    assert parsed.expires_at == NOW + timedelta(hours=2)


def test_capsule_phone_session_parses() -> None:
    serialized, body = _session(legacy_phone=True)
    assert "email" not in body and "phone" in body and "countryCode" in body
    parsed = parse_session(serialized, now=NOW)
    assert parsed.format is SessionFormat.CAPSULE
    assert parsed.user_id == body["userId"]


@pytest.mark.parametrize("legacy", [False, True])
def test_exclude_signers_session_parses(legacy: bool) -> None:
    serialized, body = _session(signers=False, legacy=legacy)
    assert signer_strings(body) == []
    parsed = parse_session(serialized, now=NOW)
    assert parsed.has_signers is False
    assert [w.has_signer for w in parsed.wallets] == [False, False]
    assert [w.type for w in parsed.wallets] == ["EVM", "SOLANA"]


def test_one_signer_is_enough_for_has_signers() -> None:
    _, body = _session()
    del _first_wallet(body)["signer"]
    parsed = parse_session(reencode(body), now=NOW)
    assert [w.has_signer for w in parsed.wallets] == [False, True]
    assert parsed.has_signers is True


def test_empty_signer_is_no_signer() -> None:
    _, body = _session()
    for wallet in body["wallets"].values():
        wallet["signer"] = ""
    assert parse_session(reencode(body), now=NOW).has_signers is False


def test_null_optional_fields_count_as_absent() -> None:
    _, body = _session()
    wallet = _first_wallet(body)
    wallet.update(signer=None, scheme=None, userId=None)
    body.update(currentWalletIds=None, externalWallets=None, email=None)
    parsed = parse_session(reencode(body), now=NOW)
    assert parsed.wallets[0] == WalletInfo(id=wallet["id"], type="EVM", scheme=None, has_signer=False)


def test_minimal_session_parses() -> None:
    body = {"email": "a@example.com", "userId": "u1", "wallets": {}, "sessionCookie": "capsule.sid=x"}
    parsed = parse_session(reencode(body), now=NOW)
    assert parsed == ParsedSession(
        user_id="u1",
        format=SessionFormat.CAPSULE,
        wallets=(),
        has_signers=False,
        expires_at=None,
        subjects=("a@example.com",),
    )


def test_no_expiry_gives_none() -> None:
    serialized, body = _session(no_expiry=True)
    assert "expires" not in body["sessionCookie"].lower()
    assert parse_session(serialized, now=NOW).expires_at is None


def test_expires_attribute_name_is_case_insensitive() -> None:
    _, body = _session()
    _set_cookie_expires(body, "eXPIRES = Thu, 01 Oct 2026 13:00:00 GMT")
    assert parse_session(reencode(body), now=NOW).expires_at == NOW + timedelta(hours=1)


def test_expires_with_offset_is_converted_to_utc() -> None:
    _, body = _session()
    _set_cookie_expires(body, "Expires=Thu, 01 Oct 2026 15:00:00 +0200")
    expires_at = parse_session(reencode(body), now=NOW).expires_at
    assert expires_at == NOW + timedelta(hours=1)
    assert expires_at is not None and expires_at.tzinfo is UTC


def test_expires_minus_zero_is_read_as_utc() -> None:
    _, body = _session()
    _set_cookie_expires(body, "Expires=Thu, 01 Oct 2026 13:00:00 -0000")
    expires_at = parse_session(reencode(body), now=NOW).expires_at
    assert expires_at == NOW + timedelta(hours=1)
    assert expires_at is not None and expires_at.tzinfo is UTC


def test_expires_in_the_cookie_value_is_not_an_attribute() -> None:
    _, body = _session()
    body["sessionCookie"] = "Expires=garbage; Path=/"
    assert parse_session(reencode(body), now=NOW).expires_at is None


def test_surrounding_whitespace_and_missing_padding_are_accepted() -> None:
    serialized, body = _session()
    assert parse_session(f" \n\t{serialized}\r\n ", now=NOW).user_id == body["userId"]
    widths = set()
    for n in range(10, 13):  # vary the length so every padding width occurs
        small = {"email": "a@example.com", "userId": "u" * n, "wallets": {}, "sessionCookie": "c=1"}
        padded = reencode(small)
        widths.add(len(padded) - len(padded.rstrip("=")))
        assert parse_session(padded.rstrip("="), now=NOW).user_id == small["userId"]
    assert widths == {0, 1, 2}


def test_session_of_exactly_max_chars_is_accepted() -> None:
    serialized, _ = _session()
    padded = serialized + " " * (MAX_SESSION_CHARS - len(serialized))
    assert len(padded) == MAX_SESSION_CHARS
    parse_session(padded, now=NOW)


@pytest.mark.parametrize("user_id", ["u", "a" * 128, "A-z.0_9:x@y", "google-oauth2|x".replace("|", ":")])
def test_user_id_alphabet(user_id: str) -> None:
    serialized, _ = _session(user_id=user_id)
    assert parse_session(serialized, now=NOW).user_id == user_id


def test_sixty_four_wallets_are_accepted() -> None:
    _, body = _session(signers=False)
    template = _first_wallet(body)
    body["wallets"] = {f"w{i}": {**template, "id": f"w{i}"} for i in range(64)}
    assert len(parse_session(reencode(body), now=NOW).wallets) == 64


def test_now_in_another_zone_is_compared_as_an_instant() -> None:
    serialized, _ = _session()
    later = (NOW + timedelta(hours=3)).astimezone(timezone(timedelta(hours=-5)))
    with pytest.raises(SessionExpired):
        parse_session(serialized, now=later)


def test_naive_now_is_a_programming_error() -> None:
    serialized, _ = _session()
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_session(serialized, now=NOW.replace(tzinfo=None))


# --- the parsed result holds no secret ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", [{}, {"legacy": True}, {"legacy_phone": True}, {"signers": False}])
def test_parsed_session_holds_no_secret(variant: dict[str, bool]) -> None:
    serialized, body = _session(**variant)
    parsed = parse_session(serialized, now=NOW)
    # subjects (email/phone, addresses) are identifying, kept only to be HMAC'd for the audit log.
    kept = dataclasses.replace(parsed, subjects=())
    text = repr(parsed) + str(parsed) + repr(dataclasses.astuple(kept))
    secrets = secret_strings(body)
    assert secrets
    for secret in secrets:
        assert secret not in text
    for signer in signer_strings(body):
        assert signer not in repr(parsed.subjects)
    assert {f.name for f in dataclasses.fields(ParsedSession)} == {
        "user_id",
        "format",
        "wallets",
        "has_signers",
        "expires_at",
        "subjects",
    }
    assert {f.name for f in dataclasses.fields(WalletInfo)} == {"id", "type", "scheme", "has_signer"}


def test_parsed_session_is_frozen_and_slotted() -> None:
    serialized, _ = _session()
    parsed = parse_session(serialized, now=NOW)
    assert not hasattr(parsed, "__dict__")
    assert not hasattr(parsed.wallets[0], "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.user_id = "other"  # type: ignore[misc]


def test_session_format_values() -> None:
    assert str(SessionFormat.PARA) == SessionFormat.PARA.value == "para"
    assert str(SessionFormat.CAPSULE) == SessionFormat.CAPSULE.value == "capsule"
    assert {f.value for f in SessionFormat} == {"para", "capsule"}


# --- expiry ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_expired_session_raises_session_expired(legacy: bool) -> None:
    serialized, body = _session(expired=True, legacy=legacy)
    with pytest.raises(SessionExpired) as info:
        parse_session(serialized, now=NOW)
    assert info.value.detail == "the session has expired"
    assert isinstance(info.value, InvalidSession)
    _assert_no_leak(info.value, secret_strings(body))


def test_expiry_boundary() -> None:
    serialized, _ = _session()
    expires = NOW + timedelta(hours=2)
    with pytest.raises(SessionExpired):
        parse_session(serialized, now=expires)
    assert parse_session(serialized, now=expires - timedelta(microseconds=1)).expires_at == expires


def test_expired_but_malformed_is_invalid_not_expired() -> None:
    _, body = _session(expired=True)
    body["userId"] = "not/valid"
    with pytest.raises(InvalidSession) as info:
        parse_session(reencode(body), now=NOW)
    assert type(info.value) is InvalidSession
    assert info.value.detail == BAD_USER_ID


# --- rejections --------------------------------------------------------------------------------------------

Case = tuple[object, dict[str, Any]]  # (input to parse_session, the body whose secrets must not leak)


def _edit(edit: Callable[[dict[str, Any]], object], **kwargs: Any) -> Callable[[], Case]:
    def build() -> Case:
        _, body = _session(**kwargs)
        original = copy.deepcopy(body)
        edit(body)
        return reencode(body), original

    return build


def _raw(transform: Callable[[str, dict[str, Any]], object], **kwargs: Any) -> Callable[[], Case]:
    def build() -> Case:
        serialized, body = _session(**kwargs)
        return transform(serialized, body), body

    return build


def _json_text(transform: Callable[[str], str]) -> Callable[[], Case]:
    def build() -> Case:
        _, body = _session()
        text = json.dumps(body, separators=(",", ":"))
        return _b64(transform(text).encode()), body

    return build


def _set(path: tuple[str, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = next(iter(target.values())) if key == "*" else target[key]
        target[path[-1]] = value

    return edit


def _delete(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = next(iter(target.values())) if key == "*" else target[key]
        del target[path[-1]]

    return edit


def _rekey_first_wallet(new_key: str) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        wallets = body["wallets"]
        first = next(iter(wallets))
        wallets[new_key] = wallets.pop(first)
        wallets[new_key]["id"] = new_key

    return edit


def _too_many_wallets(body: dict[str, Any]) -> None:
    template = _first_wallet(body)
    body["wallets"] = {f"w{i}": {**template, "id": f"w{i}"} for i in range(65)}


def _dup_top_level(text: str) -> str:
    return text[:-1] + ',"userId":"other"}'


def _dup_in_wallet(text: str) -> str:
    return text.replace('"scheme":"DKLS"', '"scheme":"DKLS","scheme":"CGGMP"', 1)


def _insert_char(char: str) -> Callable[[str, dict[str, Any]], str]:
    return lambda s, _body: s[:100] + char + s[100:]


def _bad_utf8() -> Case:
    _, body = _session()
    text = json.dumps(body, separators=(",", ":")).encode()
    return _b64(text[:-1] + b',"x":"\xff\xfe"}'), body


def _wallet_not_object() -> Case:
    _, body = _session()
    original = copy.deepcopy(body)
    first = next(iter(body["wallets"]))
    body["wallets"][first] = "not a wallet"
    return reencode(body), original


REJECTIONS: dict[str, tuple[Callable[[], Case], str]] = {
    # not a string, empty, too large
    "bytes": (_raw(lambda s, _b: s.encode()), NOT_A_STRING),
    "none": (_raw(lambda _s, _b: None), NOT_A_STRING),
    "dict": (_raw(lambda _s, body: body), NOT_A_STRING),
    "empty": (_raw(lambda _s, _b: ""), EMPTY),
    "whitespace": (_raw(lambda _s, _b: " \t\r\n "), EMPTY),
    "too large": (_raw(lambda s, _b: s + " " * (MAX_SESSION_CHARS + 1 - len(s))), TOO_LARGE),
    "too large base64": (_raw(lambda s, _b: s + "A" * MAX_SESSION_CHARS), TOO_LARGE),
    # base64
    "bad char": (_raw(_insert_char("!")), NOT_BASE64),
    "urlsafe alphabet": (_raw(_insert_char("-")), NOT_BASE64),
    "inner newline": (_raw(_insert_char("\n")), NOT_BASE64),
    "inner space": (_raw(_insert_char(" ")), NOT_BASE64),
    "non-ascii": (_raw(_insert_char("é")), NOT_BASE64),
    "one char too many": (_raw(lambda s, _b: s + "A"), NOT_BASE64),
    "json not base64": (_raw(lambda _s, body: json.dumps(body)), NOT_BASE64),
    # JSON
    "truncated json": (_json_text(lambda t: t[: len(t) // 2]), NOT_JSON),
    "not json": (_raw(lambda _s, _b: _b64(b"hello, world")), NOT_JSON),
    "bad utf-8": (_bad_utf8, NOT_JSON),
    "utf-8 bom": (_json_text(lambda t: "\ufeff" + t), NOT_JSON),
    "nan": (_json_text(lambda t: t[:-1] + ',"x":NaN}'), NOT_JSON),
    "infinity": (_json_text(lambda t: t[:-1] + ',"x":-Infinity}'), NOT_JSON),
    "huge integer": (_json_text(lambda t: t[:-1] + ',"x":' + "9" * 5000 + "}"), NOT_JSON),
    "deep nesting": (_json_text(lambda t: t[:-1] + ',"x":' + "[" * 15000 + "]" * 15000 + "}"), NOT_JSON),
    "trailing garbage": (_json_text(lambda t: t + "x"), NOT_JSON),
    # duplicate keys
    "duplicate top-level key": (_json_text(_dup_top_level), DUPLICATE_KEYS),
    "duplicate key in wallet": (_json_text(_dup_in_wallet), DUPLICATE_KEYS),
    # top level
    "array": (_raw(lambda _s, _b: _b64(b"[]")), NOT_AN_OBJECT),
    "string": (_raw(lambda _s, _b: _b64(b'"session"')), NOT_AN_OBJECT),
    "null": (_raw(lambda _s, _b: _b64(b"null")), NOT_AN_OBJECT),
    "number": (_raw(lambda _s, _b: _b64(b"12")), NOT_AN_OBJECT),
    # format
    "authInfo string": (_edit(_set(("authInfo",), "email")), AUTH_INFO_NOT_OBJECT),
    "authInfo list": (_edit(_set(("authInfo",), [])), AUTH_INFO_NOT_OBJECT),
    "no authInfo no email": (_edit(_delete(("authInfo",))), UNKNOWN_FORMAT),
    "email not a string": (_edit(_set(("email",), 5), legacy=True), UNKNOWN_FORMAT),
    "phone without countryCode": (_edit(_delete(("countryCode",)), legacy_phone=True), UNKNOWN_FORMAT),
    "countryCode not a string": (_edit(_set(("countryCode",), 1), legacy_phone=True), UNKNOWN_FORMAT),
    # userId
    "no userId": (_edit(_delete(("userId",))), BAD_USER_ID),
    "userId number": (_edit(_set(("userId",), 42)), BAD_USER_ID),
    "userId null": (_edit(_set(("userId",), None)), BAD_USER_ID),
    "userId empty": (_raw(lambda s, _b: s, user_id=""), BAD_USER_ID),
    "userId too long": (_raw(lambda s, _b: s, user_id="a" * 129), BAD_USER_ID),
    "userId slash": (_raw(lambda s, _b: s, user_id="a/../b"), BAD_USER_ID),
    "userId space": (_raw(lambda s, _b: s, user_id="a b"), BAD_USER_ID),
    "userId trailing newline": (_raw(lambda s, _b: s, user_id="abc\n"), BAD_USER_ID),
    "userId non-ascii": (_raw(lambda s, _b: s, user_id="usér"), BAD_USER_ID),
    "userId pipe": (_raw(lambda s, _b: s, user_id="google-oauth2|123"), BAD_USER_ID),
    # wallets
    "no wallets": (_edit(_delete(("wallets",))), NO_WALLETS),
    "wallets list": (_edit(_set(("wallets",), [])), NO_WALLETS),
    "wallets null": (_edit(_set(("wallets",), None)), NO_WALLETS),
    "65 wallets": (_edit(_too_many_wallets, signers=False), TOO_MANY_WALLETS),
    "wallet not object": (_wallet_not_object, BAD_WALLET),
    "wallet no id": (_edit(_delete(("wallets", "*", "id"))), BAD_WALLET),
    "wallet id number": (_edit(_set(("wallets", "*", "id"), 1)), BAD_WALLET),
    "wallet id mismatch": (_edit(_set(("wallets", "*", "id"), "other")), WALLET_ID_MISMATCH),
    "wallet id bad chars": (_edit(_rekey_first_wallet("a/b")), BAD_WALLET),
    "wallet id empty": (_edit(_rekey_first_wallet("")), BAD_WALLET),
    "wallet no type": (_edit(_delete(("wallets", "*", "type"))), BAD_WALLET),
    "wallet type number": (_edit(_set(("wallets", "*", "type"), 1)), BAD_WALLET),
    "wallet type bad chars": (_edit(_set(("wallets", "*", "type"), "EVM\n")), BAD_WALLET),
    "wallet scheme number": (_edit(_set(("wallets", "*", "scheme"), 1)), BAD_WALLET),
    "wallet scheme too long": (_edit(_set(("wallets", "*", "scheme"), "D" * 33)), BAD_WALLET),
    "signer number": (_edit(_set(("wallets", "*", "signer"), 123)), BAD_SIGNER),
    "signer object": (_edit(_set(("wallets", "*", "signer"), {"share": "x"})), BAD_SIGNER),
    "signer list": (_edit(_set(("wallets", "*", "signer"), ["x"])), BAD_SIGNER),
    "signer true": (_edit(_set(("wallets", "*", "signer"), True)), BAD_SIGNER),
    "wallet of another user": (_edit(_set(("wallets", "*", "userId"), "someone-else")), FOREIGN_WALLET),
    "wallet userId number": (_edit(_set(("wallets", "*", "userId"), 7)), FOREIGN_WALLET),
    # cookie
    "no cookie": (_edit(_delete(("sessionCookie",))), NO_COOKIE),
    "empty cookie": (_edit(_set(("sessionCookie",), "")), NO_COOKIE),
    "cookie number": (_edit(_set(("sessionCookie",), 1)), NO_COOKIE),
    "cookie object": (_edit(_set(("sessionCookie",), {"sid": "x"})), NO_COOKIE),
    "expires garbage": (_edit(lambda b: _set_cookie_expires(b, "Expires=tomorrow-ish")), BAD_EXPIRES),
    "expires empty": (_edit(lambda b: _set_cookie_expires(b, "Expires=")), BAD_EXPIRES),
    "expires no value": (_edit(lambda b: _set_cookie_expires(b, "Expires")), BAD_EXPIRES),
    "expires bad month": (
        _edit(lambda b: _set_cookie_expires(b, "Expires=Thu, 01 Foo 2026 13:00:00 GMT")),
        BAD_EXPIRES,
    ),
    "expires bad day": (
        _edit(lambda b: _set_cookie_expires(b, "Expires=Thu, 41 Oct 2026 13:00:00 GMT")),
        BAD_EXPIRES,
    ),
    "expires year overflow": (
        _edit(lambda b: _set_cookie_expires(b, "Expires=Fri, 31 Dec 9999 23:00:00 -0500")),
        BAD_EXPIRES,
    ),
    "expires twice": (
        _edit(
            lambda b: _set_cookie_expires(
                b, "Expires=Thu, 01 Oct 2026 13:00:00 GMT; expires=Thu, 01 Oct 2026 14:00:00 GMT"
            )
        ),
        DUPLICATE_EXPIRES,
    ),
    "max-age garbage": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=an hour")), BAD_MAX_AGE),
    "max-age empty": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=")), BAD_MAX_AGE),
    "max-age no value": (_edit(lambda b: _set_cookie_expires(b, "Max-Age")), BAD_MAX_AGE),
    "max-age plus sign": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=+3600")), BAD_MAX_AGE),
    "max-age lone minus": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=-")), BAD_MAX_AGE),
    "max-age double minus": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=--5")), BAD_MAX_AGE),
    "max-age decimal": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=3600.0")), BAD_MAX_AGE),
    "max-age exponent": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=1e3")), BAD_MAX_AGE),
    "max-age hex": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=0x10")), BAD_MAX_AGE),
    "max-age underscore": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=3_600")), BAD_MAX_AGE),
    "max-age inner space": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=36 00")), BAD_MAX_AGE),
    "max-age unicode digits": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=\u0663\u0666")), BAD_MAX_AGE),
    "max-age unicode minus": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=\u22125")), BAD_MAX_AGE),
    "max-age just over ten years": (
        _edit(lambda b: _set_cookie_expires(b, f"Max-Age={MAX_AGE_LIMIT + 1}")),
        BAD_MAX_AGE,
    ),
    "max-age huge": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=" + "9" * 5000)), BAD_MAX_AGE),
    "max-age too large for timedelta": (
        _edit(lambda b: _set_cookie_expires(b, f"Max-Age={10**18}")),
        BAD_MAX_AGE,
    ),
    "max-age from the generator": (_raw(lambda s, _b: s, max_age="soon"), BAD_MAX_AGE),
    "max-age twice": (_edit(lambda b: _set_cookie_expires(b, "Max-Age=60; max-age=60")), DUPLICATE_MAX_AGE),
    "max-age twice, one malformed": (
        _edit(lambda b: _set_cookie_expires(b, "Max-Age=60; MAX-AGE=x")),
        DUPLICATE_MAX_AGE,
    ),
    "max-age with expires garbage": (
        _edit(lambda b: _set_cookie_expires(b, "Max-Age=60; Expires=tomorrow-ish")),
        BAD_EXPIRES,
    ),
    "max-age with expires twice": (
        _edit(
            lambda b: _set_cookie_expires(
                b, "Max-Age=60; Expires=Thu, 01 Oct 2026 13:00:00 GMT; expires=Thu, 01 Oct 2026 13:00:00 GMT"
            )
        ),
        DUPLICATE_EXPIRES,
    ),
    # optional objects
    "currentWalletIds list": (_edit(_set(("currentWalletIds",), [])), BAD_CURRENT_WALLET_IDS),
    "currentWalletIds string": (_edit(_set(("currentWalletIds",), "x")), BAD_CURRENT_WALLET_IDS),
    "externalWallets list": (_edit(_set(("externalWallets",), [])), BAD_EXTERNAL_WALLETS),
    "externalWallets number": (_edit(_set(("externalWallets",), 0)), BAD_EXTERNAL_WALLETS),
}


def _assert_no_leak(exc: BaseException, secrets: list[str]) -> None:
    rendered = [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))]
    if isinstance(exc, InvalidSession):
        rendered.append(exc.detail)
    # Whole secrets, and a 16-character window from the start and the end of each long one.
    needles = set(secrets)
    needles |= {s[:16] for s in secrets if len(s) > 16} | {s[-16:] for s in secrets if len(s) > 16}
    for text in rendered:
        for needle in needles:
            assert needle not in text
    # Decoder errors (which can quote input) are neither chained nor shown.
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


@pytest.mark.parametrize("name", list(REJECTIONS))
def test_rejection(name: str) -> None:
    build, detail = REJECTIONS[name]
    serialized, body = build()
    with pytest.raises(InvalidSession) as info:
        parse_session(serialized, now=NOW)  # type: ignore[arg-type]
    exc = info.value
    assert type(exc) is InvalidSession
    assert exc.detail == detail
    assert str(exc) == detail
    assert repr(exc) == f"InvalidSession({detail!r})"
    _assert_no_leak(exc, secret_strings(body))


def test_rejection_secrets_are_really_in_the_input() -> None:
    # Guard the leak checks: the cases above do carry secrets.
    for name in ("truncated json", "duplicate key in wallet", "expires garbage", "wallet of another user"):
        serialized, body = REJECTIONS[name][0]()
        assert isinstance(serialized, str)
        assert secret_strings(body)
        assert len(signer_strings(body)) == 2


def test_secret_strings_cover_every_secret_kind() -> None:
    _, body = _session()
    secrets = secret_strings(body)
    wallet = _first_wallet(body)
    for value in (wallet["signer"], wallet["address"], wallet["publicKey"], body["sessionCookie"]):
        assert value in secrets
    assert body["authInfo"]["identifier"] in secrets
    assert body["userId"] not in secrets
    assert wallet["id"] not in secrets
    _, phone_body = _session(legacy_phone=True)
    assert phone_body["phone"] in secret_strings(phone_body)


def test_generator_is_deterministic_per_seed() -> None:
    assert make_session(3, now=NOW) == make_session(3, now=NOW)
    assert make_session(3, now=NOW)[0] != make_session(4, now=NOW)[0]
    serialized, body = make_session(3, now=NOW)
    assert json.loads(base64.b64decode(serialized)) == body
    assert reencode(body) == serialized


def test_subjects_are_the_identifying_values_normalised_and_not_in_repr() -> None:
    from tests.sessiongen import make_session as _make
    from vault.sessions import normalize_subject, parse_session

    now = datetime.now(UTC)
    for legacy in (False, True):
        serialized, body = _make(7, legacy=legacy, now=now)
        parsed = parse_session(serialized, now=now)
        addresses = [normalize_subject(w["address"]) for w in body["wallets"].values()]
        email = body["email"] if legacy else body["authInfo"]["auth"]["email"]
        assert parsed.subjects == (normalize_subject(email), *addresses)
        for subject in parsed.subjects:
            assert subject not in repr(parsed)


# --- Max-Age -----------------------------------------------------------------------------------------------


def test_max_age_takes_precedence_over_a_later_expires() -> None:
    serialized, body = _session(max_age=3600)  # Expires says two hours
    assert "Expires=" in body["sessionCookie"] and "Max-Age=3600" in body["sessionCookie"]
    expires_at = parse_session(serialized, now=NOW).expires_at
    assert expires_at == NOW + timedelta(hours=1)
    assert expires_at is not None and expires_at.tzinfo is UTC


def test_max_age_takes_precedence_over_an_earlier_expires() -> None:
    serialized, _ = _session(max_age=3 * 3600)
    assert parse_session(serialized, now=NOW).expires_at == NOW + timedelta(hours=3)


def test_max_age_takes_precedence_over_an_expired_expires() -> None:
    serialized, _ = _session(expired=True, max_age=60)
    assert parse_session(serialized, now=NOW).expires_at == NOW + timedelta(minutes=1)


@pytest.mark.parametrize("order", ["max-age first", "expires first"])
def test_max_age_precedence_does_not_depend_on_order(order: str) -> None:
    _, body = _session()
    expires, max_age = "Expires=Thu, 01 Oct 2026 13:00:00 GMT", "Max-Age=7200"
    _set_cookie_expires(
        body, f"{max_age}; {expires}" if order == "max-age first" else f"{expires}; {max_age}"
    )
    assert parse_session(reencode(body), now=NOW).expires_at == NOW + timedelta(hours=2)


def test_max_age_without_expires() -> None:
    serialized, _ = _session(no_expiry=True, max_age=90)
    assert parse_session(serialized, now=NOW).expires_at == NOW + timedelta(seconds=90)


def test_max_age_counts_from_now_to_the_microsecond() -> None:
    now = NOW + timedelta(microseconds=123_456)
    serialized, _ = make_session(7, now=now, max_age=60)
    assert parse_session(serialized, now=now).expires_at == now + timedelta(seconds=60)


@pytest.mark.parametrize("name", ["max-age", "MAX-AGE", "mAx-AgE", " Max-Age "])
def test_max_age_attribute_name_is_case_insensitive(name: str) -> None:
    _, body = _session()
    _set_cookie_expires(body, f"{name}=60")
    assert parse_session(reencode(body), now=NOW).expires_at == NOW + timedelta(minutes=1)


@pytest.mark.parametrize(("value", "seconds"), [(" 60 ", 60), ("\t60", 60), ("007", 7), ("0" * 50 + "1", 1)])
def test_max_age_value_whitespace_and_leading_zeros(value: str, seconds: int) -> None:
    _, body = _session()
    _set_cookie_expires(body, f"Max-Age={value}")
    assert parse_session(reencode(body), now=NOW).expires_at == NOW + timedelta(seconds=seconds)


def test_max_age_of_ten_years_is_accepted() -> None:
    serialized, _ = _session(max_age=MAX_AGE_LIMIT)
    assert MAX_AGE_LIMIT == 10 * 365 * 24 * 3600
    assert parse_session(serialized, now=NOW).expires_at == NOW + timedelta(seconds=MAX_AGE_LIMIT)


@pytest.mark.parametrize("max_age", ["0", "000", "-0", "-1", "-7200", "-" + "9" * 5000])
def test_max_age_zero_or_negative_is_expired(max_age: str) -> None:
    serialized, body = _session(max_age=max_age)  # the cookie's Expires is still two hours away
    with pytest.raises(SessionExpired) as info:
        parse_session(serialized, now=NOW)
    _assert_no_leak(info.value, secret_strings(body))


def test_max_age_zero_is_expired_even_with_max_lifetime() -> None:
    serialized, _ = _session(max_age=0)
    with pytest.raises(SessionExpired):
        parse_session(serialized, now=NOW, max_lifetime=timedelta(hours=1))


def test_max_age_boundary() -> None:
    serialized, _ = make_session(7, now=NOW, max_age=1)
    assert parse_session(serialized, now=NOW).expires_at == NOW + timedelta(seconds=1)


def test_max_age_in_the_cookie_value_is_not_an_attribute() -> None:
    _, body = _session()
    for cookie in ("Max-Age=0; Path=/", "max-age=garbage; Path=/", "Max-Age=1; Max-Age=2"):
        body["sessionCookie"] = cookie
        expected = NOW + timedelta(seconds=2) if cookie.endswith("2") else None
        assert parse_session(reencode(body), now=NOW).expires_at == expected


def test_similar_attribute_names_are_not_max_age() -> None:
    _, body = _session()
    _set_cookie_expires(body, "MaxAge=0; Max_Age=0; X-Max-Age=0; Max-Ages=0")
    assert parse_session(reencode(body), now=NOW).expires_at is None


def test_cookie_expiry_directly() -> None:
    cookie = "c=1; Expires=Thu, 01 Oct 2026 13:00:00 GMT"
    assert cookie_expiry(cookie, now=NOW) == NOW + timedelta(hours=1)
    assert cookie_expiry("c=1; Path=/", now=NOW) is None
    assert cookie_expiry("c=1", now=NOW) is None
    assert cookie_expiry(cookie + "; Max-Age=0", now=NOW) == NOW
    assert cookie_expiry(cookie + "; Max-Age=-5", now=NOW) == NOW


def test_cookie_expiry_is_utc_for_a_now_in_another_zone() -> None:
    now = NOW.astimezone(timezone(timedelta(hours=9)))
    expiry = cookie_expiry("c=1; Max-Age=60", now=now)
    assert expiry == NOW + timedelta(minutes=1)
    assert expiry is not None and expiry.tzinfo is UTC
    assert cookie_expiry("c=1; Max-Age=-60", now=now) == NOW
    zero = cookie_expiry("c=1; Max-Age=0", now=now)
    assert zero is not None and zero.tzinfo is UTC


def _new_york() -> ZoneInfo:
    try:
        return ZoneInfo("America/New_York")
    except ZoneInfoNotFoundError:
        pytest.skip("no time zone database")


def test_max_age_and_max_lifetime_count_elapsed_time_across_a_dst_change() -> None:
    # 2026-11-01 01:30 EDT (05:30 UTC); at 02:00 EDT the clocks fall back to 01:00 EST.
    now = datetime(2026, 11, 1, 1, 30, tzinfo=_new_york())
    assert now.utcoffset() == timedelta(hours=-4)
    two_hours = datetime(2026, 11, 1, 7, 30, tzinfo=UTC)
    assert now + timedelta(hours=2) != two_hours  # Python's wall-clock arithmetic: 03:30 EST, 3 h later
    assert cookie_expiry("c=1; Max-Age=7200", now=now) == two_hours
    serialized, _ = make_session(7, now=now, no_expiry=True)
    assert parse_session(serialized, now=now, max_lifetime=timedelta(hours=2)).expires_at == two_hours


def test_cookie_expiry_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cookie_expiry("c=1; Max-Age=60", now=NOW.replace(tzinfo=None))


def test_cookie_expiry_near_the_end_of_time_does_not_overflow() -> None:
    late = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
    assert cookie_expiry(f"c=1; Max-Age={MAX_AGE_LIMIT}", now=late) == datetime.max.replace(tzinfo=UTC)
    # An aware now that is past datetime.max once in UTC.
    west = datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))
    assert cookie_expiry("c=1; Max-Age=1", now=west) == datetime.max.replace(tzinfo=UTC)


# --- max_lifetime ------------------------------------------------------------------------------------------


def test_max_lifetime_caps_a_later_cookie_expiry() -> None:
    serialized, _ = _session()  # two hours
    assert parse_session(serialized, now=NOW, max_lifetime=timedelta(hours=1)).expires_at == NOW + timedelta(
        hours=1
    )


def test_max_lifetime_keeps_an_earlier_cookie_expiry() -> None:
    serialized, _ = _session()
    parsed = parse_session(serialized, now=NOW, max_lifetime=timedelta(hours=3))
    assert parsed.expires_at == NOW + timedelta(hours=2)


def test_max_lifetime_equal_to_the_cookie_expiry() -> None:
    serialized, _ = _session()
    parsed = parse_session(serialized, now=NOW, max_lifetime=timedelta(hours=2))
    assert parsed.expires_at == NOW + timedelta(hours=2)


def test_max_lifetime_caps_max_age() -> None:
    serialized, _ = _session(max_age=MAX_AGE_LIMIT)
    parsed = parse_session(serialized, now=NOW, max_lifetime=timedelta(days=30))
    assert parsed.expires_at == NOW + timedelta(days=30)


@pytest.mark.parametrize("legacy", [False, True])
def test_max_lifetime_gives_a_cookie_without_expiry_one(legacy: bool) -> None:
    serialized, _ = _session(no_expiry=True, legacy=legacy)
    parsed = parse_session(serialized, now=NOW, max_lifetime=timedelta(minutes=45))
    assert parsed.expires_at == NOW + timedelta(minutes=45)
    assert parsed.expires_at is not None and parsed.expires_at.tzinfo is UTC


def test_max_lifetime_counts_from_now_in_utc() -> None:
    serialized, _ = _session(no_expiry=True)
    now = (NOW + timedelta(microseconds=5)).astimezone(timezone(timedelta(hours=-3)))
    parsed = parse_session(serialized, now=now, max_lifetime=timedelta(minutes=1))
    assert parsed.expires_at == NOW + timedelta(minutes=1, microseconds=5)
    assert parsed.expires_at is not None and parsed.expires_at.tzinfo is UTC


def test_without_max_lifetime_a_cookie_without_expiry_still_gives_none() -> None:
    serialized, _ = _session(no_expiry=True)
    assert parse_session(serialized, now=NOW, max_lifetime=None).expires_at is None


def test_max_lifetime_does_not_revive_an_expired_cookie() -> None:
    serialized, _ = _session(expired=True)
    with pytest.raises(SessionExpired):
        parse_session(serialized, now=NOW, max_lifetime=timedelta(hours=1))


def test_max_lifetime_does_not_hide_an_invalid_session() -> None:
    _, body = _session(no_expiry=True)
    body["userId"] = "not/valid"
    with pytest.raises(InvalidSession) as info:
        parse_session(reencode(body), now=NOW, max_lifetime=timedelta(hours=1))
    assert type(info.value) is InvalidSession and info.value.detail == BAD_USER_ID


@pytest.mark.parametrize("max_lifetime", [timedelta(0), timedelta(microseconds=-1), timedelta(days=-1)])
def test_max_lifetime_must_be_positive(max_lifetime: timedelta) -> None:
    serialized, _ = _session()
    with pytest.raises(ValueError, match="max_lifetime must be positive"):
        parse_session(serialized, now=NOW, max_lifetime=max_lifetime)


def test_huge_max_lifetime_does_not_overflow() -> None:
    serialized, _ = _session()
    assert parse_session(serialized, now=NOW, max_lifetime=timedelta.max).expires_at == NOW + timedelta(
        hours=2
    )
    serialized, _ = _session(no_expiry=True)
    expires_at = parse_session(serialized, now=NOW, max_lifetime=timedelta.max).expires_at
    assert expires_at == datetime.max.replace(tzinfo=UTC)


# --- wallet_change -----------------------------------------------------------------------------------------


def _parsed(body: dict[str, Any]) -> ParsedSession:
    return parse_session(reencode(body), now=NOW)


def test_wallet_change_reasons_are_fixed() -> None:
    assert WALLETS_CHANGED == "the refreshed session changes the session's wallet ids"
    assert SIGNERS_REMOVED == "the refreshed session removes a wallet's signer"


def test_same_session_is_no_wallet_change() -> None:
    serialized, _ = _session()
    parsed = parse_session(serialized, now=NOW)
    assert wallet_change(parsed, parsed) is None


@pytest.mark.parametrize("legacy", [False, True])
def test_refreshed_session_with_the_same_wallets_is_no_change(legacy: bool) -> None:
    _, body = _session(legacy=legacy)
    refreshed, refreshed_body = refresh_session(body, 99, now=NOW + timedelta(hours=1))
    assert refreshed_body["sessionCookie"] != body["sessionCookie"]
    assert wallet_change(_parsed(body), parse_session(refreshed, now=NOW)) is None


def test_wallet_order_does_not_matter() -> None:
    _, body = _session()
    reordered = copy.deepcopy(body)
    reordered["wallets"] = dict(reversed(list(body["wallets"].items())))
    old, new = _parsed(body), _parsed(reordered)
    assert [w.id for w in old.wallets] == [w.id for w in reversed(new.wallets)]
    assert wallet_change(old, new) is None


def test_added_wallet_is_a_change() -> None:
    _, body = _session()
    grown = copy.deepcopy(body)
    template = _first_wallet(grown)
    grown["wallets"]["extra"] = {**template, "id": "extra"}
    assert wallet_change(_parsed(body), _parsed(grown)) == WALLETS_CHANGED


def test_removed_wallet_is_a_change() -> None:
    _, body = _session()
    shrunk = copy.deepcopy(body)
    del shrunk["wallets"][next(iter(shrunk["wallets"]))]
    assert wallet_change(_parsed(body), _parsed(shrunk)) == WALLETS_CHANGED


def test_replaced_wallet_is_a_change() -> None:
    _, body = _session()
    replaced = copy.deepcopy(body)
    wallets = replaced["wallets"]
    first = next(iter(wallets))
    wallets["other"] = {**wallets.pop(first), "id": "other"}
    assert len(replaced["wallets"]) == len(body["wallets"])
    assert wallet_change(_parsed(body), _parsed(replaced)) == WALLETS_CHANGED


def test_wallet_ids_compare_exactly() -> None:
    _, body = _session(signers=False)
    template = _first_wallet(body)
    lower, upper = copy.deepcopy(body), copy.deepcopy(body)
    lower["wallets"] = {"w1": {**template, "id": "w1"}}
    upper["wallets"] = {"W1": {**template, "id": "W1"}}
    assert wallet_change(_parsed(lower), _parsed(upper)) == WALLETS_CHANGED


def test_another_users_session_with_other_wallets_is_a_change() -> None:
    first, _ = _session(seed=1)
    second, _ = _session(seed=2)
    assert wallet_change(parse_session(first, now=NOW), parse_session(second, now=NOW)) == WALLETS_CHANGED


def test_empty_wallets_to_empty_wallets_is_no_change() -> None:
    body = {"email": "a@example.com", "userId": "u1", "wallets": {}, "sessionCookie": "c=1"}
    assert wallet_change(_parsed(body), _parsed(body)) is None


def test_exclude_signers_refresh_removes_signers() -> None:
    _, body = _session()
    refreshed, _ = refresh_session(body, 99, signers=False, now=NOW)
    new = parse_session(refreshed, now=NOW)
    assert new.has_signers is False
    assert wallet_change(_parsed(body), new) == SIGNERS_REMOVED


def test_removing_one_signer_is_a_change() -> None:
    _, body = _session()
    one_fewer = copy.deepcopy(body)
    del _first_wallet(one_fewer)["signer"]
    assert _parsed(one_fewer).has_signers is True
    assert wallet_change(_parsed(body), _parsed(one_fewer)) == SIGNERS_REMOVED


@pytest.mark.parametrize("empty", [None, ""])
def test_emptied_signer_is_removed(empty: str | None) -> None:
    _, body = _session()
    emptied = copy.deepcopy(body)
    _first_wallet(emptied)["signer"] = empty
    assert wallet_change(_parsed(body), _parsed(emptied)) == SIGNERS_REMOVED


def test_adding_signers_is_allowed() -> None:
    _, body = _session()
    without, _ = refresh_session(body, 98, signers=False, now=NOW)
    assert wallet_change(parse_session(without, now=NOW), _parsed(body)) is None


def test_changed_signer_is_allowed() -> None:
    _, body = _session()
    rotated = copy.deepcopy(body)
    _first_wallet(rotated)["signer"] = "bmV3IHNoYXJl"
    assert wallet_change(_parsed(body), _parsed(rotated)) is None


def test_no_signers_to_no_signers_is_no_change() -> None:
    _, body = _session(signers=False)
    refreshed, _ = refresh_session(body, 97, signers=False, now=NOW)
    assert wallet_change(_parsed(body), parse_session(refreshed, now=NOW)) is None


def test_changed_wallets_win_over_removed_signers() -> None:
    _, body = _session()
    changed = copy.deepcopy(body)
    for wallet in changed["wallets"].values():
        del wallet["signer"]
    changed["wallets"]["extra"] = {**_first_wallet(changed), "id": "extra"}
    assert wallet_change(_parsed(body), _parsed(changed)) == WALLETS_CHANGED


def test_wallet_change_reason_names_no_wallet() -> None:
    _, body = _session()
    shrunk = copy.deepcopy(body)
    del shrunk["wallets"][next(iter(shrunk["wallets"]))]
    reasons = [
        wallet_change(_parsed(body), _parsed(shrunk)),
        wallet_change(
            _parsed(body), parse_session(refresh_session(body, 1, signers=False, now=NOW)[0], now=NOW)
        ),
    ]
    for reason in reasons:
        assert reason in (WALLETS_CHANGED, SIGNERS_REMOVED)
        for wallet_id in body["wallets"]:
            assert wallet_id not in reason
        for secret in secret_strings(body):
            assert secret not in reason


# --- the generator's Max-Age and refresh -------------------------------------------------------------------


def test_generator_max_age_changes_only_the_cookie_attributes() -> None:
    _, plain = make_session(3, now=NOW)
    _, with_max_age = make_session(3, now=NOW, max_age=120)
    assert "max-age" not in plain["sessionCookie"].lower()
    assert with_max_age["sessionCookie"] == plain["sessionCookie"].replace(
        "; HttpOnly", "; Max-Age=120; HttpOnly", 1
    )
    assert {k: v for k, v in with_max_age.items() if k != "sessionCookie"} == {
        k: v for k, v in plain.items() if k != "sessionCookie"
    }


def test_refresh_session_keeps_everything_but_the_cookie() -> None:
    _, body = _session()
    original = copy.deepcopy(body)
    serialized, refreshed = refresh_session(body, 5, now=NOW + timedelta(hours=1), max_age=60)
    assert body == original
    assert refresh_session(body, 5, now=NOW) == refresh_session(body, 5, now=NOW)
    assert {k: v for k, v in refreshed.items() if k != "sessionCookie"} == {
        k: v for k, v in body.items() if k != "sessionCookie"
    }
    assert refreshed["sessionCookie"].split(";", 1)[0] != body["sessionCookie"].split(";", 1)[0]
    assert "Max-Age=60" in refreshed["sessionCookie"]
    assert reencode(refreshed) == serialized
    _, stripped = refresh_session(body, 5, signers=False, now=NOW, no_expiry=True)
    assert signer_strings(stripped) == []
    assert "expires" not in stripped["sessionCookie"].lower()
