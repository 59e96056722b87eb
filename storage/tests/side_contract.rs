//! The contracts of the `Credentials`, `OrderStore`, `MppsStore`,
//! `PatientStore` and `SessionStore` ports,
//! run against the sled stores and the PostgreSQL stores (on a throwaway
//! cluster): the same assertions on each. The PostgreSQL runs add what only
//! a shared database has: two nodes (two pools) inserting the same key at
//! once, one record of an unknown format version, and a database of the
//! previous schema migrated forward.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use pacs_core::credentials::{Credentials, GrantRecord, ShareRecord, TokenRecord, UserRecord};
use pacs_core::mpps::{MppsRecord, MppsStatus, MppsStore, ScheduledStepRef};
use pacs_core::orders::{OrderError, OrderFilter, OrderRecord, OrderStatus, OrderStore};
use pacs_core::patients::{
    ChangeKind, Demographics, PatientChange, PatientCoercion, PatientKey, PatientStore,
};
use pacs_core::sessions::{FailureRule, FlowKind, SessionConfig, SessionRecord, SessionStore};
use pacs_core::Role;

fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.into(),
        role: Role::Radiologist,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        disabled: false,
        created: 1,
        updated: 1,
    }
}

fn token(id: &str, secret: u8) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        name: "emr".into(),
        role: Role::Referrer,
        secret_sha256: [secret; 32],
        created: 1,
        expires: Some(10),
        revoked: None,
    }
}

fn share(id: &str, secret: u8) -> ShareRecord {
    ShareRecord {
        id: id.into(),
        secret_sha256: [secret; 32],
        studies: vec!["1.2.3".into()],
        patient: None,
        creator: "an".into(),
        created: 1,
        expires: 100,
        revoked: None,
        uses: 0,
        pin_sha256: Some([4; 32]),
        pin_salt: Some([5; 16]),
        failed_pins: 0,
        locked_until: None,
    }
}

fn grant(id: &str) -> GrantRecord {
    GrantRecord {
        id: id.into(),
        partner: "bv-cho-ray".into(),
        studies: vec!["1.2.3".into(), "1.2.4".into()],
        patient: Some("P1".into()),
        creator: "an".into(),
        created: 1,
        expires: 100,
        revoked: None,
        uses: 0,
    }
}

async fn credentials_contract(c: Arc<dyn Credentials>) {
    // Users.
    assert!(c.insert_user(user("binh")).await.unwrap());
    assert!(c.insert_user(user("an")).await.unwrap());
    assert!(
        !c.insert_user(user("an")).await.unwrap(),
        "a taken name is refused"
    );
    let mut u = user("an");
    u.disabled = true;
    u.role = Role::Admin;
    u.updated = 7;
    assert!(c.update_user(u.clone()).await.unwrap());
    assert_eq!(c.user("an").await.unwrap(), Some(u.clone()));
    assert!(!c.update_user(user("chi")).await.unwrap(), "no such user");
    assert_eq!(c.user("chi").await.unwrap(), None);
    let names: Vec<String> = c
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["an", "binh"], "users by name");
    assert!(c.remove_user("an").await.unwrap());
    assert!(!c.remove_user("an").await.unwrap());
    assert_eq!(c.user("an").await.unwrap(), None);
    assert!(
        c.insert_user(user("an")).await.unwrap(),
        "a removed name is free"
    );

    // Tokens: id and secret are each unique.
    let t = token("t2", 7);
    assert!(c.insert_token(t.clone()).await.unwrap());
    assert!(
        !c.insert_token(t.clone()).await.unwrap(),
        "same id and secret"
    );
    assert!(
        !c.insert_token(token("t2", 8)).await.unwrap(),
        "a taken id is refused"
    );
    assert!(
        !c.insert_token(token("t3", 7)).await.unwrap(),
        "a taken secret is refused"
    );
    assert!(c.insert_token(token("t1", 9)).await.unwrap());
    assert_eq!(c.token_by_secret(&[7; 32]).await.unwrap(), Some(t.clone()));
    assert_eq!(c.token_by_secret(&[8; 32]).await.unwrap(), None);
    assert!(c.revoke_token("t2", 5).await.unwrap());
    assert!(
        c.revoke_token("t2", 6).await.unwrap(),
        "revoking again is no error"
    );
    assert!(!c.revoke_token("nope", 5).await.unwrap());
    let tokens = c.tokens().await.unwrap();
    assert_eq!(
        tokens.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t1", "t2"],
        "tokens by id"
    );
    assert_eq!(tokens[1].revoked, Some(5), "the first revocation stands");
    assert_eq!(tokens[0].revoked, None);
    assert_eq!(
        c.token_by_secret(&[7; 32]).await.unwrap().unwrap().revoked,
        Some(5)
    );

    // Shares.
    let mut s = share("s1", 3);
    assert!(c.insert_share(s.clone()).await.unwrap());
    assert!(
        !c.insert_share(share("s1", 4)).await.unwrap(),
        "a taken id is refused"
    );
    assert!(
        !c.insert_share(share("s2", 3)).await.unwrap(),
        "a taken secret is refused"
    );
    assert_eq!(c.share_by_secret(&[3; 32]).await.unwrap(), Some(s.clone()));
    assert_eq!(c.share_by_secret(&[9; 32]).await.unwrap(), None);
    s.uses = 2;
    s.failed_pins = 1;
    s.locked_until = Some(40);
    s.revoked = Some(50);
    assert!(c.update_share(s.clone()).await.unwrap());
    assert_eq!(c.shares().await.unwrap(), vec![s.clone()]);
    assert_eq!(c.share_by_secret(&[3; 32]).await.unwrap(), Some(s.clone()));
    let mut other = s.clone();
    other.id = "nope".into();
    assert!(!c.update_share(other).await.unwrap());
    // By id, and a page at a time by id.
    assert_eq!(c.share(&s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(c.share("nope").await.unwrap(), None);
    for (id, secret) in [("s5", 12), ("s0", 10), ("s3", 11)] {
        assert!(c.insert_share(share(id, secret)).await.unwrap());
    }
    let all = c.shares().await.unwrap();
    let ids = |v: &[ShareRecord]| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&all), ["s0", "s1", "s3", "s5"]);
    assert_eq!(ids(&c.shares_after(None, 2).await.unwrap()), ["s0", "s1"]);
    assert_eq!(
        ids(&c.shares_after(Some("s1"), 2).await.unwrap()),
        ["s3", "s5"]
    );
    assert_eq!(
        ids(&c.shares_after(Some("s2"), 9).await.unwrap()),
        ["s3", "s5"]
    );
    assert!(c.shares_after(Some("s5"), 9).await.unwrap().is_empty());
    assert_eq!(c.shares_after(None, 9).await.unwrap(), all);

    // Grants.
    let mut g = grant("g2");
    assert!(c.insert_grant(g.clone()).await.unwrap());
    assert!(!c.insert_grant(g.clone()).await.unwrap(), "a taken id");
    assert!(c.insert_grant(grant("g1")).await.unwrap());
    g.uses = 3;
    g.revoked = Some(50);
    assert!(c.update_grant(g.clone()).await.unwrap());
    assert_eq!(c.grants().await.unwrap(), vec![grant("g1"), g.clone()]);
    let mut other = g.clone();
    other.id = "nope".into();
    assert!(!c.update_grant(other).await.unwrap());
}

