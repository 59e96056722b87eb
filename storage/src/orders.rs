//! Orders (worklist steps) in the index's sled database: the
//! [`OrderStore`] port.
//!
//! Trees: `orders` (id → order) and `order_steps` (accession number, NUL,
//! SPS ID → id; the uniqueness of a step). Like the credential trees they
//! are not part of the index proper: `pacs reindex` leaves them alone, as
//! orders cannot be rebuilt from the blobs. Every value starts with a
//! format version byte ([`FORMAT`]) followed by bincode; a record of
//! another version is refused with a message. Each write is one sled
//! transaction over both trees and ends with a sled flush.

use std::sync::Arc;

use async_trait::async_trait;
use pacs_core::orders::{
    OrderError, OrderFilter, OrderRecord, OrderSource, OrderStatus, OrderStore, OtherPatientId,
};
use pacs_core::ports::PortError;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

/// The format version of every order record this code writes.
const FORMAT: u8 = 1;

const ORDERS: &str = "orders";
const ORDER_STEPS: &str = "order_steps";

/// Version 1 of an order on disk.
#[derive(Serialize, Deserialize)]
struct StoredOrder {
    id: String,
    patient_id: String,
    issuer_of_patient_id: String,
    other_patient_ids: Vec<(String, String)>,
    patient_name: String,
    patient_birth_date: String,
    patient_sex: String,
    accession_number: String,
    referring_physician_name: String,
    requested_procedure_id: String,
    requested_procedure_description: String,
    study_instance_uid: String,
    placer_order_number: String,
    filler_order_number: String,
    sps_id: String,
    sps_description: String,
    modality: String,
    station_ae_title: String,
    station_name: String,
    location: String,
    start_date: String,
    start_time: String,
    performing_physician_name: String,
    status: String,
    source: String,
    created: u64,
    updated: u64,
}

fn from_order(o: &OrderRecord) -> StoredOrder {
    StoredOrder {
        id: o.id.clone(),
        patient_id: o.patient_id.clone(),
        issuer_of_patient_id: o.issuer_of_patient_id.clone(),
        other_patient_ids: o
            .other_patient_ids
            .iter()
            .map(|p| (p.id.clone(), p.issuer.clone()))
            .collect(),
        patient_name: o.patient_name.clone(),
        patient_birth_date: o.patient_birth_date.clone(),
        patient_sex: o.patient_sex.clone(),
        accession_number: o.accession_number.clone(),
        referring_physician_name: o.referring_physician_name.clone(),
        requested_procedure_id: o.requested_procedure_id.clone(),
        requested_procedure_description: o.requested_procedure_description.clone(),
        study_instance_uid: o.study_instance_uid.clone(),
        placer_order_number: o.placer_order_number.clone(),
        filler_order_number: o.filler_order_number.clone(),
        sps_id: o.sps_id.clone(),
        sps_description: o.sps_description.clone(),
        modality: o.modality.clone(),
        station_ae_title: o.station_ae_title.clone(),
        station_name: o.station_name.clone(),
        location: o.location.clone(),
        start_date: o.start_date.clone(),
        start_time: o.start_time.clone(),
        performing_physician_name: o.performing_physician_name.clone(),
        status: o.status.as_str().to_owned(),
        source: o.source.as_str().to_owned(),
        created: o.created,
        updated: o.updated,
    }
}

fn to_order(s: StoredOrder) -> Result<OrderRecord, PortError> {
    let status = OrderStatus::parse(&s.status).ok_or_else(|| {
        PortError::Index(format!("order record has unknown status {:?}", s.status))
    })?;
    let source = OrderSource::parse(&s.source).ok_or_else(|| {
        PortError::Index(format!("order record has unknown source {:?}", s.source))
    })?;
    Ok(OrderRecord {
        id: s.id,
        patient_id: s.patient_id,
        issuer_of_patient_id: s.issuer_of_patient_id,
        other_patient_ids: s
            .other_patient_ids
            .into_iter()
            .map(|(id, issuer)| OtherPatientId { id, issuer })
            .collect(),
        patient_name: s.patient_name,
        patient_birth_date: s.patient_birth_date,
        patient_sex: s.patient_sex,
        accession_number: s.accession_number,
        referring_physician_name: s.referring_physician_name,
        requested_procedure_id: s.requested_procedure_id,
        requested_procedure_description: s.requested_procedure_description,
        study_instance_uid: s.study_instance_uid,
        placer_order_number: s.placer_order_number,
        filler_order_number: s.filler_order_number,
        sps_id: s.sps_id,
        sps_description: s.sps_description,
        modality: s.modality,
        station_ae_title: s.station_ae_title,
        station_name: s.station_name,
        location: s.location,
        start_date: s.start_date,
        start_time: s.start_time,
        performing_physician_name: s.performing_physician_name,
        status,
        source,
        created: s.created,
        updated: s.updated,
    })
}

