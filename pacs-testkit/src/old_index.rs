//! A current sled index (format 4) put back in the layout of formats 0 to
//! 3, as the migration tests need it: an index an older build wrote.

/// Puts the instances of a current index back in the layout of formats 0
/// to 3 (each record under its SOP Instance UID in `instances`, the
/// `instance_by_series` keys alone, the JSON under the SOP Instance UID in
/// `metadata`), except those whose UID sorts at or before
/// `rekeyed_through`, which stay as a migration cut after them leaves
/// them. How many were put back. Values keep their version byte.
pub fn instances_to_layout_3(db: &sled::Db, rekeyed_through: Option<&str>) -> usize {
    let instances = db.open_tree("instances").unwrap();
    let by_series = db.open_tree("instance_by_series").unwrap();
    let metadata = db.open_tree("metadata").unwrap();
    let entries: Vec<(sled::IVec, sled::IVec)> = by_series.iter().map(|kv| kv.unwrap()).collect();
    let mut n = 0;
    for (key, record) in entries {
        let split = key.iter().position(|b| *b == 0).unwrap();
        let sop = &key[split + 1..];
        if rekeyed_through.is_some_and(|t| sop <= t.as_bytes()) {
            continue;
        }
        instances.insert(sop, record).unwrap();
        by_series.insert(&key, &[1u8][..]).unwrap();
        if let Some(json) = metadata.remove(&key).unwrap() {
            metadata.insert(sop, json).unwrap();
        }
        n += 1;
    }
    n
}
