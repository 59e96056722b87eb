//! The credential, order, MPPS and patient change records on PostgreSQL,
//! in the database of the PostgreSQL index ([`PgIndex`]), so that every
//! node sharing that index also shares its users, tokens, share links,
//! partner grants, worklist orders, MPPS and patient updates and merges.
//!
//! Tables (schema version 2, see [`crate::pg_index::MIGRATIONS`]):
//! `users` (name), `tokens` and `shares` (id, and the SHA-256 of the secret
//! as a unique column), `grants` (id), `orders` (id; accession number and
//! SPS ID as a unique pair; start date, time and creation for the listing
//! order) and `mpps` (SOP Instance UID). Version 4 added the patient
//! changes: `patient_changes` (the history, append-only; `id` from the
//! database, increasing in commit order; the original and surviving
//! patient keys as indexed columns for the history of one patient) and
//! `patient_coercions` (original patient key). Version 10 added
//! `mpps_accessions` (accession number, MPPS SOP Instance UID: one row per
//! accession number an MPPS's steps name, written with the record in one
//! transaction). Key columns are `bytea` of the
//! UTF-8 text: byte order, as sled sorts, and no trouble with NUL. The
//! record itself is the `rec` column, in the very bytes the sled store
//! writes (a format version byte, then bincode; [`crate::format`]), so a
//! record of an unknown version is refused, never misread.
//!
//! Uniqueness is the database's: a second insert of a taken key (from this
//! node or another) finds the row there and is refused. Changes that read
//! then write (revoking a token, replacing an order, moving its status)
//! take the row with `SELECT … FOR UPDATE` in one transaction. Every write
//! is durable when its commit returns (`synchronous_commit = on`).
//!
//! Like the rest of the index, every SQL text is a constant; values travel
//! as parameters. `Index::clear` (reindex) leaves these tables alone.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use pacs_core::credentials::{
    Credentials, GrantRecord, ShareChange, ShareRecord, TokenRecord, UserRecord,
};
use pacs_core::mpps::{MppsRecord, MppsStore};
use pacs_core::orders::{OrderError, OrderFilter, OrderRecord, OrderStatus, OrderStore};
use pacs_core::patients::{PatientChange, PatientCoercion, PatientKey, PatientStore};
use pacs_core::ports::PortError;
use tokio_postgres::error::SqlState;

use crate::credentials::{
    decode_grant, decode_share, decode_token, decode_user, encode_grant, encode_share,
    encode_token, encode_user,
};
use crate::patients::{
    decode_change, decode_coercion, encode_change, encode_coercion, key_bytes, key_of,
};
use crate::pg_index::{execute, pg_err, pool_err, query, query_opt, PgIndex};
use crate::workflow::{decode_mpps, encode_mpps};

impl PgIndex {
    /// The users, tokens, share links and partner grants of this database.
    pub fn credentials(&self) -> PgCredentials {
        PgCredentials {
            pool: self.pool.clone(),
        }
    }

    /// The worklist orders of this database.
    pub fn orders(&self) -> PgOrders {
        PgOrders {
            pool: self.pool.clone(),
        }
    }

    /// The MPPS records of this database.
    pub fn mpps(&self) -> PgMpps {
        PgMpps {
            pool: self.pool.clone(),
        }
    }