fn order(acc: &str, date: &str, time: &str) -> OrderRecord {
    OrderRecord {
        patient_id: "P1".into(),
        patient_name: "Nguyễn^Văn An".into(),
        accession_number: acc.into(),
        modality: "CT".into(),
        start_date: date.into(),
        start_time: time.into(),
        ..OrderRecord::default()
    }
}

fn accessions(v: &[OrderRecord]) -> Vec<&str> {
    v.iter().map(|o| o.accession_number.as_str()).collect()
}

async fn orders_contract(store: Arc<dyn OrderStore>) {
    let a = store.insert(order("A1", "20250102", "0800")).await.unwrap();
    let b = store.insert(order("A2", "20250101", "0900")).await.unwrap();
    let c = store.insert(order("A3", "20250101", "0830")).await.unwrap();
    let d = store.insert(order("A4", "", "")).await.unwrap();
    assert_eq!(a.sps_id, "A1", "the SPS ID defaults to the accession");
    assert!(a.study_instance_uid.starts_with("2.25."));
    assert!(!a.id.is_empty() && a.id != b.id);
    assert!(matches!(
        store.insert(order("A1", "20250103", "")).await,
        Err(OrderError::Duplicate { .. })
    ));
    let mut other_step = order("A1", "20250103", "");
    other_step.sps_id = "A1-2".into();
    let a2 = store.insert(other_step).await.unwrap();
    assert_eq!(store.get(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("nope").await.unwrap(), None);
    assert_eq!(store.find_step("A1", "A1").await.unwrap(), Some(a.clone()));
    assert_eq!(
        store.find_step("A1", "A1-2").await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(store.find_step("A1", "A9").await.unwrap(), None);

    // By start date, then time; no date sorts first.
    let all = store.list(&OrderFilter::default()).await.unwrap();
    assert_eq!(accessions(&all), ["A4", "A3", "A2", "A1", "A1"]);
    assert_eq!(all[3].id, a.id);
    let limited = store
        .list(&OrderFilter {
            limit: Some(2),
            date_from: Some("20250101".into()),
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(accessions(&limited), ["A3", "A2"]);
    let by_accession = store
        .list(&OrderFilter {
            accession_numbers: vec!["A2".into(), "A4".into()],
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(accessions(&by_accession), ["A4", "A2"]);

    // Status.
    let (before, after) = store
        .update_status("A1", "A1", OrderStatus::InProgress, 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.status, OrderStatus::Scheduled);
    assert_eq!(after.status, OrderStatus::InProgress);
    assert_eq!(after.updated, 5);
    assert_eq!(store.get(&a.id).await.unwrap(), Some(after.clone()));
    assert!(store
        .update_status("A9", "A9", OrderStatus::InProgress, 5)
        .await
        .unwrap()
        .is_none());
    // A final step keeps its status, and says so.
    let (_, completed) = store
        .update_status("A1", "A1", OrderStatus::Completed, 6)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(completed.status, OrderStatus::Completed);
    let (before, after) = store
        .update_status("A1", "A1", OrderStatus::InProgress, 7)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, completed);
    assert_eq!(after, completed, "a completed step was reopened");
    assert_eq!(store.get(&a.id).await.unwrap(), Some(completed));
    let scheduled = store
        .list(&OrderFilter {
            status: Some(OrderStatus::Scheduled),
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(accessions(&scheduled), ["A4", "A3", "A2", "A1"]);

    // Replace: a change of accession frees the old step.
    let mut changed = b.clone();
    changed.accession_number = "A5".into();
    changed.sps_id = "A5".into();
    changed.created = 0;
    let replaced = store.replace(changed).await.unwrap();
    assert_eq!(replaced.created, b.created, "creation is kept");
    assert!(store.find_step("A2", "A2").await.unwrap().is_none());
    assert_eq!(store.find_step("A5", "A5").await.unwrap(), Some(replaced));
    store.insert(order("A2", "20250101", "")).await.unwrap();
    let mut clash = c.clone();
    clash.accession_number = "A5".into();
    clash.sps_id = "A5".into();
    assert!(matches!(
        store.replace(clash).await,
        Err(OrderError::Duplicate { .. })
    ));
    assert_eq!(
        store.get(&c.id).await.unwrap(),
        Some(c.clone()),
        "a refused replace changes nothing"
    );
    let mut ghost = c.clone();
    ghost.id = "nope".into();
    assert!(matches!(
        store.replace(ghost).await,
        Err(OrderError::NotFound)
    ));

    // Remove.
    assert_eq!(
        store.remove(&a.id).await.unwrap().map(|o| o.id),
        Some(a.id.clone())
    );
    assert!(store.find_step("A1", "A1").await.unwrap().is_none());
    assert!(store.remove(&a.id).await.unwrap().is_none());
    store.insert(order("A1", "", "")).await.unwrap();
    assert_eq!(store.get(&d.id).await.unwrap(), Some(d));
}

fn mpps(uid: &str) -> MppsRecord {
    MppsRecord {
        sop_instance_uid: uid.into(),
        status: MppsStatus::InProgress,
        creator_ae: "CT1".into(),
        created_ms: 1,
        updated_ms: 1,
        steps: vec![ScheduledStepRef {
            accession_number: "A1".into(),
            scheduled_procedure_step_id: "A1".into(),
            requested_procedure_id: "A1".into(),
            study_instance_uid: "1.2.3".into(),
        }],
        series_uids: vec!["1.2.3.4".into()],
        dataset: vec![1, 2, 3, 0],
    }
}

async fn mpps_contract(store: Arc<dyn MppsStore>) {
    let r = mpps("1.2.9");
    assert!(store.create(&r).await.unwrap());
    assert!(
        !store.create(&mpps("1.2.9")).await.unwrap(),
        "a taken UID is refused"
    );
    assert!(store.create(&mpps("1.2.10")).await.unwrap());
    assert_eq!(store.get("1.2.9").await.unwrap(), Some(r.clone()));
    assert_eq!(store.get("1.2.8").await.unwrap(), None);
    let mut done = r.clone();
    done.status = MppsStatus::Completed;
    done.updated_ms = 9;
    done.series_uids.push("1.2.3.5".into());
    assert!(store.update(&done).await.unwrap());
    assert_eq!(store.get("1.2.9").await.unwrap(), Some(done.clone()));
    assert!(!store.update(&mpps("1.2.8")).await.unwrap(), "no such UID");
    let mut reopened = done.clone();
    reopened.status = MppsStatus::InProgress;
    assert!(
        !store.update(&reopened).await.unwrap(),
        "a COMPLETED step was changed"
    );
    assert_eq!(store.get("1.2.9").await.unwrap(), Some(done.clone()));
    let uids: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sop_instance_uid)
        .collect();
    assert_eq!(uids, ["1.2.10", "1.2.9"]);
    accession_contract(store).await;
}

/// `of_accession`: the records whose steps name an accession number, by
/// UID, checked against `list` filtered here; an N-SET that changes the
/// steps moves the record; empty and unknown accession numbers find none.
async fn accession_contract(store: Arc<dyn MppsStore>) {
    let with_steps = |uid: &str, accessions: &[&str]| {
        let mut r = mpps(uid);
        r.steps = accessions
            .iter()
            .map(|a| ScheduledStepRef {
                accession_number: (*a).into(),
                scheduled_procedure_step_id: format!("S{a}"),
                requested_procedure_id: String::new(),
                study_instance_uid: String::new(),
            })
            .collect();
        r
    };
    let expect = |all: &[MppsRecord], acc: &str| -> Vec<String> {
        all.iter()
            .filter(|r| r.steps.iter().any(|s| s.accession_number == acc))
            .map(|r| r.sop_instance_uid.clone())
            .collect()
    };
    assert!(store
        .create(&with_steps("1.3.1", &["B1", "B2"]))
        .await
        .unwrap());
    assert!(store.create(&with_steps("1.3.2", &["B2"])).await.unwrap());
    let moving = with_steps("1.3.3", &["B3"]);
    assert!(store.create(&moving).await.unwrap());
    assert!(store.create(&with_steps("1.3.4", &[""])).await.unwrap());
    // A refused create (taken UID) adds no entry.
    assert!(!store.create(&with_steps("1.3.1", &["B9"])).await.unwrap());
    let mut moved = moving.clone();
    moved.steps = with_steps("1.3.3", &["B4", "B2"]).steps;
    assert!(store.update(&moved).await.unwrap());
    let all = store.list().await.unwrap();
    for acc in ["A1", "B1", "B2", "B3", "B4", "B9", "B", ""] {
        let got: Vec<String> = store
            .of_accession(acc)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.sop_instance_uid)
            .collect();
        let want = if acc.is_empty() {
            Vec::new()
        } else {
            expect(&all, acc)
        };
        assert_eq!(got, want, "accession {acc:?}");
    }
    assert_eq!(
        store.of_accession("B2").await.unwrap().len(),
        3,
        "1.3.1, 1.3.2 and the moved 1.3.3"
    );
    assert!(store.of_accession("B3").await.unwrap().is_empty());
    assert_eq!(store.of_accession("B4").await.unwrap(), vec![moved]);
}

fn named(name: &str) -> Demographics {
    Demographics {
        name: Some(name.into()),
        ..Demographics::default()
    }
}

fn change(kind: ChangeKind, from: &PatientKey, into: &PatientKey, name: &str) -> PatientChange {
    PatientChange {
        id: 0,
        time: 1_700_000_000,
        actor: "hl7:HIS".into(),
        source: "hl7".into(),
        kind,
        from: from.clone(),
        into: into.clone(),
        before: named("OLD^NAME"),
        after: named(name),
    }
}

fn coercion(target: &PatientKey, name: &str) -> PatientCoercion {
    PatientCoercion {
        target: target.clone(),
        demographics: named(name),
    }
}

fn sorted(mut v: Vec<(PatientKey, PatientCoercion)>) -> Vec<(PatientKey, PatientCoercion)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `a` and `b` are two handles on one store (two nodes on PostgreSQL).
async fn patients_contract(a: Arc<dyn PatientStore>, b: Arc<dyn PatientStore>) {
    let (p1, p2) = (PatientKey::new("", "P1"), PatientKey::new("HIS", "P2"));
    assert_eq!(a.latest_change_id().await.unwrap(), None);
    assert!(a.coercions().await.unwrap().is_empty());
    assert!(a.history(&p1).await.unwrap().is_empty());

    // An update: the change gets its id, the coercion is set.
    let first = a
        .record(
            change(ChangeKind::Update, &p1, &p1, "NEW^ONE"),
            vec![(p1.clone(), coercion(&p1, "NEW^ONE"))],
        )
        .await
        .unwrap();
    assert_eq!(first.after, named("NEW^ONE"));
    assert_eq!(b.latest_change_id().await.unwrap(), Some(first.id));
    assert_eq!(
        b.coercions().await.unwrap(),
        vec![(p1.clone(), coercion(&p1, "NEW^ONE"))]
    );
    assert_eq!(b.history(&p1).await.unwrap(), vec![first.clone()]);

    // A merge from the other handle: a greater id, P1's coercion replaced
    // (not added beside the old one), P2's set.
    let merge = b
        .record(
            change(ChangeKind::Merge, &p1, &p2, "SURVIVOR"),
            vec![
                (p1.clone(), coercion(&p2, "SURVIVOR")),
                (p2.clone(), coercion(&p2, "SURVIVOR")),
            ],
        )
        .await
        .unwrap();
    assert!(merge.id > first.id, "{} after {}", merge.id, first.id);
    assert_eq!(a.latest_change_id().await.unwrap(), Some(merge.id));
    assert_eq!(
        sorted(a.coercions().await.unwrap()),
        vec![
            (p1.clone(), coercion(&p2, "SURVIVOR")),
            (p2.clone(), coercion(&p2, "SURVIVOR")),
        ]
    );
    assert_eq!(
        a.history(&p1).await.unwrap(),
        vec![first.clone(), merge.clone()]
    );
    assert_eq!(a.history(&p2).await.unwrap(), vec![merge.clone()]);
    assert!(a
        .history(&PatientKey::new("HIS", "P1"))
        .await
        .unwrap()
        .is_empty());

    // Both handles record at once: every change lands, ids distinct and
    // above the ones before; each change's coercion is there.
    const EACH: usize = 12;
    let mut tasks = Vec::new();
    for i in 0..EACH {
        for (who, store) in [("a", a.clone()), ("b", b.clone())] {
            let key = PatientKey::new("", &format!("C{who}{i}"));
            tasks.push(tokio::spawn(async move {
                store
                    .record(
                        change(ChangeKind::Update, &key, &key, &format!("N^{who}{i}")),
                        vec![(key.clone(), coercion(&key, &format!("N^{who}{i}")))],
                    )
                    .await
            }));
        }
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().id);
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 2 * EACH, "ids are distinct: {ids:?}");
    assert!(unique[0] > merge.id);
    assert_eq!(
        a.latest_change_id().await.unwrap(),
        unique.last().copied(),
        "the newest id is the greatest"
    );
    let all = b.coercions().await.unwrap();
    assert_eq!(all.len(), 2 + 2 * EACH);
    for i in 0..EACH {
        for who in ["a", "b"] {
            let key = PatientKey::new("", &format!("C{who}{i}"));
            let h = b.history(&key).await.unwrap();
            assert_eq!(h.len(), 1, "{key:?}");
            assert!(all.contains(&(key.clone(), coercion(&key, &format!("N^{who}{i}")))));
        }
    }

    // A change planned on a history that moved since is not recorded, and
    // of two planned on the same history at once (two nodes), one lands.
    let r1 = PatientKey::new("", "R1");
    let latest = a.latest_change_id().await.unwrap();
    let stale = b
        .record_if_latest(
            Some(first.id),
            change(ChangeKind::Update, &r1, &r1, "STALE"),
            vec![(r1.clone(), coercion(&r1, "STALE"))],
        )
        .await
        .unwrap();
    assert_eq!(stale, None);
    assert!(a.history(&r1).await.unwrap().is_empty(), "nothing written");
    assert_eq!(a.latest_change_id().await.unwrap(), latest);
    let planned = |store: Arc<dyn PatientStore>, name: &'static str| {
        let r1 = r1.clone();
        tokio::spawn(async move {
            store
                .record_if_latest(
                    latest,
                    change(ChangeKind::Update, &r1, &r1, name),
                    vec![(r1.clone(), coercion(&r1, name))],
                )
                .await
                .unwrap()
        })
    };
    let (x, y) = (planned(a.clone(), "X"), planned(b.clone(), "Y"));
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    let won = match (x, y) {
        (Some(c), None) | (None, Some(c)) => c,
        other => panic!("exactly one lands: {other:?}"),
    };
    assert_eq!(a.latest_change_id().await.unwrap(), Some(won.id));
    assert_eq!(b.history(&r1).await.unwrap(), vec![won.clone()]);
    let name = won.after.name.clone().unwrap();
    assert!(b
        .coercions()
        .await
        .unwrap()
        .contains(&(r1.clone(), coercion(&r1, &name))));
}

#[tokio::test]
async fn sled_patients_keep_the_contract() {
    let index = storage::SledIndex::temporary().unwrap();
    patients_contract(
        Arc::new(index.patients().unwrap()),
        Arc::new(index.patients().unwrap()),
    )
    .await;
}

#[tokio::test]
async fn sled_credentials_keep_the_contract() {
    let index = storage::SledIndex::temporary().unwrap();
    credentials_contract(Arc::new(index.credentials().unwrap())).await;
}

/// Changes of a share in place (`change_share`); `a` and `b` are two
/// nodes' views of one store. Changes made at once all land: none is
/// lost to another (a use counted never undoes a revocation), and PIN
/// attempts at once are counted one by one, the lock included.
async fn share_changes_contract(a: Arc<dyn Credentials>, b: Arc<dyn Credentials>) {
    use pacs_core::credentials::ShareChange;
    let attempt = |now: u64| ShareChange::PinAttempt {
        now,
        attempts: 3,
        lock_until: now + 60,
    };
    let change = |c: &Arc<dyn Credentials>, id: &'static str, ch: ShareChange| {
        let c = c.clone();
        async move { c.change_share(id, ch).await.unwrap().unwrap() }
    };
    assert!(a.insert_share(share("c1", 11)).await.unwrap());
    assert_eq!(
        b.change_share("nope", ShareChange::Used).await.unwrap(),
        None
    );
    let (s, applied) = change(&b, "c1", ShareChange::Used).await;
    assert!(applied);
    assert_eq!(s.uses, 1);
    assert_eq!(a.share_by_secret(&[11; 32]).await.unwrap(), Some(s));
    // Attempts on either node count together; a right PIN restarts them.
    assert_eq!(change(&a, "c1", attempt(10)).await.0.failed_pins, 1);
    assert_eq!(change(&b, "c1", attempt(10)).await.0.failed_pins, 2);
    assert!(change(&a, "c1", ShareChange::PinRight).await.1);
    assert!(
        !change(&b, "c1", ShareChange::PinRight).await.1,
        "nothing to do"
    );
    change(&a, "c1", attempt(10)).await;
    change(&b, "c1", attempt(10)).await;
    let (s, applied) = change(&a, "c1", attempt(10)).await;
    assert!(applied, "the last attempt is still checked");
    assert_eq!((s.failed_pins, s.locked_until), (0, Some(70)), "locked");
    let (s, applied) = change(&b, "c1", attempt(20)).await;
    assert!(!applied, "refused while locked");
    assert_eq!(s.locked_until, Some(70));
    let (s, applied) = change(&b, "c1", attempt(80)).await;
    assert!(applied, "the lock is over");
    assert_eq!((s.failed_pins, s.locked_until), (1, None));
    // A revocation stays, whatever comes after it.
    assert!(change(&a, "c1", ShareChange::Revoke { at: 90 }).await.1);
    assert!(!change(&b, "c1", ShareChange::Revoke { at: 95 }).await.1);
    let (s, _) = change(&b, "c1", ShareChange::Used).await;
    assert_eq!((s.revoked, s.uses), (Some(90), 2));

    // At once, half on each node: twenty uses, all counted; ten PIN
    // attempts, exactly three taken (the third locking).
    assert!(a.insert_share(share("c2", 12)).await.unwrap());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..30 {
        let node = if i % 2 == 0 { &a } else { &b };
        let ch = if i < 20 {
            ShareChange::Used
        } else {
            attempt(10)
        };
        set.spawn(change(node, "c2", ch));
    }
    let mut taken = 0;
    while let Some(r) = set.join_next().await {
        let (_, applied) = r.unwrap();
        taken += usize::from(applied);
    }
    assert_eq!(taken, 20 + 3);
    let s = a.share_by_secret(&[12; 32]).await.unwrap().unwrap();
    assert_eq!((s.uses, s.failed_pins, s.locked_until), (20, 0, Some(70)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_share_changes_keep_the_contract() {
    let index = storage::SledIndex::temporary().unwrap();
    let c: Arc<dyn Credentials> = Arc::new(index.credentials().unwrap());
    share_changes_contract(c.clone(), c).await;
}

#[tokio::test]
async fn sled_orders_keep_the_contract() {
    let index = storage::SledIndex::temporary().unwrap();
    orders_contract(Arc::new(index.orders().unwrap())).await;
}

#[tokio::test]
async fn sled_mpps_keeps_the_contract() {
    let index = storage::SledIndex::temporary().unwrap();
    mpps_contract(Arc::new(index.workflow().unwrap())).await;
}

/// What the technologist's page costs per order on a year of MPPS (a
/// benchmark, not a test): 100,000 records with a 2 KB data set each
/// (about 270 working days of a 1,500-exam hospital's CT, MR and X-ray
/// rooms), the MPPS of 200 orders found through their accession numbers
/// against the read of every record the page made before.
/// `cargo test -p storage --release --test side_contract mpps_by_accession_cost -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn mpps_by_accession_cost() {
    let index = storage::SledIndex::temporary().unwrap();
    let store = index.workflow().unwrap();
    let n = 100_000u32;
    for i in 0..n {
        let mut r = mpps(&format!("1.2.826.0.1.3680043.10.1.{i}"));
        r.steps[0].accession_number = format!("ACC{i:08}");
        r.dataset = vec![7; 2048];
        assert!(store.create(&r).await.unwrap());
    }
    let orders: Vec<String> = (0..200u32)
        .map(|k| format!("ACC{:08}", k * (n / 200) + 17))
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut before = Vec::new();
    let mut after = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let all = store.list().await.unwrap();
        let found = orders
            .iter()
            .filter(|a| all.iter().any(|r| r.names_accession(a)))
            .count();
        before.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(found, 200);
        let t = std::time::Instant::now();
        let mut found = 0;
        for a in &orders {
            found += store.of_accession(a).await.unwrap().len();
        }
        after.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(found, 200);
    }
    println!(
        "{n} MPPS, 200 orders: every record read {:.1} ms, by accession {:.2} ms (medians of 5)",
        median(before),
        median(after)
    );
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use pacs_core::Index;
    use pacs_testkit::postgres::TestPostgres;
    use storage::PgIndex;

    async fn connect(url: &str) -> PgIndex {
        PgIndex::connect(url, 4).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_stores_keep_the_contracts() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("side");
        let index = connect(&url).await;
        credentials_contract(Arc::new(index.credentials())).await;
        orders_contract(Arc::new(index.orders())).await;
        mpps_contract(Arc::new(index.mpps())).await;
        // Another node sees every record; a reindex keeps them.
        let other = connect(&url).await;
        other.clear().await.unwrap();
        assert_eq!(other.credentials().users().await.unwrap().len(), 2);
        assert_eq!(other.credentials().tokens().await.unwrap().len(), 2);
        assert_eq!(other.credentials().shares().await.unwrap().len(), 4);
        assert_eq!(other.credentials().grants().await.unwrap().len(), 2);
        assert_eq!(
            other
                .orders()
                .list(&OrderFilter::default())
                .await
                .unwrap()
                .len(),
            6
        );
        assert_eq!(other.mpps().list().await.unwrap().len(), 6);
        assert_eq!(other.mpps().of_accession("B2").await.unwrap().len(), 3);
    }

    /// A schema-9 database (MPPS without accession rows) is migrated when
    /// a node connects: each record's rows are written from it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_mpps_of_schema_9_get_their_accession_rows() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("mpps9");
        {
            let index = connect(&url).await;
            mpps_contract(Arc::new(index.mpps())).await;
        }
        pg.psql(
            "mpps9",
            "DROP TABLE mpps_accessions; UPDATE pacs_schema_version SET version = 9",
        );
        let index = connect(&url).await;
        let version = pg.psql("mpps9", "SELECT version FROM pacs_schema_version");
        assert!(
            version.contains(&storage::pg_index::PG_SCHEMA_VERSION.to_string()),
            "{version}"
        );
        let store = index.mpps();
        let uids = |v: Vec<MppsRecord>| -> Vec<String> {
            v.into_iter().map(|r| r.sop_instance_uid).collect()
        };
        assert_eq!(
            uids(store.of_accession("B2").await.unwrap()),
            ["1.3.1", "1.3.2", "1.3.3"]
        );
        assert_eq!(
            uids(store.of_accession("A1").await.unwrap()),
            ["1.2.10", "1.2.9"]
        );
        let rows = pg.psql("mpps9", "SELECT count(*) FROM mpps_accessions");
        assert_eq!(rows.trim(), "7", "two A1, B1, B2 thrice, B4");
    }

    /// Two nodes (two pools) keep the session store's contract on one
    /// database; a reindex leaves the sessions alone; a record of an
    /// unknown format version is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_sessions_keep_the_contract() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("sessions");
        let (a, b) = (connect(&url).await, connect(&url).await);
        sessions_contract(Arc::new(a.sessions()), Arc::new(b.sessions())).await;
        let long = session_config(3_600_000, 7_200_000, 10);
        let key = [7u8; 32];
        assert!(a
            .sessions()
            .start(key, &session("an", None), &long)
            .await
            .unwrap());
        b.clear().await.unwrap();
        assert!(b.sessions().get(&key, &long).await.unwrap().is_some());
        // Only the SHA-256 given as the key is stored, never a cookie.
        let rows = pg.psql(
            "sessions",
            "SELECT encode(key, 'hex') FROM browser_sessions",
        );
        assert!(rows.contains(&"07".repeat(32)), "{rows}");
        pg.psql(
            "sessions",
            "UPDATE browser_sessions SET rec = '\\x090000'::bytea",
        );
        let e = a.sessions().get(&key, &long).await.unwrap_err().to_string();
        assert!(e.contains("format version 9"), "{e}");
    }

    /// Two nodes (two pools) change one share at once: no change is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_share_changes_keep_the_contract() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("changes");
        let (a, b) = (connect(&url).await, connect(&url).await);
        share_changes_contract(Arc::new(a.credentials()), Arc::new(b.credentials())).await;
    }

    /// Two nodes (two pools) keep the flow records' contract on one
    /// database; only the given keys and records are stored, with their
    /// expiry on the database's clock; a reindex leaves them alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_flows_keep_the_contract() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("flows");
        let (a, b) = (connect(&url).await, connect(&url).await);
        flows_contract(Arc::new(a.sessions()), Arc::new(b.sessions())).await;
        b.clear().await.unwrap();
        let rows = pg.psql(
            "flows",
            "SELECT kind, encode(key, 'hex'), encode(rec, 'escape'), \
             expires > now() + interval '50 minutes' FROM browser_flows ORDER BY kind, key",
        );
        assert!(
            rows.contains(&format!("1|{}|link one|t", "01".repeat(32))),
            "{rows}"
        );
        assert!(
            rows.contains(&format!("2|{}|room|t", "02".repeat(32))),
            "{rows}"
        );
        // Expired rows are removed when a record is kept.
        pg.psql(
            "flows",
            "UPDATE browser_flows SET expires = now() - interval '1 second'",
        );
        let hour = std::time::Duration::from_secs(3600);
        let sessions = a.sessions();
        assert!(sessions
            .put_flow(FlowKind::ShareCookie, [9u8; 32], b"new", hour, 1)
            .await
            .unwrap());
        let left = pg.psql("flows", "SELECT count(*) FROM browser_flows WHERE kind = 1");
        assert_eq!(left.trim(), "1", "{left}");
    }

    /// Two nodes (two pools) keep the failed sign-ins' contract on one
    /// database, which holds only the given keys (never a name), timed on
    /// its own clock; rules forget keys long quiet.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_sign_in_failures_keep_the_contract() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("signins");
        let (a, b) = (connect(&url).await, connect(&url).await);
        sign_in_failures_contract(Arc::new(a.sessions()), Arc::new(b.sessions())).await;
        let rows = pg.psql(
            "signins",
            "SELECT encode(key, 'hex'), failures FROM sign_in_failures ORDER BY key",
        );
        assert_eq!(
            rows.trim(),
            format!("{}|1\n{}|20", "01".repeat(32), "02".repeat(32)),
            "{rows}"
        );
        // A key quiet for longer than the rule's maximum and not locked is
        // removed at the next failure (of any key).
        pg.psql(
            "signins",
            "UPDATE sign_in_failures SET last_ms = last_ms - 3600000, locked_until_ms = 0",
        );
        let short = FailureRule {
            threshold: 3,
            base: std::time::Duration::from_secs(1),
            max: std::time::Duration::from_secs(60),
        };
        assert_eq!(
            a.sessions().fail_sign_in([7u8; 32], &short).await.unwrap(),
            None
        );
        let left = pg.psql("signins", "SELECT encode(key, 'hex') FROM sign_in_failures");
        assert_eq!(left.trim(), "07".repeat(32), "{left}");
    }

    /// Two nodes (two pools) keep the patient store's contract, and a
    /// reindex leaves the changes alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_patients_keep_the_contract() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("patients");
        let (a, b) = (connect(&url).await, connect(&url).await);
        patients_contract(Arc::new(a.patients()), Arc::new(b.patients())).await;
        let latest = b.patients().latest_change_id().await.unwrap();
        b.clear().await.unwrap();
        assert_eq!(a.patients().latest_change_id().await.unwrap(), latest);
        let p1 = PatientKey::new("", "P1");
        assert_eq!(a.patients().history(&p1).await.unwrap().len(), 2);

        // A record of an unknown format version is refused, not misread.
        pg.psql(
            "patients",
            "UPDATE patient_changes SET rec = '\\x090000'::bytea \
             WHERE id = (SELECT min(id) FROM patient_changes)",
        );
        let e = a.patients().history(&p1).await.unwrap_err().to_string();
        assert!(e.contains("format version 9"), "{e}");
    }

    /// A node's own history copied into an empty database keeps its ids;
    /// later changes follow them; a second copy is refused.
    #[tokio::test]
    async fn a_node_history_is_copied_once_with_its_ids() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("import");
        let index = connect(&url).await;
        let store = index.patients();
        let sled = storage::SledIndex::temporary().unwrap();
        let own = sled.patients().unwrap();
        let p1 = PatientKey::new("", "P1");
        let mut recorded = Vec::new();
        for name in ["A^ONE", "A^TWO", "A^THREE"] {
            recorded.push(
                own.record(
                    change(ChangeKind::Update, &p1, &p1, name),
                    vec![(p1.clone(), coercion(&p1, name))],
                )
                .await
                .unwrap(),
            );
        }
        let changes = own.changes().await.unwrap();
        assert_eq!(changes, recorded);
        let coercions = own.coercions().await.unwrap();
        assert!(store.import(&changes, &coercions).await.unwrap());
        assert_eq!(store.history(&p1).await.unwrap(), recorded);
        assert_eq!(store.coercions().await.unwrap(), coercions);
        let last = recorded.last().unwrap().id;
        assert_eq!(store.latest_change_id().await.unwrap(), Some(last));
        let next = store
            .record(change(ChangeKind::Update, &p1, &p1, "B^ONE"), vec![])
            .await
            .unwrap();
        assert!(next.id > last, "{} after {last}", next.id);
        assert!(
            !store.import(&changes, &coercions).await.unwrap(),
            "a database holding changes takes no copy"
        );
        assert_eq!(store.history(&p1).await.unwrap().len(), 4);
    }

    /// Two nodes (two pools) insert the same keys at once: exactly one
    /// insert of each wins, and the loser is told.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_inserting_the_same_key_at_once_get_one_winner() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("race");
        let (a, b) = (connect(&url).await, connect(&url).await);
        const ROUNDS: usize = 40;
        let mut duplicates = 0;
        for i in 0..ROUNDS {
            let acc = format!("R{i}");
            let (x, y) = (a.orders(), b.orders());
            let (oa, ob) = (order(&acc, "20250101", ""), order(&acc, "20250101", ""));
            let (ra, rb) = tokio::join!(
                tokio::spawn(async move { x.insert(oa).await }),
                tokio::spawn(async move { y.insert(ob).await })
            );
            let results = [ra.unwrap(), rb.unwrap()];
            let ok = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(ok, 1, "round {i}: {results:?}");
            duplicates += results
                .iter()
                .filter(|r| matches!(r, Err(OrderError::Duplicate { .. })))
                .count();

            let (x, y) = (a.credentials(), b.credentials());
            let name = format!("u{i}");
            let (n1, n2) = (name.clone(), name.clone());
            let (ua, ub) = tokio::join!(
                tokio::spawn(async move { x.insert_user(user(&n1)).await }),
                tokio::spawn(async move { y.insert_user(user(&n2)).await })
            );
            let (ua, ub) = (ua.unwrap().unwrap(), ub.unwrap().unwrap());
            assert!(ua ^ ub, "round {i}: one user insert wins ({ua}, {ub})");

            let (x, y) = (a.mpps(), b.mpps());
            let uid = format!("1.2.7.{i}");
            let (u1, u2) = (uid.clone(), uid.clone());
            let (ma, mb) = tokio::join!(
                tokio::spawn(async move { x.create(&mpps(&u1)).await }),
                tokio::spawn(async move { y.create(&mpps(&u2)).await })
            );
            let (ma, mb) = (ma.unwrap().unwrap(), mb.unwrap().unwrap());
            assert!(ma ^ mb, "round {i}: one N-CREATE wins ({ma}, {mb})");

            // Two N-SETs finishing the step at once: one wins.
            let (x, y) = (a.mpps(), b.mpps());
            let mut completed = mpps(&uid);
            completed.status = MppsStatus::Completed;
            let mut discontinued = mpps(&uid);
            discontinued.status = MppsStatus::Discontinued;
            let (sa, sb) = tokio::join!(
                tokio::spawn(async move { x.update(&completed).await }),
                tokio::spawn(async move { y.update(&discontinued).await })
            );
            let (sa, sb) = (sa.unwrap().unwrap(), sb.unwrap().unwrap());
            assert!(sa ^ sb, "round {i}: one final N-SET wins ({sa}, {sb})");
        }
        assert_eq!(duplicates, ROUNDS, "every loser is told Duplicate");
        let all = a.orders().list(&OrderFilter::default()).await.unwrap();
        assert_eq!(all.len(), ROUNDS);

        // Status changes from both nodes at once are not lost: each moves
        // one step, and every step ends moved.
        let mut tasks = Vec::new();
        for (i, o) in all.iter().enumerate() {
            let store = if i % 2 == 0 { a.orders() } else { b.orders() };
            let (acc, sps) = (o.accession_number.clone(), o.sps_id.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .update_status(&acc, &sps, OrderStatus::InProgress, 3)
                    .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap().is_some());
        }
        let moved = b
            .orders()
            .list(&OrderFilter {
                status: Some(OrderStatus::InProgress),
                ..OrderFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(moved.len(), ROUNDS);

        // One node completes each step while the other sets it in
        // progress again: whichever runs first, the step ends completed.
        let mut tasks = Vec::new();
        for (i, o) in all.iter().enumerate() {
            let (x, y) = if i % 2 == 0 {
                (a.orders(), b.orders())
            } else {
                (b.orders(), a.orders())
            };
            let (acc, sps) = (o.accession_number.clone(), o.sps_id.clone());
            let (acc2, sps2) = (acc.clone(), sps.clone());
            tasks.push(tokio::spawn(async move {
                x.update_status(&acc, &sps, OrderStatus::Completed, 4).await
            }));
            tasks.push(tokio::spawn(async move {
                y.update_status(&acc2, &sps2, OrderStatus::InProgress, 4)
                    .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap().is_some());
        }
        let done = a
            .orders()
            .list(&OrderFilter {
                status: Some(OrderStatus::Completed),
                ..OrderFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(done.len(), ROUNDS, "a completed step was reopened");
    }

    /// A record written with an unknown format version is refused, not
    /// misread; a database of schema version 1 is migrated forward.
    #[tokio::test]
    async fn unknown_record_versions_are_refused_and_version_1_migrates() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("versions");
        let index = connect(&url).await;
        assert!(index.credentials().insert_user(user("an")).await.unwrap());
        pg.psql(
            "versions",
            "UPDATE users SET rec = '\\x090000'::bytea; \
             INSERT INTO mpps (sop_uid, rec) VALUES ('\\x31'::bytea, '\\x09'::bytea)",
        );
        let e = index
            .credentials()
            .user("an")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("format version 9"), "{e}");
        let e = index.mpps().get("1").await.unwrap_err().to_string();
        assert!(e.contains("format version 9"), "{e}");

        // Version 1: the index tables only.
        let old = pg.create_database("v1");
        let (client, conn) = tokio_postgres::connect(&old, tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        client
            .batch_execute(storage::pg_index::MIGRATIONS[0])
            .await
            .unwrap();
        client
            .batch_execute(
                "CREATE TABLE pacs_schema_version (singleton boolean PRIMARY KEY DEFAULT true \
                 CHECK (singleton), version integer NOT NULL); \
                 INSERT INTO pacs_schema_version (version) VALUES (1)",
            )
            .await
            .unwrap();
        let migrated = connect(&old).await;
        let v: i32 = client
            .query_one("SELECT version FROM pacs_schema_version", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, storage::pg_index::PG_SCHEMA_VERSION);
        assert!(migrated
            .credentials()
            .insert_user(user("an"))
            .await
            .unwrap());
        assert!(migrated.mpps().create(&mpps("1.2")).await.unwrap());
        let p1 = PatientKey::new("", "P1");
        let recorded = migrated
            .patients()
            .record(
                change(ChangeKind::Update, &p1, &p1, "X^Y"),
                vec![(p1.clone(), coercion(&p1, "X^Y"))],
            )
            .await
            .unwrap();
        assert_eq!(
            migrated.patients().history(&p1).await.unwrap(),
            vec![recorded]
        );
        drop(client);
        conn.await.unwrap().unwrap();
    }
}

fn session(user: &str, federated: Option<pacs_core::Role>) -> SessionRecord {
    SessionRecord {
        user: user.to_owned(),
        csrf: format!("csrf-of-{user}"),
        federated,
    }
}

fn session_config(idle_ms: u64, absolute_ms: u64, max_sessions: usize) -> SessionConfig {
    SessionConfig {
        idle: std::time::Duration::from_millis(idle_ms),
        absolute: std::time::Duration::from_millis(absolute_ms),
        max_sessions,
    }
}

/// Waits (bounded) until `key` is no longer live in `store`: it must end
/// once its time-out has passed.
async fn ends(store: &Arc<dyn SessionStore>, key: &[u8; 32], config: &SessionConfig) -> bool {
    for _ in 0..100 {
        if store.get(key, config).await.unwrap().is_none() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// The session store's contract; `a` and `b` are two nodes' views of one
/// store (the same store in memory).
async fn sessions_contract(a: Arc<dyn SessionStore>, b: Arc<dyn SessionStore>) {
    let long = session_config(3_600_000, 7_200_000, 3);
    let (k1, k2, k3, k4) = ([1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]);
    assert!(a.start(k1, &session("an", None), &long).await.unwrap());
    // Seen from the other node, CSRF token included.
    assert_eq!(b.get(&k1, &long).await.unwrap(), Some(session("an", None)));
    assert_eq!(b.get(&[9u8; 32], &long).await.unwrap(), None);
    let fed = Some(pacs_core::Role::Radiologist);
    assert!(b.start(k2, &session("an", fed), &long).await.unwrap());
    assert!(a.start(k3, &session("binh", None), &long).await.unwrap());
    // max_sessions counts every node's sessions.
    assert!(!b.start(k4, &session("chi", None), &long).await.unwrap());
    // Ending on one node ends it on the other.
    assert_eq!(b.end(&k3).await.unwrap(), Some(session("binh", None)));
    assert_eq!(a.get(&k3, &long).await.unwrap(), None);
    assert_eq!(a.end(&k3).await.unwrap(), None);
    assert!(b.start(k4, &session("chi", None), &long).await.unwrap());
    // end_user ends the local user's sessions, not a provider's user of
    // the same name.
    b.end_user("an").await.unwrap();
    assert_eq!(a.get(&k1, &long).await.unwrap(), None);
    assert_eq!(a.get(&k2, &long).await.unwrap(), Some(session("an", fed)));
    assert_eq!(a.get(&k4, &long).await.unwrap(), Some(session("chi", None)));
    a.end(&k2).await.unwrap();
    a.end(&k4).await.unwrap();

    // Idle time-out (short), then absolute time-out (short).
    let idle = session_config(300, 3_600_000, 1);
    assert!(a.start(k1, &session("an", None), &idle).await.unwrap());
    // Unused for longer than the idle time-out (a sleep only ever makes
    // it longer): ended.
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    assert_eq!(
        b.get(&k1, &idle).await.unwrap(),
        None,
        "idle session still live"
    );
    // An expired session does not hold a place: the table of one takes a
    // new one once the old one is past its time-out.
    let abs = session_config(3_600_000, 300, 1);
    assert!(a.start(k2, &session("an", None), &abs).await.unwrap());
    assert!(
        ends(&a, &k2, &abs).await,
        "session past its absolute time-out"
    );
    assert!(b.start(k3, &session("binh", None), &abs).await.unwrap());
    assert_eq!(a.end(&k2).await.unwrap(), None, "expired row removed");
}

#[tokio::test]
async fn memory_sessions_keep_the_contract() {
    let store: Arc<dyn SessionStore> = Arc::new(pacs_core::sessions::MemorySessions::new());
    sessions_contract(store.clone(), store).await;
}

/// The flow records' contract (share cookies, pending sign-ins); `a` and
/// `b` are two nodes' views of one store.
async fn flows_contract(a: Arc<dyn SessionStore>, b: Arc<dyn SessionStore>) {
    use std::time::Duration;
    let (cookie, sign_in) = (FlowKind::ShareCookie, FlowKind::PendingSignIn);
    let hour = Duration::from_secs(3600);
    let (k1, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    assert!(a.put_flow(cookie, k1, b"link one", hour, 2).await.unwrap());
    // Seen from the other node, as often as asked.
    assert_eq!(
        b.flow(cookie, &k1).await.unwrap().as_deref(),
        Some(&b"link one"[..])
    );
    assert!(b.flow(cookie, &k1).await.unwrap().is_some());
    // Kinds are separate key spaces, each with its own bound.
    assert_eq!(b.flow(sign_in, &k1).await.unwrap(), None);
    assert_eq!(b.take_flow(sign_in, &k1).await.unwrap(), None);
    assert!(b.put_flow(cookie, k2, b"link two", hour, 2).await.unwrap());
    assert!(
        !a.put_flow(cookie, k3, b"three", hour, 2).await.unwrap(),
        "the bound counts every node's records"
    );
    assert!(a.put_flow(sign_in, k1, b"pending", hour, 2).await.unwrap());
    // Taken once, on either node: a replay finds nothing.
    assert_eq!(
        b.take_flow(sign_in, &k1).await.unwrap().as_deref(),
        Some(&b"pending"[..])
    );
    assert_eq!(a.take_flow(sign_in, &k1).await.unwrap(), None, "replayed");
    assert_eq!(b.take_flow(sign_in, &k1).await.unwrap(), None, "replayed");
    // Two takers at once: exactly one gets it.
    assert!(a.put_flow(sign_in, k2, b"once", hour, 2).await.unwrap());
    let (x, y) = tokio::join!(a.take_flow(sign_in, &k2), b.take_flow(sign_in, &k2));
    assert_eq!(
        usize::from(x.unwrap().is_some()) + usize::from(y.unwrap().is_some()),
        1
    );
    // A record ends after its time (a sleep only ever makes it later),
    // and an expired one holds no place.
    let short = Duration::from_millis(300);
    assert!(a.put_flow(sign_in, k3, b"soon", short, 1).await.unwrap());
    assert!(!b.put_flow(sign_in, k2, b"full", hour, 1).await.unwrap());
    let mut gone = false;
    for _ in 0..100 {
        if b.flow(sign_in, &k3).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "flow record past its time");
    assert_eq!(a.take_flow(sign_in, &k3).await.unwrap(), None, "expired");
    assert!(b.put_flow(sign_in, k2, b"room", hour, 1).await.unwrap());
    // The cookies were left alone by all this.
    assert!(a.flow(cookie, &k1).await.unwrap().is_some());
    assert!(a.flow(cookie, &k2).await.unwrap().is_some());
}

#[tokio::test]
async fn memory_flows_keep_the_contract() {
    let store: Arc<dyn SessionStore> = Arc::new(pacs_core::sessions::MemorySessions::new());
    flows_contract(store.clone(), store).await;
}

/// The failed sign-ins' contract; `a` and `b` are two nodes' views of one
/// store.
async fn sign_in_failures_contract(a: Arc<dyn SessionStore>, b: Arc<dyn SessionStore>) {
    use std::time::Duration;
    let rule = FailureRule {
        threshold: 3,
        base: Duration::from_secs(60),
        max: Duration::from_secs(24 * 3600),
    };
    let (k1, k2) = ([1u8; 32], [2u8; 32]);
    // Failures on either node count toward one lock.
    assert_eq!(a.fail_sign_in(k1, &rule).await.unwrap(), None);
    assert_eq!(b.fail_sign_in(k1, &rule).await.unwrap(), None);
    assert_eq!(b.sign_in_lock(&k1).await.unwrap(), None);
    assert_eq!(
        a.fail_sign_in(k1, &rule).await.unwrap(),
        Some(Duration::from_secs(60)),
        "the third failure locks"
    );
    let left = b.sign_in_lock(&k1).await.unwrap().unwrap();
    assert!(
        left > Duration::from_secs(55) && left <= Duration::from_secs(60),
        "{left:?}"
    );
    assert_eq!(
        a.sign_in_lock(&k2).await.unwrap(),
        None,
        "other keys are free"
    );
    // Each further failure doubles the lock.
    assert_eq!(
        b.fail_sign_in(k1, &rule).await.unwrap(),
        Some(Duration::from_secs(120))
    );
    // Cleared on one node, cleared for all.
    a.clear_sign_in(&k1).await.unwrap();
    assert_eq!(b.sign_in_lock(&k1).await.unwrap(), None);
    assert_eq!(b.fail_sign_in(k1, &rule).await.unwrap(), None, "from zero");
    // Twenty failures at once from both nodes are counted one by one: the
    // locks they set are the 3rd to the 20th, each a doubling of the last
    // (up to the rule's maximum), none counted twice.
    let mut calls = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.push(tokio::spawn(
            async move { store.fail_sign_in(k2, &rule).await },
        ));
    }
    let mut locks = Vec::new();
    for c in calls {
        if let Some(d) = c.await.unwrap().unwrap() {
            locks.push(d);
        }
    }
    locks.sort();
    let want: Vec<Duration> = (0..18)
        .map(|n| (Duration::from_secs(60) * (1u32 << n)).min(rule.max))
        .collect();
    assert_eq!(locks, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sign_in_failures_keep_the_contract() {
    let store: Arc<dyn SessionStore> = Arc::new(pacs_core::sessions::MemorySessions::new());
    sign_in_failures_contract(store.clone(), store).await;
}
