"""The HTTP side of the Transit provider: one OpenBao / Vault API call, with retries and error mapping.

Transient failures (a connection error or timeout, 5xx, 429) are retried up to ``retries`` times with
full-jitter exponential backoff; each attempt is cut at ``timeout`` seconds, so a call takes at most
:attr:`TransitHttp.max_seconds` however the server misbehaves. Then, and at once for 403, the call
raises :class:`~vault.errors.KeyUnavailable` with a detail the vault wrote: response bodies are never
quoted (they may echo input), and the token is never in any message, repr or log line.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from pydantic import SecretStr

from vault.errors import KeyUnavailable

__all__ = ["Reply", "TransitHttp"]

_BACKOFF_BASE: Final = 0.1  # seconds: the first retry waits up to this, doubling after
_BACKOFF_CAP: Final = 1.0  # no single wait is longer
_jitter = random.SystemRandom()


@dataclass(frozen=True, slots=True)
class Reply:
    """A non-transient answer: its status and its JSON body (``{}`` if it had none or was not JSON)."""

    status: int
    body: dict[str, Any] = field(repr=False)

    @property
    def data(self) -> dict[str, Any]:
        data = self.body.get("data")
        return data if isinstance(data, dict) else {}

    def says(self, words: str) -> bool:
        """Whether one of the ``errors`` contains ``words`` (for classifying, never for quoting)."""
        errors = self.body.get("errors")
        return isinstance(errors, list) and any(isinstance(e, str) and words in e for e in errors)


class TransitHttp:
    """Calls ``{addr}/v1/...`` with the token in ``X-Vault-Token`` (and ``X-Vault-Namespace``)."""

    def __init__(
        self,
        *,
        addr: str,
        token: SecretStr,
        namespace: str | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 5.0,
        retries: int = 3,
    ) -> None:
        if timeout <= 0 or not 0 <= retries <= 10:
            raise ValueError("timeout must be positive and retries in 0..10")
        self._token = token
        self._namespace = namespace
        self._timeout = timeout
        self._retries = retries
        # No redirects: a redirect could carry the token to another host.
        self._client = httpx.AsyncClient(
            base_url=addr, verify=verify, timeout=httpx.Timeout(timeout), follow_redirects=False
        )

    def __repr__(self) -> str:
        return f"TransitHttp(addr={str(self._client.base_url)!r}, namespace={self._namespace!r})"

    @property
    def max_seconds(self) -> float:
        """The longest a call can take: every attempt cut at the timeout, every wait at the cap."""
        return (self._retries + 1) * self._timeout + self._retries * _BACKOFF_CAP

    async def call(
        self, method: str, path: str, payload: dict[str, Any] | None = None, *, idempotent: bool = True
    ) -> Reply:
        """One API call. A non-``idempotent`` call (rotate) is retried only when the server cannot have
        acted on it: the connection failed, or it answered 503 or 429."""
        problem = "the KMS is unreachable"
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(_jitter.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)))
            try:
                async with asyncio.timeout(self._timeout):
                    response = await self._client.request(method, path, json=payload, headers=self._headers())
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                problem = "the KMS is unreachable"
                if _tls_failure(exc):
                    problem += " (its TLS certificate does not verify: check VAULT_TRANSIT_CA_FILE)"
                continue
            except (httpx.TransportError, TimeoutError):
                problem = "the KMS is unreachable (no answer in time)"
                if idempotent:
                    continue
                break  # it may have acted: do not do it twice
            reply = Reply(response.status_code, _json(response))
            if reply.status == 403:
                raise KeyUnavailable(
                    "the KMS refused the request (permission denied): check the token and its policy"
                )
            if reply.status == 503:
                problem = "the KMS is sealed" if reply.says("sealed") else "the KMS is unavailable (HTTP 503)"
                continue
            if reply.status == 429:
                problem = "the KMS is rate limiting requests (HTTP 429)"
                continue
            if reply.status >= 500:
                problem = f"the KMS failed (HTTP {reply.status})"
                if idempotent:
                    continue
                break
            if 300 <= reply.status < 400:
                raise KeyUnavailable(f"the KMS answered with a redirect (HTTP {reply.status})")
            return reply
        raise KeyUnavailable(problem)

    def _headers(self) -> dict[str, str]:
        headers = {"X-Vault-Token": self._token.get_secret_value(), "X-Vault-Request": "true"}
        if self._namespace is not None:
            headers["X-Vault-Namespace"] = self._namespace
        return headers

    async def aclose(self) -> None:
        await self._client.aclose()


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):  # httpx's error, httpcore's, then the ssl module's
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