pub(crate) fn encode(o: &OrderRecord) -> Result<Vec<u8>, PortError> {
    crate::format::encode_record(FORMAT, "order", &from_order(o))
}

pub(crate) fn decode(raw: &[u8]) -> Result<OrderRecord, PortError> {
    to_order(crate::format::decode_record(FORMAT, "order", raw)?)
}

/// The key of a step's uniqueness entry.
fn step_key(accession: &str, sps_id: &str) -> Vec<u8> {
    let mut k = accession.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(sps_id.as_bytes());
    k
}

use crate::format::db_err;

fn tx_err(e: TransactionError<OrderError>) -> OrderError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => OrderError::Port(db_err(e)),
    }
}

/// The order trees of an open index (see `SledIndex::orders`). Like
/// `SledCredentials`, it holds the index's database cell, so a reopen
/// after an I/O error is not blocked by a handle kept here.
#[derive(Clone)]
pub struct SledOrders {
    cell: Arc<crate::index::Cell>,
}

struct Trees {
    db: sled::Db,
    orders: sled::Tree,
    steps: sled::Tree,
}

impl SledOrders {
    pub(crate) fn open(cell: Arc<crate::index::Cell>) -> Result<SledOrders, PortError> {
        let me = SledOrders { cell };
        me.trees()?;
        Ok(me)
    }

    fn trees(&self) -> Result<Trees, PortError> {
        let db = self.cell.current_db()?;
        Ok(Trees {
            orders: db.open_tree(ORDERS).map_err(db_err)?,
            steps: db.open_tree(ORDER_STEPS).map_err(db_err)?,
            db,
        })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, OrderError>
    where
        T: Send + 'static,
        F: FnOnce(&Trees) -> Result<T, OrderError> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me.trees()?))
            .await
            .map_err(|e| OrderError::Port(PortError::Index(format!("order task failed: {e}"))))?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Trees) -> Result<T, PortError> + Send + 'static,
    {
        match self.blocking(move |t| f(t).map_err(OrderError::Port)).await {
            Ok(v) => Ok(v),
            Err(OrderError::Port(e)) => Err(e),
            Err(e) => Err(PortError::Index(e.to_string())),
        }
    }
}

impl Trees {
    fn durable(&self) -> Result<(), PortError> {
        self.db.flush().map(|_| ()).map_err(db_err)
    }

