"""Batched lease decisions on PostgreSQL: one server-side call decides a whole batch of grants or releases.

``vault_grant_batch`` and ``vault_release_batch`` take one array per request field and return one row
per request. Each runs the same steps the vault's Python runs on SQLite (vault/store/_batch.py): peek
without a lock, then, in session-id order (the one lock order of every batch), lock the session row,
read the clock after the lock, decide, and write the lease. Each request runs in a subtransaction
(``BEGIN ... EXCEPTION``), so one request's failure undoes only its own rows; its row says ``error`` and
the SQLSTATE. The audit events are written by the vault in the same transaction (their MAC needs the
vault's key, which the database never holds). SQLite needs nothing here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_CLOCK = "coalesce(p_now_us, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT))"

# Why a lease may not be granted: NULL when it may. The stored session's own state first, then a lease
# that is still open on the given clock.
_REFUSAL = """
CREATE FUNCTION vault_lease_refusal(status text, expires_at timestamptz, lease_expires_us bigint,
                                    now_us bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN status IN ('revoked', 'superseded', 'shredded') THEN status
        WHEN expires_at IS NOT NULL AND EXTRACT(EPOCH FROM expires_at) * 1000000 <= now_us THEN 'expired'
        WHEN lease_expires_us IS NOT NULL AND lease_expires_us > now_us THEN 'held'
    END
$$
"""

_GRANT = """
CREATE FUNCTION vault_grant_batch(
    p_session_ids text[], p_user_ids text[], p_lease_ids text[], p_holders text[], p_purposes text[],
    p_ttls integer[], p_allow boolean[], p_now_us bigint
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
            SELECT x.id, x.user_id, x.version, x.dek_version, x.status, x.expires_at, x.ciphertext
                INTO s FROM sessions x WHERE x.id = r.sid FOR UPDATE;
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
    p_lease_ids text[], p_holders text[], p_fences bigint[], p_now_us bigint
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
            PERFORM 1 FROM sessions x WHERE x.id = r.sid FOR UPDATE;
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


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = bind.exec_driver_sql("SELECT quote_ident(current_schema())").scalar_one()
    op.execute(_REFUSAL)
    op.execute(_GRANT.format(schema=schema, clock=_CLOCK))
    op.execute(_RELEASE.format(schema=schema, clock=_CLOCK))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION vault_release_batch(text[], text[], bigint[], bigint)")
    op.execute(
        "DROP FUNCTION vault_grant_batch(text[], text[], text[], text[], text[], integer[], boolean[], bigint)"
    )
    op.execute("DROP FUNCTION vault_lease_refusal(text, timestamptz, bigint, bigint)")
