"""Who asked, from where: what every audit event records about the caller."""

from __future__ import annotations

from dataclasses import dataclass

from vault.service._tokens import Principal
from vault.store import AuditRecord

__all__ = ["Context", "audit_record"]


@dataclass(frozen=True, slots=True)
class Context:
    principal: Principal | None = None
    request_id: str | None = None
    source: str | None = None


def audit_record(ctx: Context, action: str, outcome: str, **fields: str | int | None) -> AuditRecord:
    principal = ctx.principal
    return AuditRecord(
        action=action,
        outcome=outcome,
        actor_token_id=None if principal is None else principal.token_id,
        actor_name=None if principal is None else principal.name,
        request_id=ctx.request_id,
        source=ctx.source,
        **fields,  # type: ignore[arg-type]
    )
