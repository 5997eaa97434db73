"""``session-vault``: run the vault, migrate its database, manage service credentials.

Every command that acts on the vault's state takes ``--data-dir DIR`` (a ``dev`` data directory);
without it, it reads the same ``VAULT_*`` environment as ``serve``. Errors print one line on stderr
(``error: CODE: DETAIL``) and exit 1; usage errors exit 2. No command prints a secret except
``token create``, which prints the new token alone on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vault.errors import ConfigError, VaultError
from vault.keys import create_keyring_file
from vault.service import Role, authenticate, create_token, list_tokens, revoke_token, utcnow
from vault.settings import Settings
from vault.store import Store, upgrade

__all__ = ["main"]

_DEV_WARNING = """\
*****************************************************************************
  SESSION VAULT DEV MODE: NOT FOR PRODUCTION.
  SQLite and a local keyring file in {dir}; sessions are validated offline
  only (the user id a session claims is trusted). Anyone who can read that
  directory can decrypt every stored session.
*****************************************************************************"""


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None:
        return Settings.for_data_dir(Path(data_dir), **overrides)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        names = sorted({str(err["loc"][0]) for err in getattr(exc, "errors", list)()}) or ["?"]
        raise ConfigError("invalid VAULT_* setting(s): " + ", ".join(names)) from None


async def _migrate(settings: Settings) -> None:
    store = Store.connect(settings.require_database_url(), pool_size=1)
    try:
        await upgrade(store.engine)
    finally:
        await store.close()


def _write_private(path: Path, data: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


async def _ensure_admin_token(settings: Settings, path: Path) -> bool:
    """Keep a working bootstrap admin token in ``path``; return True if a new one was written."""
    store = Store.connect(settings.require_database_url(), pool_size=1)
    try:
        if path.exists():
            try:
                await authenticate(store, path.read_text().strip(), role=Role.ADMIN, now=utcnow())
                return False
            except VaultError:
                pass  # stale (database reset or token revoked): issue a new one
        token, _ = await create_token(store, role=Role.ADMIN, name="bootstrap-admin", now=utcnow())
        _write_private(path, token + "\n")
        return True
    finally:
        await store.close()


def _cmd_dev(args: argparse.Namespace) -> None:
    from vault._server import serve_both

    os.umask(0o077)  # the database, keyring and token files are for this user only
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings = Settings.for_data_dir(
        data_dir, public_port=args.public_port, internal_port=args.internal_port, public_host=args.host,
        internal_host=args.host,
    )  # fmt: skip
    keyring = settings.require_keyring_file()
    if not keyring.exists():
        create_keyring_file(keyring)
    asyncio.run(_migrate(settings))
    token_path = data_dir / "admin.token"
    created = asyncio.run(_ensure_admin_token(settings, token_path))
    print(_DEV_WARNING.format(dir=data_dir), file=sys.stderr)
    print(
        f"admin token {'written to' if created else 'kept in'} {token_path} (mode 0600)\n"
        f"public ingest:  http://{args.host}:{args.public_port}/api/import-session\n"
        f"internal API:   http://{args.host}:{args.internal_port}/docs",
        file=sys.stderr,
    )
    asyncio.run(serve_both(settings, on_started=lambda: print("vault ready", file=sys.stderr, flush=True)))


def _cmd_serve(args: argparse.Namespace) -> None:
    from vault._server import serve_both

    settings = _settings(args)
    settings.check_production()
    asyncio.run(serve_both(settings))


def _cmd_db_upgrade(args: argparse.Namespace) -> None:
    settings = _settings(args)
    asyncio.run(_migrate(settings))
    print("database is at the newest schema", file=sys.stderr)


def _cmd_keyring_init(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if path.exists():
        raise ConfigError("the keyring file exists already; refusing to overwrite it")
    create_keyring_file(path)
    print(f"keyring written to {path} (mode 0600)", file=sys.stderr)


async def _with_store(settings: Settings) -> Store:
    return Store.connect(settings.require_database_url(), pool_size=1)


def _cmd_token_create(args: argparse.Namespace) -> None:
    async def run() -> str:
        store = await _with_store(_settings(args))
        try:
            token, _ = await create_token(
                store,
                role=Role(args.role),
                name=args.name,
                now=utcnow(),
                expires_in=args.expires_in,
                purposes=tuple(args.purpose) if args.purpose else None,
                max_ttl_seconds=args.max_ttl,
            )
            return token
        finally:
            await store.close()

    print(asyncio.run(run()))


def _cmd_token_list(args: argparse.Namespace) -> None:
    async def run() -> None:
        store = await _with_store(_settings(args))
        try:
            for info in await list_tokens(store):
                print(
                    json.dumps(
                        {
                            "id": info.id,
                            "name": info.name,
                            "role": info.role.value,
                            "purposes": info.purposes,
                            "max_ttl_seconds": info.max_ttl_seconds,
                            "created_at": info.created_at.isoformat(),
                            "expires_at": info.expires_at and info.expires_at.isoformat(),
                            "revoked_at": info.revoked_at and info.revoked_at.isoformat(),
                        }
                    )
                )
        finally:
            await store.close()

    asyncio.run(run())


def _cmd_token_revoke(args: argparse.Namespace) -> None:
    async def run() -> None:
        store = await _with_store(_settings(args))
        try:
            await revoke_token(store, args.token_id, now=utcnow())
        finally:
            await store.close()

    asyncio.run(run())
    print(f"token {args.token_id} revoked", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="session-vault", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", help="act on a `session-vault dev` data directory")
        return p

    dev = sub.add_parser("dev", help="run an embedded dev vault (SQLite, local keyring); not for production")
    dev.add_argument("--data-dir", default="./.vault-dev")
    dev.add_argument("--public-port", type=int, default=8080)
    dev.add_argument("--internal-port", type=int, default=8081)
    dev.add_argument("--host", default="127.0.0.1")
    dev.set_defaults(func=_cmd_dev)

    serve = sub.add_parser("serve", help="run the vault from VAULT_* environment settings")
    serve.set_defaults(func=_cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    with_data_dir(db.add_parser("upgrade", help="apply all migrations")).set_defaults(func=_cmd_db_upgrade)

    keyring = sub.add_parser("keyring", help="local keyring files").add_subparsers(
        dest="kr_command", required=True
    )
    init = keyring.add_parser("init", help="write a new keyring file (mode 0600)")
    init.add_argument("--file", required=True)
    init.set_defaults(func=_cmd_keyring_init)

    token = sub.add_parser("token", help="service credentials").add_subparsers(
        dest="token_command", required=True
    )
    create = with_data_dir(token.add_parser("create", help="create a token; prints it alone on stdout"))
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True)
    create.add_argument("--expires-in", type=int, metavar="SECONDS")
    create.add_argument(
        "--purpose", action="append", help="signer tokens: a purpose it may name (repeatable)"
    )
    create.add_argument("--max-ttl", type=int, metavar="SECONDS", help="signer tokens: the longest lease")
    create.set_defaults(func=_cmd_token_create)
    with_data_dir(token.add_parser("list", help="list tokens (never shows secrets)")).set_defaults(
        func=_cmd_token_list
    )
    revoke = with_data_dir(token.add_parser("revoke", help="revoke a token by id"))
    revoke.add_argument("token_id")
    revoke.set_defaults(func=_cmd_token_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except VaultError as exc:
        print(f"error: {exc.code}: {exc.detail}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
