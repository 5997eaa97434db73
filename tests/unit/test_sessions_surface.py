"""The public surface of vault.sessions: the rest of the project is written against exactly these names."""

from __future__ import annotations

import vault.sessions


def test_every_exported_name_exists() -> None:
    for name in vault.sessions.__all__:
        assert hasattr(vault.sessions, name)


def test_max_session_chars() -> None:
    assert vault.sessions.MAX_SESSION_CHARS == 64 * 1024


def test_wallet_change_is_the_comparison_function() -> None:
    from vault.sessions._compare import wallet_change

    assert vault.sessions.wallet_change is wallet_change
