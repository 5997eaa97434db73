"""Compare a refreshed session with the one it replaces: may it be written back over it?

A refresh (a new export of the same user's session) renews the cookie; it must not quietly change which
wallets the vault holds, nor drop a key share the vault held. The reasons are fixed strings that name no
wallet: wallet ids are not secret, but a reason is never built from input.
"""

from __future__ import annotations

from vault.sessions._parse import ParsedSession

__all__ = ["SIGNERS_REMOVED", "WALLETS_CHANGED", "wallet_change"]

WALLETS_CHANGED = "the refreshed session changes the session's wallet ids"
SIGNERS_REMOVED = "the refreshed session removes a wallet's signer"


def wallet_change(old: ParsedSession, new: ParsedSession) -> str | None:
    """Return ``None`` if ``new`` may replace ``old`` as far as wallets go, else a fixed reason.

    ``new`` must hold exactly the same set of wallet ids as ``old`` (order does not matter; ids compare
    exactly, case included), else :data:`WALLETS_CHANGED`. Every wallet that had a signer in ``old`` must
    still have one in ``new``, else :data:`SIGNERS_REMOVED`; a signer where there was none is fine. When
    both hold, :data:`WALLETS_CHANGED` is the reason given. Only wallets are compared: the user id, format
    and expiry are the caller's to check.
    """
    if {w.id for w in old.wallets} != {w.id for w in new.wallets}:
        return WALLETS_CHANGED
    signed = {w.id for w in new.wallets if w.has_signer}
    if any(w.has_signer and w.id not in signed for w in old.wallets):
        return SIGNERS_REMOVED
    return None
