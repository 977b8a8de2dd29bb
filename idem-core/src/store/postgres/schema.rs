//! The table, its index and the transaction-mode claim function: names and DDL.

use std::fmt;

use crate::error::Error;

/// The default table name.
pub(crate) const DEFAULT_TABLE: &str = "idem_records";

/// The longest table name: the index and function names add a suffix, and PostgreSQL
/// truncates identifiers past 63 bytes.
const MAX_NAME: usize = 48;

/// A checked table name (`name` or `schema.name`) and the quoted names derived from it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Table {
    name: String,
    /// The schema as given, if any (else the connection's `current_schema()`).
    schema: Option<String>,
    /// The table's own name, without the schema.
    bare: String,
    /// `"schema"."name"` or `"name"`.
    pub(crate) quoted: String,
    /// The `expires_at` index (in the table's schema).
    pub(crate) index: String,
    /// The transaction-mode claim function, qualified like the table.
    pub(crate) claim_fn: String,
}

impl Table {
    /// Checks `name`: one or two dot-separated identifiers of ASCII letters, digits and `_`,
    /// not starting with a digit, at most 48 bytes each.
    pub(crate) fn new(name: &str) -> Result<Table, Error> {
        let parts: Vec<&str> = name.split('.').collect();
        let valid = |part: &&str| {
            !part.is_empty()
                && part.len() <= MAX_NAME
                && !part.starts_with(|c: char| c.is_ascii_digit())
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if parts.len() > 2 || !parts.iter().all(valid) {
            return Err(Error::store(format!(
                "invalid idem table name {name:?}: use `name` or `schema.name`, each of ASCII letters, digits and `_` (at most {MAX_NAME} bytes)"
            )));
        }
        let table = parts[parts.len() - 1];
        let schema = if parts.len() == 2 {
            format!("\"{}\".", parts[0])
        } else {
            String::new()
        };
        Ok(Table {
            name: name.to_string(),
            schema: (parts.len() == 2).then(|| parts[0].to_string()),
            bare: table.to_string(),
            quoted: format!("{schema}\"{table}\""),
            index: format!("\"{table}_expires_at\""),
            claim_fn: format!("{schema}\"{table}_claim\""),
        })
    }

    /// The name as given.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The DDL that creates the table, its index and the claim function if absent (the
    /// function is replaced, so an upgrade installs its new body).
    pub(crate) fn ddl(&self) -> String {
        let Table {
            quoted,
            index,
            claim_fn,
            ..
        } = self;
        format!(
            r#"CREATE TABLE IF NOT EXISTS {quoted} (
    key         bytea       PRIMARY KEY,
    version     smallint    NOT NULL,
    fingerprint bytea       NOT NULL,
    token       bytea       NOT NULL,
    value       bytea,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS {index} ON {quoted} (expires_at);
CREATE OR REPLACE FUNCTION {claim_fn}(
    p_key bytea, p_version smallint, p_fingerprint bytea, p_lease_ms bigint, p_wait_ms bigint
) RETURNS TABLE (o_state text, o_token bytea, o_version smallint, o_fingerprint bytea, o_value bytea)
LANGUAGE plpgsql VOLATILE
SET lock_timeout = 0
AS $idem$
DECLARE
    v_token bytea := uuid_send(gen_random_uuid());
    v_taken boolean;
    v_statement_ms bigint := (SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout');
    v_deadline timestamptz;
    v_slice_ms bigint;
BEGIN
    -- A committed live record: replayed without a write or a lock.
    RETURN QUERY SELECT 'completed'::text, r.token, r.version, r.fingerprint, r.value
        FROM {quoted} AS r
        WHERE r.key = p_key AND r.value IS NOT NULL AND r.expires_at > clock_timestamp();
    IF FOUND THEN
        RETURN;
    END IF;
    -- The caller's statement_timeout cancels this statement and aborts the caller's
    -- transaction (query_canceled cannot be caught): wait here at most half of it, and let
    -- the client call again until its `wait` is over.
    IF v_statement_ms > 0 THEN
        p_wait_ms := least(p_wait_ms, greatest(v_statement_ms / 2, 1));
    END IF;
    v_deadline := clock_timestamp() + p_wait_ms * interval '1 millisecond';
    LOOP
        -- One lock wait restarts its timer whenever the holder changes (one rolled back,
        -- the next claimed): short waits, each within what is left, keep the deadline.
        v_slice_ms := greatest(1, least(100,
            ceil(extract(epoch FROM v_deadline - clock_timestamp()) * 1000)::bigint));
        -- Local to this function: the SET clause above restores the caller's value on exit.
        PERFORM set_config('lock_timeout', v_slice_ms || 'ms', true);
        BEGIN
            -- Waits while another transaction holds an uncommitted claim on the key.
            INSERT INTO {quoted} (key, version, fingerprint, token, value, expires_at)
            VALUES (p_key, p_version, p_fingerprint, v_token, NULL,
                    clock_timestamp() + p_lease_ms * interval '1 millisecond')
            ON CONFLICT (key) DO NOTHING;
            IF FOUND THEN
                RETURN QUERY SELECT 'claimed'::text, v_token, p_version, p_fingerprint, NULL::bytea;
                RETURN;
            END IF;
            -- An expired record or a lapsed claim is taken over; a live row is not locked.
            UPDATE {quoted} AS r
            SET version = p_version, fingerprint = p_fingerprint, token = v_token, value = NULL,
                expires_at = clock_timestamp() + p_lease_ms * interval '1 millisecond'
            FROM (SELECT o.value IS NULL AS was_claim FROM {quoted} AS o WHERE o.key = p_key) AS old
            WHERE r.key = p_key AND r.expires_at <= clock_timestamp()
            RETURNING old.was_claim INTO v_taken;
            IF FOUND THEN
                RETURN QUERY SELECT CASE WHEN v_taken THEN 'taken_over' ELSE 'claimed' END,
                    v_token, p_version, p_fingerprint, NULL::bytea;
                RETURN;
            END IF;
            EXIT;
        EXCEPTION
            WHEN lock_not_available THEN
                IF clock_timestamp() >= v_deadline THEN
                    RETURN QUERY SELECT 'busy'::text, NULL::bytea, NULL::smallint, NULL::bytea, NULL::bytea;
                    RETURN;
                END IF;
            -- Any other failure is reported, not raised, so the caller's transaction goes on.
            WHEN OTHERS THEN
                RETURN QUERY SELECT 'error'::text, convert_to(SQLSTATE, 'UTF8'), NULL::smallint,
                    NULL::bytea, convert_to(SQLERRM, 'UTF8');
                RETURN;
        END;
    END LOOP;
    -- A new snapshot (READ COMMITTED): sees what the transaction we waited for committed.
    -- A record found only now was committed while this call ran: it waited for it.
    RETURN QUERY
        SELECT CASE WHEN r.value IS NOT NULL AND r.expires_at > clock_timestamp()
                    THEN 'waited' ELSE 'in_progress' END,
               r.token, r.version, r.fingerprint, r.value
        FROM {quoted} AS r WHERE r.key = p_key;
END
$idem$;
"#
        )
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Creates the table, index and function if absent, under a transaction-scoped advisory
/// lock: concurrent `CREATE .. IF NOT EXISTS` and `CREATE OR REPLACE FUNCTION` from several
/// processes starting at once would otherwise fail on the catalog's unique indexes.
pub(crate) async fn ensure(pool: &sqlx::PgPool, table: &Table) -> Result<(), sqlx::Error> {
    use sqlx::Connection;

    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // Keyed on the resolved name: `idem_x` and `public.idem_x` are one table, and their
    // DDL must not run at once either.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(
            'idem.schema ' || coalesce($1, current_schema(), '') || '.' || $2, 0))",
    )
    .bind(table.schema.as_deref())
    .bind(&table.bare)
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(table.ddl()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Whether the table has an index on `expires_at` (the purge's). `CREATE INDEX IF NOT
/// EXISTS` silently does nothing when any relation already has the index's name
/// (`<table>_expires_at`).
pub(crate) async fn has_expiry_index(
    pool: &sqlx::PgPool,
    table: &Table,
) -> Result<bool, sqlx::Error> {
    let row: (bool,) = sqlx::query_as(
        "SELECT EXISTS (
            SELECT 1 FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = to_regclass($1) AND a.attname = 'expires_at')",
    )
    .bind(&table.quoted)
    .fetch_one(pool)
    .await?;
    Ok(row.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_quoted() {
        let table = Table::new("idem_records").unwrap();
        assert_eq!(table.quoted, "\"idem_records\"");
        assert_eq!(table.claim_fn, "\"idem_records_claim\"");
        let qualified = Table::new("billing.Idem_2").unwrap();
        assert_eq!(qualified.quoted, "\"billing\".\"Idem_2\"");
        assert_eq!(qualified.index, "\"Idem_2_expires_at\"");
        assert_eq!(qualified.claim_fn, "\"billing\".\"Idem_2_claim\"");
        for bad in [
            "",
            "a.b.c",
            "x\"; DROP TABLE t; --",
            "1abc",
            "has space",
            "a.",
            &"x".repeat(49),
        ] {
            assert!(matches!(Table::new(bad), Err(Error::Store(_))), "{bad:?}");
        }
    }
}
