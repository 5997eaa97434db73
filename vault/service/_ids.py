"""The shapes of every identifier a caller can send, declared once: the API puts them in its OpenAPI
schema and validates paths, queries and bodies with them before anything is stored, audited or MAC'd.

Each is anchored and bounded by the column that holds it (session and lease ids are canonical UUIDs,
36 characters; user ids are what the session parser accepts, at most 128), so no database ever sees a
value it would trim, overflow or refuse.
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "ACTION_PATTERN",
    "INT64_MAX",
    "NAME_PATTERN",
    "OUTCOME_PATTERN",
    "PURPOSE_PATTERN",
    "TOKEN_ID_PATTERN",
    "USER_ID_PATTERN",
    "UUID_PATTERN",
    "source_address",
]

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
USER_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
TOKEN_ID_PATTERN = r"^[0-9a-f]{16}$"  # noqa: S105 - a pattern, not a secret
PURPOSE_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
NAME_PATTERN = r"^[A-Za-z0-9 ._:@/-]{1,128}$"
ACTION_PATTERN = r"^[a-z_]{1,16}(\.[a-z_]{1,15})?$"
OUTCOME_PATTERN = r"^(ok|denied|error|unauthenticated)$"
INT64_MAX = 2**63 - 1


def source_address(host: str | None) -> str | None:
    """``host`` as a canonical IP address (brackets and an IPv6 zone dropped), or None if it is not one."""
    if not host or len(host) > 64:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.partition("%")[0]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
