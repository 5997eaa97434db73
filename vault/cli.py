"""``session-vault``: run the vault, migrate its database, manage service credentials and keys.

Every command that acts on the vault's state takes ``--data-dir DIR`` (a ``dev`` data directory);
without it, it reads the same ``VAULT_*`` environment as ``serve``. Errors print one line on stderr
(``error: CODE: DETAIL``) and exit 1; usage errors exit 2. No command prints a secret except
``token create``, which prints the new token alone on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TextIO

from vault._cli_keys import add_key_commands
from vault.audit import PublicKey, Report, verify
from vault.errors import ConfigError, VaultError
from vault.keys import create_audit_keys_file, create_keyring_file, load_audit_keys_file, write_private
from vault.service import (
    Auditor,
    Context,
    Role,
    adopt_chain,
    authenticate,
    create_token,
    export_lines,
    list_tokens,
    parse_export,
    revoke_token,
    utcnow,
    verify_live,
)
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
        os.umask(0o077)  # whatever this creates in a data directory is for this user only
        settings = Settings.for_data_dir(Path(data_dir), **overrides)
        _ensure_dev_keys(settings)
        return settings
    return Settings.load(**overrides)


_CLI = Context(source="cli")


def _ensure_dev_keys(settings: Settings) -> None:
    """A dev data directory makes its own keys (keyring, audit keys) the first time they are needed."""
    keyring = settings.require_keyring_file()
    if not keyring.exists():
        create_keyring_file(keyring)
    audit_keys = settings.require_audit_keys_file()
    if not audit_keys.exists():
        create_audit_keys_file(audit_keys)


def _operator() -> str:
    """Who runs the CLI, for the audit log's ``actor_name`` (``cli:<login>``)."""
    try:
        return f"cli:{getpass.getuser()}"[:128]
    except (KeyError, OSError):  # no login name in this environment (a bare container)
        return "cli"


@contextlib.asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[tuple[Store, Auditor]]:
    """The store and the auditor, for commands that act on the vault's state."""
    auditor = Auditor(load_audit_keys_file(settings.require_audit_keys_file()), actor_name=_operator())
    store = Store.connect(settings.require_database_url(), pool_size=1)
    try:
        yield store, auditor
    finally:
        await store.close()


async def _migrate(settings: Settings) -> None:
    store = Store.connect(settings.require_database_url(), pool_size=1)
    try:
        await upgrade(store.engine)
    finally:
        await store.close()


async def _ensure_admin_token(settings: Settings, path: Path) -> bool:
    """Keep a working bootstrap admin token in ``path``; return True if a new one was written."""
    async with _opened(settings) as (store, auditor):
        if path.exists():
            try:
                await authenticate(
                    store, auditor.keys, path.read_text().strip(), role=Role.ADMIN, now=utcnow()
                )
                return False
            except VaultError:
                pass  # stale (database reset or token revoked): issue a new one
        token, _ = await create_token(
            store, auditor, _CLI, role=Role.ADMIN, name="bootstrap-admin", now=utcnow()
        )
        write_private(path, (token + "\n").encode(), replace=True)
        return True


def _cmd_dev(args: argparse.Namespace) -> None:
    from vault._workers import serve as run

    os.umask(0o077)  # the database, keyring and token files are for this user only
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(data_dir.stat().st_mode) & 0o077:
        data_dir.chmod(0o700)  # an existing directory others could read: it holds the keys
        print(f"{data_dir} was readable by others; it is now mode 0700", file=sys.stderr)
    settings = Settings.for_data_dir(
        data_dir, public_port=args.public_port, internal_port=args.internal_port, public_host=args.host,
        internal_host=args.host,
    )  # fmt: skip
    _ensure_dev_keys(settings)
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
    run(settings, on_started=lambda: print("vault ready", file=sys.stderr, flush=True))


def _cmd_serve(args: argparse.Namespace) -> None:
    from vault._workers import serve as run

    settings = _settings(args) if args.workers is None else _settings(args, workers=args.workers)
    settings.check_production()
    run(settings)


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


def _cmd_token_create(args: argparse.Namespace) -> None:
    async def run() -> str:
        async with _opened(_settings(args)) as (store, auditor):
            token, _ = await create_token(
                store,
                auditor,
                _CLI,
                role=Role(args.role),
                name=args.name,
                now=utcnow(),
                expires_in=args.expires_in,
                purposes=tuple(args.purpose) if args.purpose else None,
                max_ttl_seconds=args.max_ttl,
            )
            return token

    print(asyncio.run(run()))


def _cmd_token_list(args: argparse.Namespace) -> None:
    async def run() -> None:
        async with _opened(_settings(args)) as (store, _auditor):
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

    asyncio.run(run())


