"""The session cookie: read its lifetime (``Max-Age``, else ``Expires``) as an aware UTC datetime.

A Para session cookie looks like ``capsule.sid=s%3A<id>.<sig>; Path=/; Expires=<HTTP date>; HttpOnly``,
possibly with ``Max-Age=<seconds>`` as well. The first ``;``-separated part is the cookie's own name and
value (the secret) and is never read as an attribute; the rest are attributes whose names are
case-insensitive. Only ``Expires`` and ``Max-Age`` matter here. As in RFC 6265 (sections 5.2.2 and 5.3),
``Max-Age`` takes precedence over ``Expires``. Nothing from the cookie ever reaches an error message.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from vault.errors import InvalidSession

__all__ = [
    "EXPIRES_DUPLICATED",
    "EXPIRES_MALFORMED",
    "MAX_AGE_DUPLICATED",
    "MAX_AGE_LIMIT",
    "MAX_AGE_MALFORMED",
    "cookie_expiry",
]

EXPIRES_MALFORMED = "the session cookie's Expires is not an HTTP date"
EXPIRES_DUPLICATED = "the session cookie has more than one Expires attribute"
MAX_AGE_MALFORMED = "the session cookie's Max-Age is not a whole number of seconds up to ten years"
MAX_AGE_DUPLICATED = "the session cookie has more than one Max-Age attribute"

# The longest Max-Age accepted, in seconds: ten years of 365 days. A session cookie never lives that long;
# anything beyond it is refused rather than clamped (it is a broken or hostile export, not a lifetime).
MAX_AGE_LIMIT = 10 * 365 * 24 * 60 * 60

# RFC 6265 section 5.2.2: an optional '-' then ASCII digits (not str.isdigit, which takes any Unicode digit).
_DELTA_SECONDS = re.compile(r"-?[0-9]+")
_LATEST = datetime.max.replace(tzinfo=UTC)


def cookie_expiry(cookie: str, *, now: datetime) -> datetime | None:
    """Return the cookie's effective expiry as an aware UTC datetime, or ``None`` if it has none.

    With a ``Max-Age`` attribute the expiry is ``now + Max-Age`` seconds, whatever ``Expires`` says; a
    ``Max-Age`` of zero or less means "expired now" and gives ``now`` (in UTC) however negative it is.
    Without ``Max-Age`` it is ``Expires``; with neither, ``None``. ``now`` must be timezone-aware. A result
    past the last representable datetime is clamped to ``datetime.max`` (UTC) instead of overflowing.

    Raises :class:`InvalidSession` with a fixed reason if ``Expires`` is not an HTTP date (checked even when
    ``Max-Age`` overrides it), if ``Max-Age`` is not an integer (an optional ``-`` then ASCII digits, no
    ``+``, decimals, exponent or inner spaces) or is over :data:`MAX_AGE_LIMIT` seconds (ten years:
    refused, not clamped), or if either attribute appears more than once (browsers take the last one,
    other parsers the first: an ambiguous lifetime is refused rather than guessed).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    expires: str | None = None
    max_age: str | None = None
    for attribute in cookie.split(";")[1:]:
        name, _, value = attribute.partition("=")
        name = name.strip().lower()
        if name == "expires":
            if expires is not None:
                raise InvalidSession(EXPIRES_DUPLICATED)
            expires = value.strip()
        elif name == "max-age":
            if max_age is not None:
                raise InvalidSession(MAX_AGE_DUPLICATED)
            max_age = value.strip()
    expires_at = None if expires is None else _http_date(expires)
    if max_age is not None:
        return after(now, timedelta(seconds=_delta_seconds(max_age)))
    return expires_at


def after(now: datetime, delta: timedelta) -> datetime:
    """``now + delta`` in UTC, clamped to ``datetime.max`` (UTC) where it would overflow."""
    try:
        return now.astimezone(UTC) + delta
    except OverflowError:
        return _LATEST


def _delta_seconds(value: str) -> int:
    """The Max-Age in seconds, 0 for any value <= 0; never calls ``int`` on more than a few digits."""
    if not _DELTA_SECONDS.fullmatch(value):
        raise InvalidSession(MAX_AGE_MALFORMED)
    if value.startswith("-"):  # any negative number, "-0" included: expired now
        return 0
    digits = value.lstrip("0")
    if not digits:  # "0", "000"
        return 0
    if len(digits) > len(str(MAX_AGE_LIMIT)) or int(digits) > MAX_AGE_LIMIT:
        raise InvalidSession(MAX_AGE_MALFORMED)
    return int(digits)


def _http_date(value: str) -> datetime:
    if not value:
        raise InvalidSession(EXPIRES_MALFORMED)
    try:
        parsed = parsedate_to_datetime(value)
        # An RFC 2822 date with "-0000" parses naive ("UTC, origin unknown"); HTTP dates are GMT: read as UTC.
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, OverflowError, IndexError):
        raise InvalidSession(EXPIRES_MALFORMED) from None
