"""Bodies of the key-management routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from vault.service import KeyAdmin, KeysStatus

__all__ = ["DekCount", "DekRotated", "KeysView", "RewrapRequest", "RewrapView", "UserShreddedView"]


class DekCount(BaseModel):
    kek_id: str
    kek_version: int
    deks: int


class KeysView(BaseModel):
    kek_id: str = Field(description="The active KEK: `local` or `transit:MOUNT/KEY`.")
    active_version: int
    min_decryption_version: int
    versions: list[int] = Field(description="KEK versions that can still unwrap.")
    deks: list[DekCount] = Field(description="Live data keys per KEK id and version.")
    total: int
    stale: int = Field(description="Data keys under an older version of the active KEK: what rewrap moves.")
    foreign: int = Field(description="Data keys under another KEK id, which this vault cannot rewrap.")
    rewrapping: bool = Field(description="Whether this replica runs a background rewrap now.")

    @classmethod
    def of(cls, status: KeysStatus, rewrapping: bool) -> KeysView:
        kek = status.kek
        return cls(
            kek_id=kek.kek_id,
            active_version=kek.active_version,
            min_decryption_version=kek.min_decryption_version,
            versions=list(kek.versions),
            deks=[DekCount(kek_id=c.kek_id, kek_version=c.kek_version, deks=c.deks) for c in status.counts],
            total=status.total,
            stale=status.stale,
            foreign=status.foreign,
            rewrapping=rewrapping,
        )


class RewrapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch: int = Field(500, ge=1, le=10_000, description="Data keys per KMS call and per transaction.")


class RewrapView(BaseModel):
    running: bool = Field(description="Whether this replica runs a background rewrap now.")
    stale: int | None = Field(
        description="Data keys still under an older KEK version (from the database, so any replica's view;"
        " while the KMS is unreachable, against its last known active version; null if this replica never"
        " reached it)."
    )
    rewrapped: int = Field(description="Rewrapped by this replica's last or current run.")
    failed: int
    skipped: int
    batches: int
    error: str | None = Field(None, description="The error code that stopped this replica's last run.")

    @classmethod
    def of(cls, stale: int | None, admin: KeyAdmin) -> RewrapView:
        run = admin.background
        return cls(
            running=admin.rewrapping,
            stale=stale,
            rewrapped=0 if run is None else run.rewrapped,
            failed=0 if run is None else run.failed,
            skipped=0 if run is None else run.skipped,
            batches=0 if run is None else run.batches,
            error=admin.background_error,
        )


class DekRotated(BaseModel):
    user_id: str
    dek_version: int
    sessions: int = Field(description="Stored sessions re-encrypted under the new data key.")


class UserShreddedView(BaseModel):
    shredded: bool
    sessions: int = Field(description="Stored sessions whose ciphertext was destroyed.")
    leases: int = Field(description="Open leases ended.")