def _cmd_token_revoke(args: argparse.Namespace) -> None:
    async def run() -> None:
        async with _opened(_settings(args)) as (store, auditor):
            await revoke_token(store, auditor, _CLI, args.token_id, now=utcnow())

    asyncio.run(run())
    print(f"token {args.token_id} revoked", file=sys.stderr)


def _cmd_audit_keys_init(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if path.exists():
        raise ConfigError("the audit keys file exists already; refusing to overwrite it")
    create_audit_keys_file(path)
    print(f"audit keys written to {path} (mode 0600)", file=sys.stderr)


def _cmd_audit_export(args: argparse.Namespace) -> None:
    async def run(out: TextIO) -> None:
        async with _opened(_settings(args)) as (store, auditor):
            async for line in export_lines(store, auditor, _CLI):
                out.write(line + "\n")

    if args.out in (None, "-"):
        asyncio.run(run(sys.stdout))
        return
    try:  # the export names users, sessions and token ids: for its owner only, like the key files
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as out:
        asyncio.run(run(out))


def _cmd_audit_verify(args: argparse.Namespace) -> None:
    try:
        pinned = None if args.public_key is None else PublicKey.from_pem(Path(args.public_key).read_bytes())
        if args.file is not None:
            with open(args.file) as fh:
                events, checkpoints, embedded = parse_export(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if args.file is not None:
        key = pinned or embedded
        if key is None:
            raise ConfigError("the export has no public key; pass --public-key")
        if pinned is None:
            print(
                "warning: using the public key inside the export; pass --public-key to pin it",
                file=sys.stderr,
            )
        skew = int(args.max_skew * 1_000_000)
        report = verify(events, checkpoints, key, now_us=time.time_ns() // 1000, max_skew_us=skew)
    else:

        async def run() -> Report:
            async with _opened(_settings(args)) as (store, auditor):
                key = pinned or auditor.keys.public_key
                return await verify_live(
                    store, auditor, _CLI, key, max_skew_us=int(args.max_skew * 1_000_000)
                )

        report = asyncio.run(run())
    summary = (
        f"{report.events} events ({report.sealed} sealed), {report.checkpoints} checkpoints, "
        f"{report.uncovered} events after the last checkpoint"
    )
    if report.problem is not None:
        print(f"FAIL: {report.problem}", file=sys.stderr)
        print(summary, file=sys.stderr)
        sys.exit(3)
    print(f"ok: {summary}")


def _cmd_audit_adopt_chain(args: argparse.Namespace) -> None:
    async def run() -> Report:
        async with _opened(_settings(args)) as (store, auditor):
            return await adopt_chain(store, auditor, _CLI, auditor.keys.public_key)

    report = asyncio.run(run())
    if report.problem is not None:
        print(f"FAIL: {report.problem}; the chain row was left as it was", file=sys.stderr)
        sys.exit(3)
    print(f"ok: the log verifies ({report.events} events); the audit_chain row is now authenticated")


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
    serve.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="processes serving both listeners (default: VAULT_WORKERS, else one per core; 1 on SQLite)",
    )  # fmt: skip
    serve.set_defaults(func=_cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    with_data_dir(db.add_parser("upgrade", help="apply all migrations")).set_defaults(func=_cmd_db_upgrade)

    keyring = sub.add_parser("keyring", help="local keyring files").add_subparsers(
        dest="kr_command", required=True
    )
    init = keyring.add_parser("init", help="write a new keyring file (mode 0600)")
    init.add_argument("--file", required=True)
    init.set_defaults(func=_cmd_keyring_init)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="audit_command", required=True)
    keys = audit.add_parser("keys", help="audit keys").add_subparsers(dest="keys_command", required=True)
    keys_init = keys.add_parser(
        "init", help="write new audit keys (checkpoint signing and HMAC keys, mode 0600)"
    )
    keys_init.add_argument("--file", required=True)
    keys_init.set_defaults(func=_cmd_audit_keys_init)
    export = with_data_dir(audit.add_parser("export", help="export events and checkpoints as JSON lines"))
    export.add_argument("--out", help="a file (default: stdout)")
    export.set_defaults(func=_cmd_audit_export)
    check = with_data_dir(
        audit.add_parser("verify", help="verify an export (--file) or the live log; exit 3 on failure")
    )
    check.add_argument("--file", help="an export made by `audit export` (default: the live database)")
    check.add_argument("--public-key", help="the checkpoint public key (PEM) to verify against")
    check.add_argument(
        "--max-skew",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="flag events dated more than this after this machine's clock (default 300)",
    )
    check.set_defaults(func=_cmd_audit_verify)
    adopt = with_data_dir(
        audit.add_parser(
            "adopt-chain",
            help="once, after upgrading a log from before schema 0004: verify it, then authenticate its "
            "chain row so sealing resumes; exit 3 if the log does not verify",
        )
    )
    adopt.set_defaults(func=_cmd_audit_adopt_chain)

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
    add_key_commands(sub, with_data_dir, _settings, _CLI, _operator)
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
