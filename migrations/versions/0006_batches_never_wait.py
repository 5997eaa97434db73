"""A batch never waits on a row lock held elsewhere: ``vault_grant_batch`` and ``vault_release_batch`` take
``p_wait``.

With ``p_wait`` false (a batch) a request whose session row another transaction holds locked (a write-back, a key
rotation, an ingest superseding it, or anyone with the vault's role) is not waited for: its row says ``busy``
(``SELECT ... FOR UPDATE SKIP LOCKED`` found nothing, and sessions are never deleted), and the vault runs it again
alone, with ``p_wait`` true, which waits for the lock as before. Under 0005 the whole batch, and with it every grant
or release of the process queued behind it, waited for that one lock. Otherwise the functions are 0005's.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_CLOCK = "coalesce(p_now_us, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT))"
_OLD = (
    "vault_grant_batch(text[], text[], text[], text[], text[], integer[], boolean[], bigint)",
    "vault_release_batch(text[], text[], bigint[], bigint)",
)
_NEW = (
    "vault_grant_batch(text[], text[], text[], text[], text[], integer[], boolean[], bigint, boolean)",
    "vault_release_batch(text[], text[], bigint[], bigint, boolean)",
)

_GRANT = """
CREATE FUNCTION vault_grant_batch(
    p_session_ids text[], p_user_ids text[], p_lease_ids text[], p_holders text[], p_purposes text[],
    p_ttls integer[], p_allow boolean[], p_now_us bigint, p_wait boolean
) RETURNS TABLE (
    o_item integer, o_outcome text, o_at_us bigint, o_session_id text, o_user_id text,
    o_session_version integer, o_dek_version integer, o_ciphertext bytea, o_fencing_token bigint,
    o_retry_after bigint, o_ended_lease_id text, o_ended_fence bigint, o_sqlstate text
)
LANGUAGE plpgsql
SET search_path = {schema}, pg_temp
AS $$
DECLARE
    r record;
    s record;
    cur record;
    t bigint;
    why text;
    fence bigint;
BEGIN
    FOR r IN
        SELECT i, p.id AS sid, p.user_id AS uid, p.status, p.expires_at, l.expires_us AS lease_expires_us
        FROM generate_subscripts(p_lease_ids, 1) AS i
        LEFT JOIN LATERAL (
            (SELECT x.id, x.user_id, x.status, x.expires_at FROM sessions x WHERE x.id = p_session_ids[i])
            UNION ALL
            (SELECT x.id, x.user_id, x.status, x.expires_at FROM sessions x WHERE x.user_id = p_user_ids[i]
             ORDER BY (x.status = 'active') DESC, x.created_at DESC LIMIT 1)
            LIMIT 1
        ) AS p ON true
        LEFT JOIN leases l ON l.session_id = p.id AND l.ended_us IS NULL
        ORDER BY p.id NULLS FIRST, i
    LOOP
        IF r.sid IS NULL THEN
            RETURN QUERY SELECT r.i, 'no_session', NULL::bigint, p_session_ids[r.i], p_user_ids[r.i],
                NULL::integer, NULL::integer, NULL::bytea, NULL::bigint, NULL::bigint, NULL::text,
                NULL::bigint, NULL::text;
            CONTINUE;
        END IF;
        t := {clock};
        why := vault_lease_refusal(r.status, r.expires_at, r.lease_expires_us, t);
        IF why IS NOT NULL THEN  -- refused on what the peek saw: no lock taken, nothing queues
            RETURN QUERY SELECT r.i, why, t, CAST(r.sid AS text), CAST(r.uid AS text), NULL::integer, NULL::integer, NULL::bytea,
                NULL::bigint, (r.lease_expires_us - t + 999999) / 1000000, NULL::text, NULL::bigint,
                NULL::text;
            CONTINUE;
        END IF;
        BEGIN
            IF p_wait THEN
                SELECT x.id, x.user_id, x.version, x.dek_version, x.status, x.expires_at, x.ciphertext
                    INTO s FROM sessions x WHERE x.id = r.sid FOR UPDATE;
            ELSE  -- a batch never waits for a lock another transaction holds: that request goes alone
                SELECT x.id, x.user_id, x.version, x.dek_version, x.status, x.expires_at, x.ciphertext
                    INTO s FROM sessions x WHERE x.id = r.sid FOR UPDATE SKIP LOCKED;
                IF NOT FOUND THEN  -- sessions are never deleted: the row is locked elsewhere
                    RETURN QUERY SELECT r.i, 'busy', NULL::bigint, CAST(r.sid AS text), CAST(r.uid AS text),
                        NULL::integer, NULL::integer, NULL::bytea, NULL::bigint, NULL::bigint, NULL::text,
                        NULL::bigint, NULL::text;
                    CONTINUE;
                END IF;
            END IF;
            t := {clock};  -- read after the lock is held, never while waiting for it
            SELECT l.id, l.fencing_token, l.expires_us INTO cur
                FROM leases l WHERE l.session_id = r.sid AND l.ended_us IS NULL;
            why := vault_lease_refusal(s.status, s.expires_at, cur.expires_us, t);
            IF why IS NOT NULL THEN
                RETURN QUERY SELECT r.i, why, t, CAST(s.id AS text), CAST(s.user_id AS text), NULL::integer, NULL::integer,
                    NULL::bytea, NULL::bigint, (cur.expires_us - t + 999999) / 1000000, NULL::text,
                    NULL::bigint, NULL::text;
                CONTINUE;
            END IF;
            IF cur.id IS NOT NULL THEN  -- an expired lease still open: end it (a takeover)
                UPDATE leases SET ended_us = t, end_reason = 'expired' WHERE id = cur.id;
            END IF;
            INSERT INTO leases (id, session_id, user_id, session_version, holder_token_id, purpose,
                                ttl_seconds, granted_us, expires_us, allow_wallet_changes, fencing_token)
                SELECT p_lease_ids[r.i], s.id, s.user_id, s.version, p_holders[r.i], p_purposes[r.i],
                       p_ttls[r.i], t, t + p_ttls[r.i] * CAST(1000000 AS BIGINT), p_allow[r.i],
                       coalesce(max(l.fencing_token), 0) + 1
                FROM leases l WHERE l.session_id = s.id
                RETURNING fencing_token INTO fence;
            RETURN QUERY SELECT r.i, 'granted', t, CAST(s.id AS text), CAST(s.user_id AS text), s.version,
                s.dek_version, s.ciphertext, fence, NULL::bigint, CAST(cur.id AS text), cur.fencing_token,
                NULL::text;
        EXCEPTION WHEN OTHERS THEN  -- this request's rows are undone; the batch goes on
            RETURN QUERY SELECT r.i, 'error', NULL::bigint, CAST(r.sid AS text), NULL::text, NULL::integer,
                NULL::integer, NULL::bytea, NULL::bigint, NULL::bigint, NULL::text, NULL::bigint,
                CAST(SQLSTATE AS text);
        END;
    END LOOP;