    /// Writes `order` under its id, moving its step entry from `old` (the
    /// record it replaces) if its (accession, SPS ID) changed.
    fn write(&self, order: &OrderRecord, old: Option<&OrderRecord>) -> Result<(), OrderError> {
        let value = encode(order)?;
        let new_key = step_key(&order.accession_number, &order.sps_id);
        let old_key = old.map(|o| step_key(&o.accession_number, &o.sps_id));
        (&self.orders, &self.steps)
            .transaction(|(orders, steps)| {
                if let Some(holder) = steps.get(&new_key)? {
                    if holder.as_ref() != order.id.as_bytes() {
                        return Err(ConflictableTransactionError::Abort(OrderError::Duplicate {
                            accession: order.accession_number.clone(),
                            sps_id: order.sps_id.clone(),
                        }));
                    }
                }
                if let Some(k) = &old_key {
                    if *k != new_key {
                        steps.remove(k.as_slice())?;
                    }
                }
                steps.insert(new_key.as_slice(), order.id.as_bytes())?;
                orders.insert(order.id.as_bytes(), value.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable()?;
        Ok(())
    }

    fn get(&self, id: &[u8]) -> Result<Option<OrderRecord>, PortError> {
        match self.orders.get(id).map_err(db_err)? {
            Some(raw) => decode(&raw).map(Some),
            None => Ok(None),
        }
    }

    fn by_step(&self, accession: &str, sps_id: &str) -> Result<Option<OrderRecord>, PortError> {
        match self
            .steps
            .get(step_key(accession, sps_id))
            .map_err(db_err)?
        {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl OrderStore for SledOrders {
    async fn insert(&self, order: OrderRecord) -> Result<OrderRecord, OrderError> {
        let mut order = order;
        order.id.clear();
        let random = uuid::Uuid::new_v4().as_u128();
        order.assign_identity(random, pacs_core::orders::now_secs());
        self.blocking(move |t| {
            t.write(&order, None)?;
            Ok(order)
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<OrderRecord>, PortError> {
        let id = id.as_bytes().to_vec();
        self.read(move |t| t.get(&id)).await
    }

    async fn find_step(
        &self,
        accession: &str,
        sps_id: &str,
    ) -> Result<Option<OrderRecord>, PortError> {
        let (a, s) = (accession.to_owned(), sps_id.to_owned());
        self.read(move |t| t.by_step(&a, &s)).await
    }

    async fn list(&self, filter: &OrderFilter) -> Result<Vec<OrderRecord>, PortError> {
        let filter = filter.clone();
        self.read(move |t| {
            let mut out = Vec::new();
            for kv in t.orders.iter() {
                let order = decode(&kv.map_err(db_err)?.1)?;
                if filter.accepts(&order) {
                    out.push(order);
                }
            }
            out.sort_by(|a, b| {
                (&a.start_date, &a.start_time, a.created, &a.id).cmp(&(
                    &b.start_date,
                    &b.start_time,
                    b.created,
                    &b.id,
                ))
            });
            if let Some(limit) = filter.limit {
                out.truncate(limit);
            }
            Ok(out)
        })
        .await
    }

    async fn replace(&self, order: OrderRecord) -> Result<OrderRecord, OrderError> {
        let mut order = order;
        self.blocking(move |t| {
            let old = t.get(order.id.as_bytes())?.ok_or(OrderError::NotFound)?;
            order.created = old.created;
            order.updated = pacs_core::orders::now_secs();
            t.write(&order, Some(&old))?;
            Ok(order)
        })
        .await
    }

    async fn update_status(
        &self,
        accession: &str,
        sps_id: &str,
        status: OrderStatus,
        now: u64,
    ) -> Result<Option<(OrderRecord, OrderRecord)>, PortError> {
        let key = step_key(accession, sps_id);
        match self
            .blocking(move |t| {
                // Read, decided and written in one transaction: a final
                // step cannot be reopened by a change racing this one.
                let done = (&t.orders, &t.steps)
                    .transaction(|(orders, steps)| {
                        let abort = |e: PortError| ConflictableTransactionError::Abort(e.into());
                        let Some(id) = steps.get(&key)? else {
                            return Ok(None);
                        };
                        let Some(raw) = orders.get(&id)? else {
                            return Ok(None);
                        };
                        let old = decode(&raw).map_err(abort)?;
                        if old.status.is_final() && old.status != status {
                            return Ok(Some((old.clone(), old)));
                        }
                        let mut new = old.clone();
                        new.status = status;
                        new.updated = now;
                        orders.insert(&id, encode(&new).map_err(abort)?)?;
                        Ok(Some((old, new)))
                    })
                    .map_err(tx_err)?;
                if done.is_some() {
                    t.durable()?;
                }
                Ok(done)
            })
            .await
        {
            Ok(v) => Ok(v),
            Err(OrderError::Port(e)) => Err(e),
            Err(e) => Err(PortError::Index(e.to_string())),
        }
    }

    async fn remove(&self, id: &str) -> Result<Option<OrderRecord>, PortError> {
        let id = id.as_bytes().to_vec();
        self.read(move |t| {
            let Some(old) = t.get(&id)? else {
                return Ok(None);
            };
            let key = step_key(&old.accession_number, &old.sps_id);
            (&t.orders, &t.steps)
                .transaction(|(orders, steps)| {
                    orders.remove(id.as_slice())?;
                    if steps.get(&key)?.as_deref() == Some(id.as_slice()) {
                        steps.remove(key.as_slice())?;
                    }
                    Ok::<(), ConflictableTransactionError<PortError>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => db_err(e),
                })?;
            t.durable()?;
            Ok(Some(old))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SledIndex;

    fn order(acc: &str, date: &str) -> OrderRecord {
        OrderRecord {
            patient_id: "P1".into(),
            patient_name: "Nguyễn^Văn An".into(),
            accession_number: acc.into(),
            modality: "CT".into(),
            start_date: date.into(),
            ..OrderRecord::default()
        }
    }

    #[tokio::test]
    async fn unknown_format_version_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let index = SledIndex::temporary()?;
        let store = index.orders()?;
        let a = store.insert(order("A1", "")).await?;
        let t = store.trees()?;
        let mut raw = t.orders.get(a.id.as_bytes())?.unwrap().to_vec();
        raw[0] = 9;
        t.orders.insert(a.id.as_bytes(), raw)?;
        let e = store.get(&a.id).await.unwrap_err().to_string();
        assert!(e.contains("format version 9"), "{e}");
        Ok(())
    }
}
