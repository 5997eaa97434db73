"""The DEK cache: bounded, short-lived, and never shows a key."""

from __future__ import annotations

from vault.crypto import SecretBytes
from vault.keys import DekCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = DekCache(ttl=5, max_entries=10, clock=clock)
    key = SecretBytes(b"k" * 32)
    cache.put("u", 1, key)
    clock.now += 4.9
    assert cache.get("u", 1) is key
    clock.now += 0.2
    assert cache.get("u", 1) is None and len(cache) == 0


def test_the_oldest_entry_is_evicted_past_the_bound() -> None:
    cache = DekCache(ttl=60, max_entries=2, clock=Clock())
    for i in range(3):
        cache.put(f"u{i}", 1, SecretBytes(bytes([i + 1]) * 32))
    assert len(cache) == 2
    assert cache.get("u0", 1) is None
    assert cache.get("u1", 1) is not None and cache.get("u2", 1) is not None
    assert cache.get("u2", 2) is None  # versions are separate entries


def test_zero_disables_and_repr_shows_no_key() -> None:
    for cache in (DekCache(ttl=0, max_entries=10), DekCache(ttl=10, max_entries=0)):
        cache.put("u", 1, SecretBytes(b"\x07" * 32))
        assert cache.get("u", 1) is None
    cache = DekCache(ttl=10, max_entries=10)
    secret = b"\x5a" * 32
    cache.put("u", 1, SecretBytes(secret))
    assert secret.hex() not in repr(cache) and "Z" * 8 not in repr(cache)
    cache.clear()
    assert len(cache) == 0