END
$$
"""

_RELEASE = """
CREATE FUNCTION vault_release_batch(
    p_lease_ids text[], p_holders text[], p_fences bigint[], p_now_us bigint, p_wait boolean
) RETURNS TABLE (
    o_item integer, o_outcome text, o_at_us bigint, o_session_id text, o_user_id text,
    o_fencing_token bigint, o_purpose text, o_sqlstate text
)
LANGUAGE plpgsql
SET search_path = {schema}, pg_temp
AS $$
DECLARE
    r record;
    l record;
    t bigint;
BEGIN
    FOR r IN
        SELECT i, x.session_id AS sid
        FROM generate_subscripts(p_lease_ids, 1) AS i
        LEFT JOIN leases x ON x.id = p_lease_ids[i]
        ORDER BY x.session_id NULLS FIRST, i
    LOOP
        IF r.sid IS NULL THEN
            RETURN QUERY SELECT r.i, 'no_lease', NULL::bigint, NULL::text, NULL::text, NULL::bigint,
                NULL::text, NULL::text;
            CONTINUE;
        END IF;
        BEGIN
            IF p_wait THEN
                PERFORM 1 FROM sessions x WHERE x.id = r.sid FOR UPDATE;
            ELSE  -- a batch never waits for a lock another transaction holds: that request goes alone
                PERFORM 1 FROM sessions x WHERE x.id = r.sid FOR UPDATE SKIP LOCKED;
                IF NOT FOUND THEN
                    RETURN QUERY SELECT r.i, 'busy', NULL::bigint, CAST(r.sid AS text), NULL::text,
                        NULL::bigint, NULL::text, NULL::text;
                    CONTINUE;
                END IF;
            END IF;
            t := {clock};  -- read after the lock is held
            SELECT x.* INTO l FROM leases x WHERE x.id = p_lease_ids[r.i];
            IF l.holder_token_id = p_holders[r.i] AND l.ended_us IS NULL AND l.expires_us > t
               AND l.fencing_token = p_fences[r.i] THEN
                UPDATE leases SET ended_us = t, end_reason = 'released' WHERE id = l.id;
            END IF;
            RETURN QUERY SELECT r.i,  -- after the update: a failed update returns only its 'error' row
                CASE
                    WHEN l.holder_token_id <> p_holders[r.i] THEN 'not_holder'
                    WHEN l.end_reason = 'shredded' THEN 'shredded'
                    WHEN l.ended_us IS NOT NULL OR l.expires_us <= t OR l.fencing_token <> p_fences[r.i]
                        THEN 'lost'
                    ELSE 'released'
                END,
                t, CAST(l.session_id AS text), CAST(l.user_id AS text), l.fencing_token, CAST(l.purpose AS text),
                NULL::text;
        EXCEPTION WHEN OTHERS THEN
            RETURN QUERY SELECT r.i, 'error', NULL::bigint, CAST(r.sid AS text), NULL::text, NULL::bigint, NULL::text,
                CAST(SQLSTATE AS text);
        END;
    END LOOP;
END
$$
"""


def _schema() -> str:
    return str(op.get_bind().exec_driver_sql("SELECT quote_ident(current_schema())").scalar_one())


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = _schema()
    for old in _OLD:
        op.execute(f"DROP FUNCTION {old}")
    op.execute(_GRANT.format(schema=schema, clock=_CLOCK))
    op.execute(_RELEASE.format(schema=schema, clock=_CLOCK))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for new in _NEW:
        op.execute(f"DROP FUNCTION {new}")
    spec = importlib.util.spec_from_file_location("m0005", Path(__file__).with_name("0005_batched_leases.py"))
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    schema = _schema()
    op.execute(previous._GRANT.format(schema=schema, clock=_CLOCK))
    op.execute(previous._RELEASE.format(schema=schema, clock=_CLOCK))
