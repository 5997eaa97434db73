"""The group-committed halves of the lease service: a batch of grants, or of plain releases, in one
transaction.

One transaction per batch: the store decides every request (``Tx.grant_batch`` / ``Tx.release_batch``:
one lock per session, in a fixed order, each request's writes in a savepoint), then every decision's
audit events are appended, then one commit. A grant's plaintext is decrypted before the commit and
handed out only after it: no plaintext leaves without its committed ``lease.grant`` event. If the
commit (or the audit append) fails, nothing of the batch happened, and every request of it gets that
error (503: the client retries). One request's own failure (its statements refused) is audited as
``error`` and the others go on.

A granted session whose data key is not resolved yet, or that does not decrypt, must not keep its
lease: the whole transaction is rolled back and the batch runs again at once without that request. A
request that does not decrypt is answered with DecryptionError (audited in a transaction of its own); one
whose key is missing gets :class:`KeyNeeded` back, and its caller resolves the key with no transaction
open and no batch waiting on it (a KMS call never runs under a lock, nor holds up other requests; see
:mod:`vault.service._keys`), then submits it again. Rolling back costs the others one more round of the
same work, only on a cache miss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from vault.crypto import session_aad, unseal
from vault.errors import (
    DecryptionError,
    LeaseHeld,
    LeaseLost,
    NoLease,
    NoSession,
    SessionRevoked,
    SessionSuperseded,
    StoredSessionExpired,
    StoreUnavailable,
    UserShredded,
    VaultError,
)
from vault.errors import Forbidden as NotHolder
from vault.service._audit import Auditor, Context
from vault.service._keys import KeyNeeded, Keys
from vault.store import AuditRecord, GrantDecision, GrantRequest, ReleaseRequest, Store

__all__ = [
    "Grant", "GrantJob", "RowBusy", "audit_grant_error", "from_us", "grant_batch", "release_batch",
    "release_refusal",
]  # fmt: skip

log = logging.getLogger("vault.service")


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


@dataclass(frozen=True, slots=True)
class Grant:
    lease_id: str
    session_id: str
    user_id: str
    fencing_token: int
    expires_at: datetime
    session: str = field(repr=False)


def _grant_refusal(decision: GrantDecision) -> VaultError:
    match decision.outcome:
        case "no_session":
            return NoSession()
        case "revoked":
            return SessionRevoked()
        case "superseded":
            return SessionSuperseded()
        case "shredded":
            return UserShredded()
        case "expired":
            return StoredSessionExpired()
        case "held":
            return LeaseHeld(retry_after=decision.retry_after or 1)
        case "error":
            return StoreUnavailable()
    raise AssertionError(f"unknown grant outcome {decision.outcome!r}")


def _unaudited(outcome: str) -> bool:
    return outcome == "busy"  # nothing was decided: the request is run again and audited then


def release_refusal(outcome: str) -> VaultError:
    match outcome:
        case "no_lease":
            return NoLease()
        case "not_holder":
            return NotHolder("only the credential that took this lease may renew or release it")
        case "shredded":
            return UserShredded()
        case "lost":
            return LeaseLost()
        case "error":
            return StoreUnavailable()
    raise AssertionError(f"unknown release outcome {outcome!r}")


class RowBusy(Exception):
    """Control flow: another transaction holds this request's session row lock; the batch did not wait.
    The caller runs the request again on its own, waiting for the lock (no batch waits behind it)."""


class _Again(Exception):
    """Roll the batch back: some granted session needs a key resolved first, or does not decrypt."""


def _open(keys: Keys, decision: GrantDecision) -> str:
    assert decision.user_id is not None and decision.session_id is not None
    assert decision.dek_version is not None and decision.session_version is not None
    assert decision.ciphertext is not None
    dek = keys.get(decision.user_id, decision.dek_version)
    aad = session_aad(decision.user_id, decision.session_id, decision.session_version)
    return unseal(decision.ciphertext, key=dek.reveal(), aad=aad).decode()


def _granted(
    auditor: Auditor, ctx: Context, request: GrantRequest, d: GrantDecision, plaintext: str
) -> tuple[list[AuditRecord], Grant]:
    assert d.at_us is not None and d.fencing_token is not None
    assert d.session_id is not None and d.user_id is not None
    records = []
    if d.ended_lease_id is not None:
        records.append(
            auditor.record(
                ctx, "lease.takeover", "ok", at_us=d.at_us, lease_id=d.ended_lease_id,
                fencing_token=d.ended_fence, purpose=request.purpose, user_id=d.user_id,
                session_id=d.session_id,
            )
        )  # fmt: skip
    records.append(
        auditor.record(
            ctx, "lease.grant", "ok", at_us=d.at_us, lease_id=request.lease_id, fencing_token=d.fencing_token,
            purpose=request.purpose, user_id=d.user_id, session_id=d.session_id,
            detail="wallet changes allowed" if request.allow_wallet_changes else None,
        )
    )  # fmt: skip
    grant = Grant(
        lease_id=request.lease_id, session_id=d.session_id, user_id=d.user_id, fencing_token=d.fencing_token,
        expires_at=from_us(d.at_us + request.ttl_seconds * 1_000_000), session=plaintext,
    )  # fmt: skip
    return records, grant


def _grant_denied(
    auditor: Auditor, ctx: Context, request: GrantRequest, d: GrantDecision, error: VaultError
) -> AuditRecord:
    outcome = "error" if d.outcome == "error" else "denied"
    return auditor.record(
        ctx, "lease.grant", outcome, at_us=d.at_us, detail=error.code, purpose=request.purpose,
        user_id=d.user_id, session_id=d.session_id,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class GrantJob:
    """One grant request of a batch, with the keys its caller resolved (outside any transaction)."""

    ctx: Context
    request: GrantRequest
    keys: Keys


async def grant_batch(
    store: Store, auditor: Auditor, jobs: Sequence[GrantJob], *, wait: bool = False
) -> list[Grant | BaseException]:
    """Decide and commit a batch of grants: one result per job, a Grant or the exception to raise.

    :class:`KeyNeeded` for a job means: resolve that key (with no transaction open) and submit it again;
    :class:`RowBusy`: run it again alone with ``wait``. The batch never waits for a KMS nor for a row lock
    held elsewhere: those jobs are set aside at once. A job whose decision cannot be opened (it does not
    decrypt) or recorded (a value the vault's role stored behind its back that no audit event can hold)
    is answered alone, audited as an error, and the batch runs again without it.
    """
    results: dict[int, Grant | BaseException] = {}
    pending = list(range(len(jobs)))
    while pending:
        aside: dict[int, Exception] = {}
        decided: dict[int, Grant | BaseException] = {}
        try:
            async with store.transaction() as tx:
                decisions = await tx.grant_batch([jobs[i].request for i in pending], wait=wait)
                records: list[AuditRecord] = []
                for i, d in zip(pending, decisions, strict=True):
                    job = jobs[i]
                    if _unaudited(d.outcome):
                        decided[i] = RowBusy()
                        continue
                    try:
                        if d.outcome != "granted":
                            refusal = decided[i] = _grant_refusal(d)
                            records.append(_grant_denied(auditor, job.ctx, job.request, d, refusal))
                            continue
                        plaintext = _open(job.keys, d)  # inside the transaction: a failure keeps no lease
                        granted, decided[i] = _granted(auditor, job.ctx, job.request, d, plaintext)
                        records += granted
                    except (KeyNeeded, DecryptionError) as exc:
                        aside[i] = exc
                    except ValueError:  # an audited value out of its column's range (see Auditor.record)
                        log.warning("a batched grant cannot be audited: a stored value is out of range")
                        aside[i] = StoreUnavailable()
                if aside:
                    raise _Again()
                await tx.insert_audits(records)
        except _Again:
            for i, failure in aside.items():
                if isinstance(failure, VaultError):  # not KeyNeeded: that one is resolved and run again
                    await audit_grant_error(store, auditor, jobs[i].ctx, jobs[i].request, failure)
                results[i] = failure
            pending = [i for i in pending if i not in aside]
            continue
        except VaultError as exc:  # the transaction failed: nothing of this batch happened
            results.update(dict.fromkeys(pending, exc))
            break
        results.update(decided)
        break
    return [results[i] for i in range(len(jobs))]


async def audit_grant_error(
    store: Store, auditor: Auditor, ctx: Context, request: GrantRequest, error: VaultError
) -> None:
    """A grant that failed on its key or its ciphertext, audited in a transaction of its own."""
    async with store.transaction() as tx:
        await tx.insert_audit(
            auditor.record(
                ctx, "lease.grant", "error", detail=error.code, purpose=request.purpose,
                user_id=request.user_id, session_id=request.session_id,
            )
        )  # fmt: skip


async def release_batch(
    store: Store, auditor: Auditor, jobs: Sequence[tuple[Context, ReleaseRequest]], *, wait: bool = False
) -> list[BaseException | None]:
    """End a batch of leases (no write-back) in one transaction: None or the error, per job
    (:class:`RowBusy`: run it again alone with ``wait``, as for grants)."""
    out: list[BaseException | None] = []
    async with store.transaction() as tx:
        decisions = await tx.release_batch([request for _, request in jobs], wait=wait)
        records = []
        for (ctx, request), d in zip(jobs, decisions, strict=True):
            if _unaudited(d.outcome):
                out.append(RowBusy())
                continue
            if d.outcome == "released":
                records.append(
                    auditor.record(
                        ctx, "lease.release", "ok", at_us=d.at_us, lease_id=request.lease_id,
                        fencing_token=d.fencing_token, purpose=d.purpose, user_id=d.user_id,
                        session_id=d.session_id,
                    )
                )  # fmt: skip
                out.append(None)
                continue
            error = release_refusal(d.outcome)
            records.append(
                auditor.record(
                    ctx, "lease.release", "error" if d.outcome == "error" else "denied", at_us=d.at_us,
                    detail=error.code, lease_id=request.lease_id, fencing_token=request.fencing_token,
                    user_id=d.user_id, session_id=d.session_id,
                )
            )  # fmt: skip
            out.append(error)
        await tx.insert_audits(records)
    return out
