"""A bounded, short-lived in-memory cache of unwrapped DEKs.

It only saves KEK round trips: correctness never depends on it (every replica may hold a different
set). Entries expire ``ttl`` seconds after they were put; the oldest entry is evicted past
``max_entries``. Evicting drops our reference; Python cannot promise the bytes are wiped (best-effort).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from vault.crypto import SecretBytes

__all__ = ["DekCache"]


class DekCache:
    def __init__(self, *, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl < 0 or max_entries < 0:
            raise ValueError("ttl and max_entries must not be negative")
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, int], tuple[float, SecretBytes]] = OrderedDict()

    def __repr__(self) -> str:
        return f"DekCache(entries={len(self._entries)}, ttl={self._ttl}, max_entries={self._max})"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: str, dek_version: int) -> SecretBytes | None:
        key = (user_id, dek_version)
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, dek = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return dek

    def put(self, user_id: str, dek_version: int, dek: SecretBytes) -> None:
        if self._max == 0 or self._ttl == 0:
            return
        key = (user_id, dek_version)
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self._ttl, dek)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def drop(self, user_id: str, dek_version: int) -> None:
        self._entries.pop((user_id, dek_version), None)

    def drop_user(self, user_id: str) -> None:
        for key in [k for k in self._entries if k[0] == user_id]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
