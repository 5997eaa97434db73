"""The audit log's pure parts: event and checkpoint formats, the hash chain, keys, offline verification.

Writing events and sealing them is the service layer's job (it owns transactions); this package does
no I/O, so an auditor can verify an export with it and the public key alone.
"""

from vault.audit._chain import (
    CONTENT_FIELDS,
    GENESIS,
    Checkpoint,
    Event,
    chain_state_payload,
    checkpoint_hash,
    checkpoint_payload,
    content_bytes,
    content_hash,
    digest_content,
    link,
)
from vault.audit._keys import AuditKeys, PublicKey, subject_hmac
from vault.audit._verify import DEFAULT_GRACE_US, DEFAULT_SKEW_US, MacChecker, Problem, Report, verify

__all__ = [
    "CONTENT_FIELDS",
    "DEFAULT_GRACE_US",
    "DEFAULT_SKEW_US",
    "GENESIS",
    "AuditKeys",
    "Checkpoint",
    "Event",
    "MacChecker",
    "Problem",
    "PublicKey",
    "Report",
    "chain_state_payload",
    "checkpoint_hash",
    "checkpoint_payload",
    "content_bytes",
    "content_hash",
    "digest_content",
    "link",
    "subject_hmac",
    "verify",
]
