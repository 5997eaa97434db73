"""``SecretBytes``: a bytes wrapper that keeps key material out of reprs, logs and pickles.

Wiping memory is best-effort in Python and is not attempted here: ``bytes`` are immutable, the
interpreter and the ``cryptography`` backend make copies we cannot reach, and the garbage collector
decides when memory is reused. The wrapper's job is narrower: make accidental disclosure (``repr``
in a log line or traceback, ``str`` in an f-string, pickling into a cache or queue) hard.
"""

from __future__ import annotations

import hmac
from typing import NoReturn, final

__all__ = ["SecretBytes"]

_REDACTED = "SecretBytes(<redacted>)"


@final
class SecretBytes:
    """An immutable wrapper around secret ``bytes``. Call :meth:`reveal` to get them.

    Equality is constant-time for equal lengths (``hmac.compare_digest``) and only defined between two
    ``SecretBytes``; comparing with plain ``bytes`` is ``False``. Instances are unhashable, cannot be
    pickled, and their ``repr``/``str`` never show the value.
    """

    __slots__ = ("_value",)
    __hash__ = None  # type: ignore[assignment]  # unhashable: a hash of a secret is a leak

    _value: bytes

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError("SecretBytes wraps bytes")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> bytes:
        """The secret bytes. Keep the result's lifetime and reach as small as possible."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretBytes):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __repr__(self) -> str:
        return _REDACTED

    def __str__(self) -> str:
        return _REDACTED

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("SecretBytes is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("SecretBytes is immutable")

    def __copy__(self) -> SecretBytes:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> SecretBytes:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled")