    /// The patient changes and coercions of this database.
    pub fn patients(&self) -> PgPatients {
        PgPatients {
            pool: self.pool.clone(),
        }
    }
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, PortError> {
    pool.get().await.map_err(pool_err)
}

/// Every row's `rec` of `sql` (no parameters), decoded.
async fn all<T>(
    pool: &Pool,
    sql: &str,
    decode: fn(&[u8]) -> Result<T, PortError>,
) -> Result<Vec<T>, PortError> {
    let c = client(pool).await?;
    let rows = query(&c, sql, &[]).await.map_err(pg_err)?;
    rows.iter().map(|r| decode(r.get(0))).collect()
}

/// The `rec` of the one row of `sql` with parameter `key`, decoded.
async fn one<T>(
    pool: &Pool,
    sql: &str,
    key: &[u8],
    decode: fn(&[u8]) -> Result<T, PortError>,
) -> Result<Option<T>, PortError> {
    let c = client(pool).await?;
    match query_opt(&c, sql, &[&key]).await.map_err(pg_err)? {
        Some(r) => decode(r.get(0)).map(Some),
        None => Ok(None),
    }
}

/// Runs `sql` with `params`; whether it touched a row.
async fn changed(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<bool, PortError> {
    let c = client(pool).await?;
    Ok(execute(&c, sql, params).await.map_err(pg_err)? > 0)
}

/// Users, tokens, shares and grants on PostgreSQL.
#[derive(Clone)]
pub struct PgCredentials {
    pool: Pool,
}

#[async_trait]
impl Credentials for PgCredentials {
    async fn user(&self, name: &str) -> Result<Option<UserRecord>, PortError> {
        one(
            &self.pool,
            "SELECT rec FROM users WHERE name = $1",
            name.as_bytes(),
            decode_user,
        )
        .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, PortError> {
        all(
            &self.pool,
            "SELECT rec FROM users ORDER BY name",
            decode_user,
        )
        .await
    }

    async fn insert_user(&self, user: UserRecord) -> Result<bool, PortError> {
        let rec = encode_user(&user)?;
        changed(
            &self.pool,
            "INSERT INTO users (name, rec) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&user.name.as_bytes(), &rec],
        )
        .await
    }

    async fn update_user(&self, user: UserRecord) -> Result<bool, PortError> {
        let rec = encode_user(&user)?;
        changed(
            &self.pool,
            "UPDATE users SET rec = $2 WHERE name = $1",
            &[&user.name.as_bytes(), &rec],
        )
        .await
    }

    async fn remove_user(&self, name: &str) -> Result<bool, PortError> {
        changed(
            &self.pool,
            "DELETE FROM users WHERE name = $1",
            &[&name.as_bytes()],
        )
        .await
    }

    async fn insert_token(&self, token: TokenRecord) -> Result<bool, PortError> {
        let rec = encode_token(&token)?;
        changed(
            &self.pool,
            "INSERT INTO tokens (id, secret_sha256, rec) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&token.id.as_bytes(), &token.secret_sha256.as_slice(), &rec],
        )
        .await
    }

    async fn token_by_secret(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, PortError> {
        one(
            &self.pool,
            "SELECT rec FROM tokens WHERE secret_sha256 = $1",
            sha256,
            decode_token,
        )
        .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, PortError> {
        all(
            &self.pool,
            "SELECT rec FROM tokens ORDER BY id",
            decode_token,
        )
        .await
    }

    async fn revoke_token(&self, id: &str, at: u64) -> Result<bool, PortError> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let Some(row) = query_opt(
            &tx,
            "SELECT rec FROM tokens WHERE id = $1 FOR UPDATE",
            &[&id.as_bytes()],
        )
        .await
        .map_err(pg_err)?
        else {
            return Ok(false);
        };
        let mut token = decode_token(row.get(0))?;
        if token.revoked.is_none() {
            token.revoked = Some(at);
            execute(
                &tx,
                "UPDATE tokens SET rec = $2 WHERE id = $1",
                &[&id.as_bytes(), &encode_token(&token)?],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
    }

    async fn insert_share(&self, share: ShareRecord) -> Result<bool, PortError> {
        let rec = encode_share(&share)?;
        changed(
            &self.pool,
            "INSERT INTO shares (id, secret_sha256, rec) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&share.id.as_bytes(), &share.secret_sha256.as_slice(), &rec],
        )
        .await
    }

    async fn share_by_secret(&self, sha256: &[u8; 32]) -> Result<Option<ShareRecord>, PortError> {
        one(
            &self.pool,
            "SELECT rec FROM shares WHERE secret_sha256 = $1",
            sha256,
            decode_share,
        )
        .await
    }

    async fn shares(&self) -> Result<Vec<ShareRecord>, PortError> {
        all(
            &self.pool,
            "SELECT rec FROM shares ORDER BY id",
            decode_share,
        )
        .await
    }

    async fn share(&self, id: &str) -> Result<Option<ShareRecord>, PortError> {
        one(
            &self.pool,
            "SELECT rec FROM shares WHERE id = $1",
            id.as_bytes(),
            decode_share,
        )
        .await
    }

    async fn shares_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ShareRecord>, PortError> {
        let after = after.unwrap_or("").as_bytes();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let c = client(&self.pool).await?;
        let rows = query(
            &c,
            "SELECT rec FROM shares WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &limit],
        )
        .await
        .map_err(pg_err)?;
        rows.iter().map(|r| decode_share(r.get(0))).collect()
    }

    async fn update_share(&self, share: ShareRecord) -> Result<bool, PortError> {
        // The secret never changes: the row keeps the one it was made with.
        let rec = encode_share(&share)?;
        changed(
            &self.pool,
            "UPDATE shares SET rec = $2 WHERE id = $1",
            &[&share.id.as_bytes(), &rec],
        )
        .await
    }

    async fn change_share(
        &self,
        id: &str,
        change: ShareChange,
    ) -> Result<Option<(ShareRecord, bool)>, PortError> {
        // The row's lock orders the changes of every node.
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let Some(row) = query_opt(
            &tx,
            "SELECT rec FROM shares WHERE id = $1 FOR UPDATE",
            &[&id.as_bytes()],
        )
        .await
        .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let mut share = decode_share(row.get(0))?;
        let applied = change.apply(&mut share);
        if applied {
            execute(
                &tx,
                "UPDATE shares SET rec = $2 WHERE id = $1",
                &[&id.as_bytes(), &encode_share(&share)?],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(Some((share, applied)))
    }

    async fn insert_grant(&self, grant: GrantRecord) -> Result<bool, PortError> {
        let rec = encode_grant(&grant)?;
        changed(
            &self.pool,
            "INSERT INTO grants (id, rec) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&grant.id.as_bytes(), &rec],
        )
        .await
    }

    async fn grants(&self) -> Result<Vec<GrantRecord>, PortError> {
        all(
            &self.pool,
            "SELECT rec FROM grants ORDER BY id",
            decode_grant,
        )
        .await
    }

    async fn update_grant(&self, grant: GrantRecord) -> Result<bool, PortError> {
        let rec = encode_grant(&grant)?;
        changed(
            &self.pool,
            "UPDATE grants SET rec = $2 WHERE id = $1",
            &[&grant.id.as_bytes(), &rec],
        )
        .await
    }
}

/// Worklist orders on PostgreSQL.
#[derive(Clone)]
pub struct PgOrders {
    pool: Pool,
}

/// A write refused because another row holds the (accession, SPS ID).
fn order_err(e: tokio_postgres::Error, order: &OrderRecord) -> OrderError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        OrderError::Duplicate {
            accession: order.accession_number.clone(),
            sps_id: order.sps_id.clone(),
        }
    } else {
        OrderError::Port(pg_err(e))
    }
}

fn created_key(o: &OrderRecord) -> i64 {
    i64::try_from(o.created).unwrap_or(i64::MAX)
}

const ORDER_UPSERT: &str = "UPDATE orders SET accession_number = $2, sps_id = $3, \
     start_date = $4, start_time = $5, created = $6, rec = $7 WHERE id = $1";

/// Rewrites the row of `order.id` (inside `tx`).
async fn write_order<C: deadpool_postgres::GenericClient + Sync>(
    tx: &C,
    order: &OrderRecord,
) -> Result<(), OrderError> {
    let rec = crate::orders::encode(order)?;
    execute(
        tx,
        ORDER_UPSERT,
        &[
            &order.id.as_bytes(),
            &order.accession_number.as_bytes(),
            &order.sps_id.as_bytes(),
            &order.start_date.as_bytes(),
            &order.start_time.as_bytes(),
            &created_key(order),
            &rec,
        ],
    )
    .await
    .map_err(|e| order_err(e, order))?;
    Ok(())
}

#[async_trait]
impl OrderStore for PgOrders {
    async fn insert(&self, order: OrderRecord) -> Result<OrderRecord, OrderError> {
        let mut order = order;
        order.id.clear();
        let random = uuid::Uuid::new_v4().as_u128();
        order.assign_identity(random, pacs_core::orders::now_secs());
        let rec = crate::orders::encode(&order)?;
        let c = client(&self.pool).await?;
        execute(
            &c,
            "INSERT INTO orders (id, accession_number, sps_id, start_date, start_time, created, rec) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &order.id.as_bytes(),
                &order.accession_number.as_bytes(),
                &order.sps_id.as_bytes(),
                &order.start_date.as_bytes(),
                &order.start_time.as_bytes(),
                &created_key(&order),
                &rec,
            ],
        )
        .await
        .map_err(|e| order_err(e, &order))?;
        Ok(order)
    }

    async fn get(&self, id: &str) -> Result<Option<OrderRecord>, PortError> {
        one(
            &self.pool,
            "SELECT rec FROM orders WHERE id = $1",
            id.as_bytes(),
            crate::orders::decode,
        )
        .await
    }

    async fn find_step(
        &self,
        accession: &str,
        sps_id: &str,
    ) -> Result<Option<OrderRecord>, PortError> {
        let c = client(&self.pool).await?;
        match query_opt(
            &c,
            "SELECT rec FROM orders WHERE accession_number = $1 AND sps_id = $2",
            &[&accession.as_bytes(), &sps_id.as_bytes()],
        )
        .await
        .map_err(pg_err)?
        {
            Some(r) => crate::orders::decode(r.get(0)).map(Some),
            None => Ok(None),
        }
    }

    async fn list(&self, filter: &OrderFilter) -> Result<Vec<OrderRecord>, PortError> {
        let c = client(&self.pool).await?;
        let rows = if filter.accession_numbers.is_empty() {
            query(
                &c,
                "SELECT rec FROM orders ORDER BY start_date, start_time, created, id",
                &[],
            )
            .await
        } else {
            let accessions: Vec<&[u8]> = filter
                .accession_numbers
                .iter()
                .map(|a| a.as_bytes())
                .collect();
            query(
                &c,
                "SELECT rec FROM orders WHERE accession_number = ANY($1) \
                 ORDER BY start_date, start_time, created, id",
                &[&accessions],
            )
            .await
        }
        .map_err(pg_err)?;
        let mut out = Vec::new();
        for r in &rows {
            if filter.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let order = crate::orders::decode(r.get(0))?;
            if filter.accepts(&order) {
                out.push(order);
            }
        }
        Ok(out)
    }

    async fn replace(&self, order: OrderRecord) -> Result<OrderRecord, OrderError> {
        let mut order = order;
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let row = query_opt(
            &tx,
            "SELECT rec FROM orders WHERE id = $1 FOR UPDATE",
            &[&order.id.as_bytes()],
        )
        .await
        .map_err(pg_err)?
        .ok_or(OrderError::NotFound)?;
        let old = crate::orders::decode(row.get(0))?;
        order.created = old.created;
        order.updated = pacs_core::orders::now_secs();
        write_order(&tx, &order).await?;
        tx.commit().await.map_err(|e| order_err(e, &order))?;
        Ok(order)
    }

    async fn update_status(
        &self,
        accession: &str,
        sps_id: &str,
        status: OrderStatus,
        now: u64,
    ) -> Result<Option<(OrderRecord, OrderRecord)>, PortError> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let Some(row) = query_opt(
            &tx,
            "SELECT rec FROM orders WHERE accession_number = $1 AND sps_id = $2 FOR UPDATE",
            &[&accession.as_bytes(), &sps_id.as_bytes()],
        )
        .await
        .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let old = crate::orders::decode(row.get(0))?;
        if old.status.is_final() && old.status != status {
            return Ok(Some((old.clone(), old)));
        }
        let mut new = old.clone();
        new.status = status;
        new.updated = now;
        match write_order(&tx, &new).await {
            Ok(()) => {}
            Err(OrderError::Port(e)) => return Err(e),
            Err(e) => return Err(PortError::Index(e.to_string())),
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(Some((old, new)))
    }

    async fn remove(&self, id: &str) -> Result<Option<OrderRecord>, PortError> {
        one(
            &self.pool,
            "DELETE FROM orders WHERE id = $1 RETURNING rec",
            id.as_bytes(),
            crate::orders::decode,
        )
        .await
    }
}

/// MPPS records on PostgreSQL.
#[derive(Clone)]
pub struct PgMpps {
    pool: Pool,
}

#[async_trait]
impl MppsStore for PgMpps {
    async fn create(&self, record: &MppsRecord) -> Result<bool, PortError> {
        let rec = encode_mpps(record)?;
        let key = record.sop_instance_uid.as_bytes();
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let created = execute(
            &tx,
            "INSERT INTO mpps (sop_uid, rec) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&key, &rec],
        )
        .await
        .map_err(pg_err)?
            > 0;
        if created {
            write_accessions(&tx, record).await.map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
        }
        Ok(created)
    }

    async fn get(&self, sop_instance_uid: &str) -> Result<Option<MppsRecord>, PortError> {
        one(
            &self.pool,
            "SELECT rec FROM mpps WHERE sop_uid = $1",
            sop_instance_uid.as_bytes(),
            decode_mpps,
        )
        .await
    }

    async fn update(&self, record: &MppsRecord) -> Result<bool, PortError> {
        let rec = encode_mpps(record)?;
        let key = record.sop_instance_uid.as_bytes();
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let Some(row) = query_opt(
            &tx,
            "SELECT rec FROM mpps WHERE sop_uid = $1 FOR UPDATE",
            &[&key],
        )
        .await
        .map_err(pg_err)?
        else {
            return Ok(false);
        };
        if decode_mpps(row.get(0))?.status.is_final() {
            return Ok(false);
        }
        execute(
            &tx,
            "UPDATE mpps SET rec = $2 WHERE sop_uid = $1",
            &[&key, &rec],
        )
        .await
        .map_err(pg_err)?;
        execute(
            &tx,
            "DELETE FROM mpps_accessions WHERE sop_uid = $1",
            &[&key],
        )
        .await
        .map_err(pg_err)?;
        write_accessions(&tx, record).await.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<MppsRecord>, PortError> {
        all(
            &self.pool,
            "SELECT rec FROM mpps ORDER BY sop_uid",
            decode_mpps,
        )
        .await
    }

    async fn of_accession(&self, accession: &str) -> Result<Vec<MppsRecord>, PortError> {
        let c = client(&self.pool).await?;
        let rows = query(
            &c,
            "SELECT m.rec FROM mpps_accessions a JOIN mpps m ON m.sop_uid = a.sop_uid \
             WHERE a.accession = $1 ORDER BY m.sop_uid",
            &[&accession.as_bytes()],
        )
        .await
        .map_err(pg_err)?;
        rows.iter().map(|r| decode_mpps(r.get(0))).collect()
    }
}

const ADD_ACCESSION: &str =
    "INSERT INTO mpps_accessions (accession, sop_uid) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// The `mpps_accessions` rows of `record` (inside the caller's
/// transaction).
async fn write_accessions<C: deadpool_postgres::GenericClient + Sync>(
    tx: &C,
    record: &MppsRecord,
) -> Result<(), tokio_postgres::Error> {
    let key = record.sop_instance_uid.as_bytes();
    for accession in record.accessions() {
        execute(tx, ADD_ACCESSION, &[&accession.as_bytes(), &key]).await?;
    }
    Ok(())
}

/// Records read per statement by [`backfill_mpps_accessions`].
const MPPS_BACKFILL_BATCH: i64 = 1_000;

/// Schema 9 to 10: the `mpps_accessions` rows of the MPPS already held.
pub(crate) async fn backfill_mpps_accessions(
    tx: &tokio_postgres::Transaction<'_>,
    target: &str,
) -> Result<(), crate::pg_index::TxError> {
    let mut after: Vec<u8> = Vec::new();
    let mut done = 0usize;
    loop {
        let batch = tx
            .query(
                "SELECT sop_uid, rec FROM mpps WHERE sop_uid > $1 ORDER BY sop_uid LIMIT $2",
                &[&after, &MPPS_BACKFILL_BATCH],
            )
            .await?;
        let Some(last) = batch.last() else { break };
        after = last.get(0);
        for r in &batch {
            let record = decode_mpps(r.get(1)).map_err(crate::pg_index::TxError::Port)?;
            let key = record.sop_instance_uid.as_bytes();
            for accession in record.accessions() {
                tx.execute(ADD_ACCESSION, &[&accession.as_bytes(), &key])
                    .await?;
            }
        }
        done += batch.len();
        tracing::info!(records = done, index = %target, "MPPS accession rows written");
    }
    Ok(())
}

/// Patient changes and coercions on PostgreSQL.
#[derive(Clone)]
pub struct PgPatients {
    pool: Pool,
}

/// The advisory lock a recording transaction holds from before its id is
/// drawn until it commits: ids then increase in commit order, so a node
/// that has seen change `n` never misses a change committed later with a
/// smaller id.
const PATIENT_CHANGE_LOCK: i64 = 0x5345_4e50_4143_5350;

fn change_id(id: i64) -> Result<u64, PortError> {
    u64::try_from(id).map_err(|_| PortError::Index(format!("patient change id {id} is negative")))
}

fn db_id(id: u64) -> Result<i64, PortError> {
    i64::try_from(id).map_err(|_| PortError::Index(format!("patient change id {id} is too large")))
}

/// Takes [`PATIENT_CHANGE_LOCK`] until `tx` ends.
/// Appends `change` under a fresh id and sets `coercions` (inside the
/// caller's transaction, which holds [`lock_changes`]).
async fn append_change<C: deadpool_postgres::GenericClient + Sync>(
    tx: &C,
    mut change: PatientChange,
    coercions: &[(PatientKey, PatientCoercion)],
) -> Result<PatientChange, PortError> {
    let row = query_opt(
        tx,
        "SELECT nextval(pg_get_serial_sequence('patient_changes', 'id'))",
        &[],
    )
    .await
    .map_err(pg_err)?
    .ok_or_else(|| PortError::Index("PostgreSQL: no patient change id".into()))?;
    let id: i64 = row.get(0);
    change.id = change_id(id)?;
    insert_change(tx, id, &change).await?;
    put_coercions(tx, coercions).await?;
    Ok(change)
}

async fn lock_changes<C: deadpool_postgres::GenericClient + Sync>(tx: &C) -> Result<(), PortError> {
    execute(
        tx,
        "SELECT pg_advisory_xact_lock($1)",
        &[&PATIENT_CHANGE_LOCK],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// Appends `change` to the history under `id` (inside `tx`).
async fn insert_change<C: deadpool_postgres::GenericClient + Sync>(
    tx: &C,
    id: i64,
    change: &PatientChange,
) -> Result<(), PortError> {
    execute(
        tx,
        "INSERT INTO patient_changes (id, from_key, into_key, rec) VALUES ($1, $2, $3, $4)",
        &[
            &id,
            &key_bytes(&change.from),
            &key_bytes(&change.into),
            &encode_change(change)?,
        ],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// Writes `coercions` (each replacing the row of its original key) in `tx`.
async fn put_coercions<C: deadpool_postgres::GenericClient + Sync>(
    tx: &C,
    coercions: &[(PatientKey, PatientCoercion)],
) -> Result<(), PortError> {
    for (k, c) in coercions {
        execute(
            tx,
            "INSERT INTO patient_coercions (original_key, rec) VALUES ($1, $2) \
             ON CONFLICT (original_key) DO UPDATE SET rec = EXCLUDED.rec",
            &[&key_bytes(k), &encode_coercion(c)?],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(())
}

impl PgPatients {
    /// Copies a node's own history and coercions here, ids kept, in one
    /// transaction, unless this database already holds a change (then
    /// nothing is written); whether they were copied.
    pub async fn import(
        &self,
        changes: &[PatientChange],
        coercions: &[(PatientKey, PatientCoercion)],
    ) -> Result<bool, PortError> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        lock_changes(&tx).await?;
        let held = query_opt(&tx, "SELECT 1 FROM patient_changes LIMIT 1", &[])
            .await
            .map_err(pg_err)?;
        if held.is_some() {
            return Ok(false);
        }
        let mut last = 0i64;
        for ch in changes {
            let id = db_id(ch.id)?;
            last = last.max(id);
            insert_change(&tx, id, ch).await?;
        }
        put_coercions(&tx, coercions).await?;
        if !changes.is_empty() {
            // The next id drawn follows the copied ones.
            execute(
                &tx,
                "SELECT setval(pg_get_serial_sequence('patient_changes', 'id'), $1)",
                &[&last.max(1)],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(!changes.is_empty() || !coercions.is_empty())
    }
}

#[async_trait]
impl PatientStore for PgPatients {
    async fn coercions(&self) -> Result<Vec<(PatientKey, PatientCoercion)>, PortError> {
        let c = client(&self.pool).await?;
        let rows = query(
            &c,
            "SELECT original_key, rec FROM patient_coercions ORDER BY original_key",
            &[],
        )
        .await
        .map_err(pg_err)?;
        rows.iter()
            .map(|r| Ok((key_of(r.get(0))?, decode_coercion(r.get(1))?)))
            .collect()
    }

    async fn record(
        &self,
        change: PatientChange,
        coercions: Vec<(PatientKey, PatientCoercion)>,
    ) -> Result<PatientChange, PortError> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        lock_changes(&tx).await?;
        let change = append_change(&tx, change, &coercions).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(change)
    }

    async fn record_if_latest(
        &self,
        seen: Option<u64>,
        change: PatientChange,
        coercions: Vec<(PatientKey, PatientCoercion)>,
    ) -> Result<Option<PatientChange>, PortError> {
        let mut c = client(&self.pool).await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        lock_changes(&tx).await?;
        // Under the lock every recorder holds: no change can come between
        // this check and the insert.
        let latest: Option<i64> = query_opt(&tx, "SELECT max(id) FROM patient_changes", &[])
            .await
            .map_err(pg_err)?
            .and_then(|r| r.get(0));
        if latest.map(change_id).transpose()? != seen {
            return Ok(None);
        }
        let change = append_change(&tx, change, &coercions).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(change))
    }

    async fn history(&self, key: &PatientKey) -> Result<Vec<PatientChange>, PortError> {
        let k = key_bytes(key);
        let c = client(&self.pool).await?;
        let rows = query(
            &c,
            "SELECT rec FROM patient_changes WHERE from_key = $1 OR into_key = $1 ORDER BY id",
            &[&k],
        )
        .await
        .map_err(pg_err)?;
        rows.iter().map(|r| decode_change(r.get(0))).collect()
    }

    async fn latest_change_id(&self) -> Result<Option<u64>, PortError> {
        let c = client(&self.pool).await?;
        let row = query_opt(&c, "SELECT max(id) FROM patient_changes", &[])
            .await
            .map_err(pg_err)?;
        row.and_then(|r| r.get::<_, Option<i64>>(0))
            .map(change_id)
            .transpose()
    }
}
