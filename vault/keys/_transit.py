"""The Transit KEK provider: DEKs wrapped by an OpenBao (or HashiCorp Vault) Transit key.

The key must be an AEAD key created with ``derived=true``: each wrap passes the DEK's associated data
(``dek_aad(user_id, version)``) as the derivation ``context``, so a wrapped DEK opens only for the user
and version it was made for. Not ``associated_data``: Transit's ``rewrap`` does not take it (OpenBao 2.7
ignores it), so a ciphertext bound that way could never be rewrapped after a rotation.

A wrapped DEK is Transit's ciphertext string ``vault:vN:...`` (ASCII) with ``kek_version`` N. Transit
answers 400 for a ciphertext that does not open: tampered, another context, or a version below the
key's ``min_decryption_version`` (retired). That is a :class:`~vault.errors.DecryptionError`: the DEK
cannot be opened any more, which retrying will not change. An unreachable, sealed or refusing server is
:class:`~vault.errors.KeyUnavailable` (see :mod:`vault.keys._transit_http`).

Retiring is Transit's ``min_decryption_version``: this provider only ever raises it. (An operator can
lower it again by hand until the old versions are trimmed; that is Transit's business, not ours.)

The token needs, on ``{mount}``: ``update`` on ``encrypt/{key}``, ``decrypt/{key}``, ``rewrap/{key}``;
``read`` on ``keys/{key}``; and for the admin operations ``update`` on ``keys/{key}/rotate`` and
``keys/{key}/config``. Not ``create`` on ``encrypt/{key}``: with it, a wrap under a missing key would
silently create a new one.
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from vault.errors import ConfigError, DecryptionError, InvalidRequest, KeyUnavailable
from vault.keys._files import read_private
from vault.keys._provider import KekStatus, WrappedKey
from vault.keys._transit_http import Reply, TransitHttp
from vault.settings import Settings

__all__ = ["AEAD_KEY_TYPES", "TransitProvider"]

AEAD_KEY_TYPES: Final = frozenset({"aes256-gcm96", "aes128-gcm96", "chacha20-poly1305"})
_CIPHERTEXT: Final = re.compile(r"vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/]+={0,2}")
# Items per rewrap request. OpenBao 2.7 refuses (400) a request body of more than about 1000 JSON strings
# ("high complexity"; each item is 4), and a small request stays far below the timeout.
_REWRAP_CHUNK: Final = 100
_UNEXPECTED: Final = "the KMS answered unexpectedly"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise KeyUnavailable(_UNEXPECTED)


def _version_of(ciphertext: object) -> int | None:
    """N of a well-formed ``vault:vN:<base64>``; ``None`` otherwise."""
    if isinstance(ciphertext, str) and (match := _CIPHERTEXT.fullmatch(ciphertext)):
        return int(match.group(1))
    return None


class TransitProvider:
    """Wraps DEKs with a derived Transit key. Never local: every call is a network round trip."""

    def __init__(
        self,
        *,
        addr: str,
        key: str,
        token: SecretStr,
        mount: str = "transit",
        namespace: str | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 5.0,
        retries: int = 3,
    ) -> None:
        """``addr`` is trusted here (:class:`~vault.settings.Settings` refuses plain http off loopback)."""
        self._key = key
        self._mount = mount
        self._kek_id = f"transit:{mount}/{key}"
        self._http = TransitHttp(
            addr=addr, token=token, namespace=namespace, verify=verify, timeout=timeout, retries=retries
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TransitProvider:
        """The provider the ``VAULT_TRANSIT_*`` settings describe; the token file is read here, once."""
        if settings.transit_addr is None or settings.transit_key is None:
            raise ConfigError("VAULT_TRANSIT_ADDR and VAULT_TRANSIT_KEY must be set for the transit provider")
        return cls(
            addr=settings.transit_addr,
            key=settings.transit_key,
            token=_token(settings),
            mount=settings.transit_mount,
            namespace=settings.transit_namespace,
            verify=_verify(settings.transit_ca_file),
            timeout=settings.transit_timeout_seconds,
            retries=settings.transit_retries,
        )

    def __repr__(self) -> str:
        return f"TransitProvider(kek_id={self._kek_id!r}, http={self._http!r})"

    @property
    def kek_id(self) -> str:
        return self._kek_id

    @property
    def local(self) -> bool:
        return False

    @property
    def max_call_seconds(self) -> float:
        """The longest one KMS call can take before it raises :class:`KeyUnavailable`."""
        return self._http.max_seconds

    async def wrap(self, dek: bytes, *, aad: bytes) -> WrappedKey:
        reply = await self._call("POST", "encrypt", {"plaintext": _b64(dek), "context": _b64(aad)})
        if reply.status != 200:
            self._missing(reply)
            raise KeyUnavailable(f"the KMS refused to wrap the data key (HTTP {reply.status})")
        ciphertext = reply.data.get("ciphertext")
        version = _version_of(ciphertext)
        if version is None or not isinstance(ciphertext, str):
            raise KeyUnavailable(_UNEXPECTED)
        return WrappedKey(kek_id=self._kek_id, kek_version=version, blob=ciphertext.encode("ascii"))

    async def unwrap(self, wrapped: WrappedKey, *, aad: bytes) -> bytes:
        ciphertext = self._ciphertext(wrapped)
        if ciphertext is None:
            raise DecryptionError()
        reply = await self._call("POST", "decrypt", {"ciphertext": ciphertext, "context": _b64(aad)})
        if reply.status != 200:
            self._missing(reply)
            raise DecryptionError()
        try:
            return base64.b64decode(str(reply.data.get("plaintext", "")), validate=True)
        except (binascii.Error, ValueError):
            raise KeyUnavailable(_UNEXPECTED) from None

    async def rewrap(self, items: Sequence[tuple[WrappedKey, bytes]]) -> list[WrappedKey | None]:
        out: list[WrappedKey | None] = [None] * len(items)
        # Only items that can be Transit ciphertexts go out: one malformed item would fail its batch.
        sendable = [(i, c, aad) for i, (w, aad) in enumerate(items) if (c := self._ciphertext(w)) and aad]
        for start in range(0, len(sendable), _REWRAP_CHUNK):
            chunk = sendable[start : start + _REWRAP_CHUNK]
            batch = [{"ciphertext": c, "context": _b64(aad)} for _, c, aad in chunk]
            reply = await self._call("POST", "rewrap", {"batch_input": batch})
            results = reply.data.get("batch_results")
            if not isinstance(results, list) or len(results) != len(chunk):
                # The request itself was refused (not one item): an item result would hide it.
                self._missing(reply)
                if reply.status == 200:
                    raise KeyUnavailable(_UNEXPECTED)
                raise KeyUnavailable(f"the KMS refused the rewrap request (HTTP {reply.status})")
            for (index, _, _), result in zip(chunk, results, strict=True):
                if not isinstance(result, dict) or result.get("error"):
                    continue  # this item does not unwrap (tampered, another context, retired version)
                ciphertext = result.get("ciphertext")
                version = _version_of(ciphertext)
                if version is not None and isinstance(ciphertext, str):
                    out[index] = WrappedKey(self._kek_id, version, ciphertext.encode("ascii"))
        return out

    async def status(self) -> KekStatus:
        data = await self._key_info()
        latest = _int(data.get("latest_version"))
        minimum = _int(data.get("min_decryption_version"))
        keys = data.get("keys")
        if not isinstance(keys, dict) or latest < 1:
            raise KeyUnavailable(_UNEXPECTED)
        try:
            versions = tuple(sorted(v for v in map(int, keys) if minimum <= v <= latest))
        except ValueError:
            raise KeyUnavailable(_UNEXPECTED) from None
        return KekStatus(self._kek_id, latest, max(minimum, 1), versions)

    async def rotate(self) -> int:
        reply = await self._call("POST", "keys", None, suffix="/rotate", idempotent=False)
        if reply.status not in (200, 204):
            self._missing(reply)
            raise KeyUnavailable(f"the KMS refused to rotate the key (HTTP {reply.status})")
        latest = reply.data.get("latest_version")  # OpenBao 2.7 answers 200 with the key; if not, read it
        return _int(latest) if latest is not None else (await self.status()).active_version

    async def retire(self, through_version: int) -> None:
        current = await self.status()
        if not 1 <= through_version < current.active_version:
            raise InvalidRequest(
                f"only versions below the active one ({current.active_version}) can be retired"
            )
        if through_version < current.min_decryption_version:
            return  # already retired; never lower the minimum (that would revive retired versions)
        payload = {"min_decryption_version": through_version + 1}
        reply = await self._call("POST", "keys", payload, suffix="/config")
        if reply.status not in (200, 204):
            self._missing(reply)
            raise KeyUnavailable(f"the KMS refused to retire key versions (HTTP {reply.status})")

    async def check(self) -> None:
        data = await self._key_info(missing_is_config_error=True)
        if data.get("type") not in AEAD_KEY_TYPES:
            raise ConfigError(
                f"the transit key {self._mount}/{self._key} cannot wrap data keys: its type must be one of "
                + ", ".join(sorted(AEAD_KEY_TYPES))
            )
        if data.get("derived") is not True:
            raise ConfigError(
                f"the transit key {self._mount}/{self._key} must be created with derived=true"
                " (the derivation context binds each data key to its user and version)"
            )

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        op: str,
        payload: dict[str, Any] | None,
        *,
        suffix: str = "",
        idempotent: bool = True,
    ) -> Reply:
        return await self._http.call(
            method, f"/v1/{self._mount}/{op}/{self._key}{suffix}", payload, idempotent=idempotent
        )

    async def _key_info(self, *, missing_is_config_error: bool = False) -> dict[str, Any]:
        reply = await self._call("GET", "keys", None)
        if reply.status == 404 and missing_is_config_error:
            raise ConfigError(
                f"the transit key {self._mount}/{self._key} does not exist (nor, perhaps, its mount)"
            )
        if reply.status != 200:
            self._missing(reply)
            raise KeyUnavailable(f"the KMS refused to describe the key (HTTP {reply.status})")
        return reply.data

    def _missing(self, reply: Reply) -> None:
        """:class:`KeyUnavailable` if the reply says the mount or the key does not exist."""
        if reply.status == 404 or reply.says("key not found"):
            raise KeyUnavailable("the KMS has no such transit key (or mount)")

    def _ciphertext(self, wrapped: WrappedKey) -> str | None:
        """The Transit ciphertext of a key this provider wrapped; ``None`` for anything else."""
        if wrapped.kek_id != self._kek_id:
            return None
        try:
            text = wrapped.blob.decode("ascii")
        except UnicodeDecodeError:
            return None
        return text if _version_of(text) is not None else None


def _token(settings: Settings) -> SecretStr:
    if settings.transit_token is not None:
        token = settings.transit_token.get_secret_value().strip()
    elif settings.transit_token_file is not None:
        raw = read_private(settings.transit_token_file, "transit token")
        try:
            token = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError("the transit token file is not UTF-8 text") from None
    else:
        raise ConfigError("set VAULT_TRANSIT_TOKEN or VAULT_TRANSIT_TOKEN_FILE for the transit provider")
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError("the transit token is empty or contains spaces or control characters")
    return SecretStr(token)


def _verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    """Certificate verification is always on: httpx's default CA bundle, or the bundle ``ca_file``."""
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError):
        raise ConfigError("VAULT_TRANSIT_CA_FILE cannot be loaded as a PEM CA bundle") from None
