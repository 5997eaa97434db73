"""Writing audit events: who asked, from where, and a MAC that tells the sealer our rows from forged ones.

Events are appended inside the transaction of what they record (see :meth:`Tx.insert_audit`): if the
event cannot be written, the operation does not happen. Every field is canonicalised and bounded here,
before the MAC: text is valid UTF-8 without control characters and no longer than its column, so what
the database stores is exactly what was MAC'd (PostgreSQL silently trims trailing spaces past a
``varchar``'s length; a NUL or a lone surrogate it refuses outright).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from vault.audit import AuditKeys, content_bytes
from vault.service._principal import Principal
from vault.store import AUDIT_TEXT_LIMITS, AuditRecord

__all__ = ["Auditor", "Context", "bounded_text", "utcnow", "wall_clock_us"]

_INT64 = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def bounded_text(value: str | None, limit: int) -> str | None:
    """``value`` as valid UTF-8 with control characters replaced, cut to ``limit`` characters."""
    if value is None:
        return None
    if not (value.isascii() and value.isprintable()):
        value = _CONTROL.sub("\ufffd", value.encode("utf-8", "replace").decode("utf-8"))
    return value[:limit]


@dataclass(frozen=True, slots=True)
class Context:
    """The caller of one request: principal (None on the public port), request id, source address."""

    principal: Principal | None = None
    request_id: str | None = None
    source: str | None = None


def utcnow() -> datetime:
    """This process's wall clock, as an aware UTC datetime (the default clock of the Vault)."""
    return datetime.now(UTC)


def wall_clock_us() -> int:
    """This process's wall clock, in microseconds since the epoch."""
    return time.time_ns() // 1000


class Auditor:
    def __init__(
        self, keys: AuditKeys, *, actor_name: str | None = None, clock_us: Callable[[], int] = wall_clock_us
    ) -> None:
        """``actor_name`` names the actor of events with no principal (the CLI's operator); ``clock_us``
        dates events that the database's clock does not (the Vault passes its one injected clock)."""
        self.keys = keys
        self.actor_name = actor_name
        self.clock_us = clock_us

    def __repr__(self) -> str:
        return f"Auditor({self.keys!r})"

    def record(
        self,
        ctx: Context,
        action: str,
        outcome: str,
        *,
        at_us: int | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        lease_id: str | None = None,
        fencing_token: int | None = None,
        purpose: str | None = None,
        detail: str | None = None,
        subjects: Iterable[str] = (),
        actor_token_id: str | None = None,
    ) -> AuditRecord:
        """An event for ``ctx``. ``at_us`` defaults to this process's clock; lease decisions pass the
        database's. ``subjects`` (emails, addresses) are stored only as keyed hashes."""
        principal = ctx.principal
        hashed = " ".join(self.keys.subject(s) for s in subjects) or None
        at = self.clock_us() if at_us is None else at_us
        for number in (at, fencing_token):
            if number is not None and not -_INT64 <= number <= _INT64:
                raise ValueError("an audited integer is outside the column's range")
        text = {
            "action": action,
            "outcome": outcome,
            "actor_token_id": principal.token_id if principal is not None else actor_token_id,
            "actor_name": self.actor_name if principal is None else principal.name,
            "user_id": user_id,
            "session_id": session_id,
            "lease_id": lease_id,
            "purpose": purpose,
            "detail": detail,
            "request_id": ctx.request_id,
            "source": ctx.source,
        }
        fields: dict[str, str | int | None] = {
            name: bounded_text(value, AUDIT_TEXT_LIMITS[name]) for name, value in text.items()
        }
        fields |= {
            "uid": secrets.token_hex(16),
            "at_us": at,
            "fencing_token": fencing_token,
            "subjects": hashed,
        }
        return AuditRecord(**fields, mac=self.keys.mac(content_bytes(fields)))  # type: ignore[arg-type]
