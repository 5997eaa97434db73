"""Writing audit events: who asked, from where, and a MAC that tells the sealer our rows from forged ones.

Events are appended inside the transaction of what they record (see :meth:`Tx.insert_audit`): if the
event cannot be written, the operation does not happen.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from vault.audit import AuditKeys, content_bytes
from vault.service._principal import Principal
from vault.store import AuditRecord

__all__ = ["Auditor", "Context"]


@dataclass(frozen=True, slots=True)
class Context:
    """The caller of one request: principal (None on the public port), request id, source address."""

    principal: Principal | None = None
    request_id: str | None = None
    source: str | None = None


class Auditor:
    def __init__(self, keys: AuditKeys) -> None:
        self.keys = keys

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
        fields: dict[str, str | int | None] = {
            "at_us": time.time_ns() // 1000 if at_us is None else at_us,
            "action": action,
            "outcome": outcome,
            "actor_token_id": principal.token_id if principal is not None else actor_token_id,
            "actor_name": None if principal is None else principal.name,
            "user_id": user_id,
            "session_id": session_id,
            "lease_id": lease_id,
            "fencing_token": fencing_token,
            "purpose": purpose,
            "detail": detail,
            "request_id": ctx.request_id,
            "source": ctx.source,
            "subjects": hashed,
        }
        return AuditRecord(**fields, mac=self.keys.mac(content_bytes(fields)))  # type: ignore[arg-type]
