"""The session cookie: find its ``Expires`` attribute and read it as an aware UTC datetime.

A Para session cookie looks like ``capsule.sid=s%3A<id>.<sig>; Path=/; Expires=<HTTP date>; HttpOnly``.
The first ``;``-separated part is the cookie's own name and value (the secret); the rest are attributes
whose names are case-insensitive. Only ``Expires`` matters here. Nothing from the cookie ever reaches an
error message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from vault.errors import InvalidSession

__all__ = ["EXPIRES_DUPLICATED", "EXPIRES_MALFORMED", "cookie_expiry"]

EXPIRES_MALFORMED = "the session cookie's Expires is not an HTTP date"
EXPIRES_DUPLICATED = "the session cookie has more than one Expires attribute"


def cookie_expiry(cookie: str) -> datetime | None:
    """Return the cookie's ``Expires`` as an aware UTC datetime, or ``None`` if it has none.

    Raises :class:`InvalidSession` if ``Expires`` is not an HTTP date, or appears more than once (browsers
    take the last one, other parsers the first: an ambiguous lifetime is refused rather than guessed).
    """
    found: str | None = None
    for attribute in cookie.split(";")[1:]:
        name, _, value = attribute.partition("=")
        if name.strip().lower() != "expires":
            continue
        if found is not None:
            raise InvalidSession(EXPIRES_DUPLICATED)
        found = value.strip()
    if found is None:
        return None
    return _http_date(found)


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
