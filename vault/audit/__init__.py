"""The audit log's pure parts: event and checkpoint formats, the hash chain, keys, offline verification.

Writing events and sealing them is the service layer's job (it owns transactions); this package does
no I/O, so an auditor can verify an export with it and the public key alone.
"""

from vault.audit._chain import (
    CONTENT_FIELDS,
    GENESIS,
    Checkpoint,
    Event,
    checkpoint_hash,
    checkpoint_payload,
    content_bytes,
    content_hash,
    digest_content,
    link,
)
from vault.audit._keys import AuditKeys, PublicKey, subject_hmac
from vault.audit._verify import Problem, Report, verify

__all__ = [
    "CONTENT_FIELDS",
    "GENESIS",
    "AuditKeys",
    "Checkpoint",
    "Event",
    "Problem",
    "PublicKey",
    "Report",
    "checkpoint_hash",
    "checkpoint_payload",
    "content_bytes",
    "content_hash",
    "digest_content",
    "link",
    "subject_hmac",
    "verify",
]
