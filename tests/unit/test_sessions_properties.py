"""Property tests for vault.sessions.parse_session: nothing but InvalidSession escapes, round trips, and the
effective expiry (Max-Age over Expires, capped by max_lifetime)."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.sessiongen import make_session, reencode, secret_strings
from vault.errors import InvalidSession, SessionExpired
from vault.sessions import SessionFormat, parse_session
from vault.sessions._cookie import MAX_AGE_LIMIT, cookie_expiry

NOW = datetime(2026, 10, 1, 12, 0, 0, tzinfo=UTC)

# Every reason parse_session may give: a rejection's detail is always one of these, never built from input.
DETAILS = {
    "the session is not a string",
    "the session is empty",
    "the session is too large",
    "the session is not valid base64",
    "the session is not JSON",
    "the session JSON has duplicate keys",
    "the session is not a JSON object",
    "the session's authInfo is not an object",
    "the session matches no known export format",
    "the session has no valid userId",
    "the session has no wallets object",
    "the session has too many wallets",
    "the session has a malformed wallet",
    "a wallet's id does not match its key",
    "a wallet's signer is not a string",
    "a wallet belongs to a different user",
    "the session has no session cookie",
    "the session cookie's Expires is not an HTTP date",
    "the session cookie has more than one Expires attribute",
    "the session cookie's Max-Age is not a whole number of seconds up to ten years",
    "the session cookie has more than one Max-Age attribute",
    "the session's currentWalletIds is not an object",
    "the session's externalWallets is not an object",
    "the session has expired",
}


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
cookies = st.builds(
    lambda value, attrs: "; ".join([value, *attrs]),
    st.text(max_size=10),
    st.lists(
        st.sampled_from(
            [
                "Path=/",
                "HttpOnly",
                "Expires=",
                "expires=Thu, 01 Oct 2026 13:00:00 GMT",
                "Max-Age=",
                "max-age=60",
            ]
        )
        | st.builds(lambda v: f"Expires={v}", st.text(max_size=30))
        | st.builds(lambda v: f"Max-Age={v}", st.text(max_size=12) | st.integers().map(str))
        | st.builds(
            lambda d: "Expires=" + d.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            st.datetimes(timezones=st.just(UTC)),
        ),
        max_size=3,
    ),
)
identifiers = st.sampled_from(["u1", "w1", "w2"]) | st.text(alphabet="ab:._@-/ é", max_size=6)
labels = st.sampled_from(["EVM", "SOLANA", "DKLS", "ED25519"]) | st.text(max_size=4)


def _with_ids(items: list[tuple[str, dict[str, Any], bool]]) -> dict[str, Any]:
    return {key: ({**wallet, "id": key} if keep_id else wallet) for key, wallet, keep_id in items}


# Nearly valid sessions with a few fields drawn wrong, so every rule gets reached.
wallet_objects = st.fixed_dictionaries(
    {"type": labels | json_values},
    optional={
        "id": identifiers | json_values,
        "scheme": labels | json_values,
        "signer": st.text(max_size=8) | json_values,
        "userId": st.just("u1") | identifiers | json_values,
        "address": st.text(max_size=8),
    },
)
wallet_maps = st.lists(
    st.tuples(identifiers, wallet_objects, st.booleans()), max_size=3, unique_by=lambda t: t[0]
).map(_with_ids)
session_shaped = st.fixed_dictionaries(
    {
        "userId": st.just("u1") | identifiers | json_values,
        "wallets": wallet_maps | json_values,
        "sessionCookie": cookies | json_values,
    },
    optional={
        "authInfo": st.dictionaries(st.text(max_size=8), json_values, max_size=2) | json_values,
        "email": st.text(max_size=8) | json_values,
        "phone": st.text(max_size=8) | json_values,
        "countryCode": st.text(max_size=3) | json_values,
        "currentWalletIds": st.dictionaries(st.text(max_size=8), json_values, max_size=2) | json_values,
        "externalWallets": st.dictionaries(st.text(max_size=8), json_values, max_size=2) | json_values,
    },
)


def _check(serialized: str) -> None:
    try:
        parsed = parse_session(serialized, now=NOW)
    except InvalidSession as exc:
        event(exc.detail)
        assert exc.detail in DETAILS
        assert exc.__cause__ is None
    else:
        event("accepted")
        assert parsed.expires_at is None or parsed.expires_at > NOW


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@given(st.text())
def test_arbitrary_text(text: str) -> None:
    _check(text)


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \n"))
def test_arbitrary_base64_alphabet_text(text: str) -> None:
    _check(text)


@given(st.binary())
def test_arbitrary_base64_of_bytes(data: bytes) -> None:
    _check(_b64(data))
    _check(_b64(data).rstrip("="))


@given(json_values)
def test_arbitrary_base64_of_arbitrary_json(value: Any) -> None:
    _check(_b64(json.dumps(value).encode()))


@given(session_shaped)
def test_session_shaped_json(body: dict[str, Any]) -> None:
    _check(reencode(body))


@given(
    seed=st.integers(0, 2**32),
    path=st.lists(st.integers(0, 50), min_size=1, max_size=4),
    value=json_values | cookies | st.just(None),
    delete=st.booleans(),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_mutated_generated_sessions(seed: int, path: list[int], value: Any, delete: bool) -> None:
    _, original = make_session(seed, now=NOW)
    body = copy.deepcopy(original)
    target: Any = body
    for step in path[:-1]:  # walk down into nested objects by index
        if not isinstance(target, dict) or not target:
            break
        child = list(target.values())[step % len(target)]
        if not isinstance(child, dict):
            break
        target = child
    if isinstance(target, dict) and target:
        key = list(target)[path[-1] % len(target)]
        if delete:
            del target[key]
        else:
            target[key] = value
    serialized = reencode(body)
    try:
        parse_session(serialized, now=NOW)
        event("accepted")
    except InvalidSession as exc:
        event(exc.detail)
        assert exc.detail in DETAILS
        rendered = str(exc) + repr(exc)
        for secret in secret_strings(original):
            assert secret not in rendered


@given(
    seed=st.integers(0, 2**64),
    signers=st.booleans(),
    legacy=st.sampled_from(["para", "email", "phone"]),
    no_expiry=st.booleans(),
    minutes=st.integers(-(10**6), 10**6),
    max_age=st.none() | st.integers(1, MAX_AGE_LIMIT),
)
def test_generated_sessions_round_trip(
    seed: int, signers: bool, legacy: str, no_expiry: bool, minutes: int, max_age: int | None
) -> None:
    now = NOW + timedelta(minutes=minutes, microseconds=seed % 10**6)
    serialized, body = make_session(
        seed,
        signers=signers,
        legacy=legacy == "email",
        legacy_phone=legacy == "phone",
        no_expiry=no_expiry,
        now=now,
        max_age=max_age,
    )
    parsed = parse_session(serialized, now=now)
    assert parsed.user_id == body["userId"]
    assert parsed.format is (SessionFormat.PARA if legacy == "para" else SessionFormat.CAPSULE)
    assert [w.id for w in parsed.wallets] == list(body["wallets"])
    assert [w.type for w in parsed.wallets] == [w["type"] for w in body["wallets"].values()]
    assert parsed.has_signers is signers
    if max_age is not None:
        assert parsed.expires_at == now + timedelta(seconds=max_age)
    elif no_expiry:
        assert parsed.expires_at is None
    else:
        assert parsed.expires_at == now.replace(microsecond=0) + timedelta(hours=2)
    rendered = repr(parsed)
    for secret in secret_strings(body):
        assert secret not in rendered


# --- the effective expiry ----------------------------------------------------------------------------------

LATEST = datetime.max.replace(tzinfo=UTC)
nows = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
) | (st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.timezones()))
# Any HTTP date a cookie's Expires may carry: past, future, far future.
http_dates = st.datetimes(min_value=datetime(1601, 1, 1), max_value=datetime(9998, 12, 31)).map(
    lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")
)
attribute_names = st.sampled_from(["Max-Age", "max-age", "MAX-AGE", "mAx-aGe", " Max-Age "])
# Max-Age as a server may write it: negative, zero, up to the limit, with leading zeros.
max_ages = st.integers(-(10**30), MAX_AGE_LIMIT)


def _cookie(attributes: list[str]) -> str:
    return "; ".join(["capsule.sid=s%3Asecret.sig", "Path=/", *attributes, "HttpOnly"])


@given(
    now=nows,
    max_age=max_ages,
    zeros=st.integers(0, 3),
    name=attribute_names,
    expires=st.none() | http_dates,
    expires_first=st.booleans(),
)
def test_max_age_decides_the_expiry_whatever_expires_says(
    now: datetime, max_age: int, zeros: int, name: str, expires: str | None, expires_first: bool
) -> None:
    written = ("-" if max_age < 0 else "") + "0" * zeros + str(abs(max_age))
    attributes = [f"{name}={written}"]
    if expires is not None:
        attributes.insert(0 if expires_first else 1, f"Expires={expires}")
    expiry = cookie_expiry(_cookie(attributes), now=now)
    # Elapsed seconds, counted in UTC: in a zone with DST, ``now + timedelta`` is wall-clock arithmetic.
    assert expiry == now.astimezone(UTC) + timedelta(seconds=max(max_age, 0))
    assert expiry is not None and expiry.tzinfo is UTC


@given(now=nows, max_age=max_ages, expires=st.none() | http_dates)
def test_parse_session_expiry_is_now_plus_max_age(now: datetime, max_age: int, expires: str | None) -> None:
    _, body = make_session(5, now=now)
    body["sessionCookie"] = _cookie(
        [f"Max-Age={max_age}", *([] if expires is None else [f"Expires={expires}"])]
    )
    if max_age <= 0:
        try:
            parse_session(reencode(body), now=now)
        except SessionExpired:
            return
        raise AssertionError("a Max-Age <= 0 must be expired")
    expires_at = parse_session(reencode(body), now=now).expires_at
    assert expires_at == now.astimezone(UTC) + timedelta(seconds=max_age)


@given(
    max_age=st.integers(MAX_AGE_LIMIT + 1) | st.integers(min_value=10**18),
    expires=st.none() | http_dates,
)
def test_max_age_over_the_limit_is_refused(max_age: int, expires: str | None) -> None:
    attributes = [f"Max-Age={max_age}", *([] if expires is None else [f"Expires={expires}"])]
    try:
        cookie_expiry(_cookie(attributes), now=NOW)
    except InvalidSession as exc:
        assert exc.detail in DETAILS
        assert str(max_age) not in exc.detail
    else:
        raise AssertionError("a Max-Age over ten years must be refused")


@given(
    now=nows,
    max_lifetime=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta.max),
    cookie_expiry_kind=st.sampled_from(["none", "expires", "expired", "max-age"]),
    max_age=st.integers(1, MAX_AGE_LIMIT),
    seed=st.integers(0, 2**16),
)
def test_max_lifetime_bounds_the_expiry(
    now: datetime, max_lifetime: timedelta, cookie_expiry_kind: str, max_age: int, seed: int
) -> None:
    serialized, body = make_session(
        seed,
        now=now,
        no_expiry=cookie_expiry_kind in ("none", "max-age"),
        expired=cookie_expiry_kind == "expired",
        max_age=max_age if cookie_expiry_kind == "max-age" else None,
    )
    try:
        bound = now.astimezone(UTC) + max_lifetime  # elapsed time, not wall-clock time in now's zone
    except OverflowError:
        bound = LATEST
    try:
        parsed = parse_session(serialized, now=now, max_lifetime=max_lifetime)
    except SessionExpired:
        assert cookie_expiry_kind == "expired"
        return
    assert cookie_expiry_kind != "expired"
    assert parsed.expires_at is not None
    assert now < parsed.expires_at <= bound
    own = cookie_expiry(body["sessionCookie"], now=now)
    assert parsed.expires_at == (bound if own is None else min(own, bound))
    assert parsed.expires_at.tzinfo is UTC
