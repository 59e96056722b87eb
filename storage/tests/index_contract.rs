//! The contract of the `Index` port, run against every engine: the sled
//! index and the PostgreSQL index (on a throwaway cluster).
//!
//! A few thousand synthetic instances come from a seeded generator. Every
//! expected answer is computed from that dataset alone, with the pure
//! matcher of `pacs_core::query` (`Query::matches`, the code C-FIND and
//! QIDO-RS use) and the documented order (patients by name; studies newest
//! first; then series and instances by number), never from an engine.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use pacs_core::matching::fold_text;
use pacs_core::ports::{Index, IndexPut, IndexStats, JournalEntry};
use pacs_core::query::{Level, Match, Query};
use pacs_core::records::{
    patient_key, InstanceAttributes, InstanceRecord, PatientRecord, SeriesRecord, StudyRecord,
};
use pacs_core::Uid;
use pacs_testkit::Rng;

const FAMILY: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Müller", "O_Brien", "Smith", "Đặng",
];
const GIVEN: &[&str] = &[
    "Văn An",
    "Thị Bình",
    "Minh",
    "Anna",
    "José",
    "Zoë",
    "Quốc Bảo",
];
const MODALITIES: &[&str] = &["CT", "MR", "CR", "US", "DX", "SR"];
const CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.1",
];
const ROOT: &str = "1.2.826.0.1.3680043.10.1138";

fn uid(s: String) -> Uid {
    Uid::parse(&s).unwrap()
}

/// The synthetic archive: `patients` patients with 1–3 studies each, 1–4
/// series a study, 1–12 instances a series.
fn dataset(seed: u64, patients: u64) -> Vec<InstanceAttributes> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for p in 1..=patients {
        let name = format!(
            "{}^{}",
            FAMILY[rng.below(FAMILY.len() as u64) as usize],
            GIVEN[rng.below(GIVEN.len() as u64) as usize]
        );
        let pid = format!("PID-{p:05}");
        let issuer = if rng.below(4) == 0 { "HOSP_B" } else { "" };
        let patient = PatientRecord {
            patient_id: pid.clone(),
            issuer_of_patient_id: issuer.into(),
            patient_name: name.clone(),
            patient_birth_date: format!(
                "19{:02}0{}1{}",
                40 + rng.below(60),
                1 + rng.below(9),
                rng.below(9)
            ),
            patient_sex: ["M", "F", "O"][rng.below(3) as usize].into(),
            other_patient_ids: Vec::new(),
            num_studies: 0,
            num_series: 0,
            num_instances: 0,
        };
        for s in 1..=1 + rng.below(3) {
            let study_uid = uid(format!("{ROOT}.{seed}.{p}.{s}"));
            let date = format!(
                "20{:02}{:02}{:02}",
                18 + rng.below(7),
                1 + rng.below(12),
                1 + rng.below(28)
            );
            let study = StudyRecord {
                study_instance_uid: study_uid.clone(),
                patient_key: patient_key(issuer, &pid),
                patient_id: pid.clone(),
                issuer_of_patient_id: issuer.into(),
                patient_name: name.clone(),
                patient_birth_date: patient.patient_birth_date.clone(),
                patient_sex: patient.patient_sex.clone(),
                patient_age: String::new(),
                study_date: date.clone(),
                study_time: format!("{:02}{:02}00", rng.below(24), rng.below(60)),
                accession_number: if rng.below(5) == 0 {
                    String::new()
                } else {
                    format!("ACC{:06}", rng.below(1_000_000))
                },
                referring_physician_name: String::new(),
                study_description: ["HEAD", "CHEST PA", "ABDOMEN", "Knee left"]
                    [rng.below(4) as usize]
                    .into(),
                study_id: s.to_string(),
                institution_name: "Bệnh viện".into(),
                timezone_offset_from_utc: String::new(),
                modalities: BTreeMap::new(),
                sop_classes: BTreeMap::new(),
                num_series: 0,
                num_instances: 0,
            };
            for se in 1..=1 + rng.below(4) {
                let series_uid = uid(format!("{study_uid}.{se}"));
                let series = SeriesRecord {
                    series_instance_uid: series_uid.clone(),
                    study_instance_uid: study_uid.clone(),
                    modality: MODALITIES[rng.below(MODALITIES.len() as u64) as usize].into(),
                    series_number: se.to_string(),
                    series_description: String::new(),
                    series_date: date.clone(),
                    series_time: String::new(),
                    body_part_examined: String::new(),
                    performed_procedure_step_start_date: String::new(),
                    performed_procedure_step_start_time: String::new(),
                    request_attributes: Vec::new(),
                    timezone_offset_from_utc: String::new(),
                    num_instances: 0,
                };
                for i in 1..=1 + rng.below(12) {
                    let sop = uid(format!("{series_uid}.{i}"));
                    let class = CLASSES[rng.below(CLASSES.len() as u64) as usize];
                    let instance = InstanceRecord {
                        sop_instance_uid: sop.clone(),
                        sop_class_uid: uid(class.into()),
                        series_instance_uid: series_uid.clone(),
                        study_instance_uid: study_uid.clone(),
                        instance_number: i.to_string(),
                        rows: Some(512),
                        columns: Some(512),
                        bits_allocated: Some(16),
                        number_of_frames: None,
                        photometric_interpretation: "MONOCHROME2".into(),
                        content_date: date.clone(),
                        content_time: String::new(),
                        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                        blob_key: format!("{study_uid}/{series_uid}/{sop}.dcm"),
                        size: 1000 + rng.below(500_000),
                        sha256: format!("{:064x}", rng.below(u64::MAX)),
                        pixel_data_offset: Some(1024),
                        received_at_ms: 1_700_000_000_000 + rng.below(1_000_000),
                    };
                    let metadata = format!(
                        "{{\"00080018\":{{\"vr\":\"UI\",\"Value\":[\"{sop}\"]}},\"n\":\"{name}\"}}"
                    )
                    .into_bytes();
                    out.push(InstanceAttributes {
                        patient: patient.clone(),
                        study: study.clone(),
                        series: series.clone(),
                        instance,
                        metadata,
                    });
                }
            }
        }
    }
    out
}

/// What the index must hold for a set of instances: the records with
/// every counter computed here.
#[derive(Default)]
struct Model {
    patients: BTreeMap<String, PatientRecord>,
    studies: BTreeMap<String, StudyRecord>,
    series: BTreeMap<String, SeriesRecord>,
    instances: BTreeMap<String, InstanceRecord>,
}

impl Model {
    fn of(attrs: &[InstanceAttributes]) -> Model {
        let mut m = Model::default();
        for a in attrs {
            let i = &a.instance;
            let series_uid = i.series_instance_uid.to_string();
            let study_uid = i.study_instance_uid.to_string();
            let new_series = !m.series.contains_key(&series_uid);
            let new_study = !m.studies.contains_key(&study_uid);
            let series = m.series.entry(series_uid).or_insert_with(|| {
                let mut s = a.series.clone();
                s.num_instances = 0;
                s
            });
            series.num_instances += 1;
            let study = m.studies.entry(study_uid).or_insert_with(|| {
                let mut s = a.study.clone();
                s.num_series = 0;
                s.num_instances = 0;
                s
            });
            study.num_instances += 1;
            *study
                .sop_classes
                .entry(i.sop_class_uid.to_string())
                .or_insert(0) += 1;
            if new_series {
                study.num_series += 1;
                *study
                    .modalities
                    .entry(a.series.modality.clone())
                    .or_insert(0) += 1;
            }
            let patient = m
                .patients
                .entry(study.patient_key.clone())
                .or_insert_with(|| {
                    let mut p = a.patient.clone();
                    p.num_studies = 0;
                    p.num_series = 0;
                    p.num_instances = 0;
                    p
                });
            patient.num_instances += 1;
            patient.num_series += u32::from(new_series);
            patient.num_studies += u32::from(new_study);
            m.instances
                .insert(i.sop_instance_uid.to_string(), i.clone());
        }
        m
    }

    fn stats(&self) -> IndexStats {
        IndexStats {
            patients: self.patients.len() as u64,
            studies: self.studies.len() as u64,
            series: self.series.len() as u64,
            instances: self.instances.len() as u64,
            total_bytes: self.instances.values().map(|i| i.size).sum(),
        }
    }

    /// Every row of a level, in the documented order.
    fn rows(&self, level: Level) -> Vec<Match> {
        let date_key = |s: &StudyRecord| {
            let d = |v: &str, n| {
                v.chars()
                    .filter(char::is_ascii_digit)
                    .take(n)
                    .collect::<String>()
            };
            format!(
                "{:0<8}{:0<6}\u{0}{}",
                d(&s.study_date, 8),
                d(&s.study_time, 6),
                s.study_instance_uid
            )
        };
        let num = |s: &str| s.trim().parse::<i64>().unwrap_or(i64::MAX);
        let study_of = |uid: &Uid| self.studies.get(uid.as_str()).cloned();
        let mut rows: Vec<Match> = match level {
            Level::Patient => self
                .patients
                .values()
                .map(|p| Match {
                    patient: Some(p.clone()),
                    ..Match::default()
                })
                .collect(),
            Level::Study => self
                .studies
                .values()
                .map(|s| Match {
                    study: Some(s.clone()),
                    ..Match::default()
                })
                .collect(),
            Level::Series => self
                .series
                .values()
                .map(|s| Match {
                    study: study_of(&s.study_instance_uid),
                    series: Some(s.clone()),
                    ..Match::default()
                })
                .collect(),
            Level::Instance => self
                .instances
                .values()
                .map(|i| Match {
                    study: study_of(&i.study_instance_uid),
                    series: self.series.get(i.series_instance_uid.as_str()).cloned(),
                    instance: Some(i.clone()),
                    ..Match::default()
                })
                .collect(),
        };
        rows.sort_by_cached_key(|m| {
            (
                m.patient.as_ref().map(|p| {
                    (
                        p.patient_name.clone(),
                        patient_key(&p.issuer_of_patient_id, &p.patient_id),
                    )
                }),
                std::cmp::Reverse(m.study.as_ref().map(date_key)),
                m.series.as_ref().map(|s| num(&s.series_number)),
                m.instance.as_ref().map(|i| num(&i.instance_number)),
            )
        });
        rows
    }

    /// The answer to `q`: matching rows, paged, and the total.
    fn find(&self, q: &Query) -> (Vec<Match>, usize) {
        let all: Vec<Match> = self
            .rows(q.level)
            .into_iter()
            .filter(|r| q.matches(r))
            .collect();
        let total = all.len();
        let page = all
            .into_iter()
            .skip(q.offset)
            .take(q.limit.unwrap_or(usize::MAX))
            .collect();
        (page, total)
    }
}

fn query(level: Level, keys: &[(u32, &str)], fuzzy: bool) -> Query {
    let mut q = Query::new(level);
    for (tag, value) in keys {
        q.add_key(*tag, value).unwrap();
    }
    q.fuzzy = fuzzy;
    q
}

/// The queries every engine answers, from values found in the dataset.
fn queries(m: &Model) -> Vec<Query> {
    let study = m.studies.values().nth(m.studies.len() / 3).unwrap();
    let other = m.studies.values().nth(m.studies.len() / 2).unwrap();
    let series = m.series.values().nth(m.series.len() / 4).unwrap();
    let instance = m.instances.values().nth(m.instances.len() / 5).unwrap();
    let study_list = format!("{}\\{}", study.study_instance_uid, other.study_instance_uid);
    let accession = m
        .studies
        .values()
        .map(|s| s.accession_number.as_str())
        .find(|a| !a.is_empty())
        .unwrap()
        .to_owned();
    let pid = study.patient_id.clone();
    let first_name = fold_text(study.patient_name.split('^').next().unwrap());
    let sop = instance.sop_instance_uid.to_string();
    let su = series.series_instance_uid.to_string();
    let st = instance.study_instance_uid.to_string();
    let name_prefix = format!("{}*", &first_name[..2]);
    type Spec = (Level, Vec<(u32, String)>, bool);
    let specs: Vec<Spec> = vec![
        (Level::Patient, vec![], false),
        (Level::Patient, vec![(0x0010_0020, pid.clone())], false),
        (
            Level::Patient,
            vec![(0x0010_0010, name_prefix.clone())],
            false,
        ),
        (Level::Study, vec![], false),
        (Level::Study, vec![(0x0010_0020, pid.clone())], false),
        (Level::Study, vec![(0x0010_0020, "PID-000*".into())], false),
        (
            Level::Study,
            vec![(0x0010_0010, name_prefix.clone())],
            false,
        ),
        // Name-only searches (sled plans them from its name entries).
        (Level::Study, vec![(0x0010_0010, "Nguyễn*".into())], false),
        (Level::Study, vec![(0x0010_0010, "ng*".into())], false),
        // Name prefixes: one character, past the 6 the prefix entries
        // keep, and across a component separator.
        (Level::Study, vec![(0x0010_0010, "L*".into())], false),
        (Level::Study, vec![(0x0010_0010, "Nguyễn^V*".into())], false),
        (Level::Study, vec![(0x0010_0010, "Lê^*".into())], false),
        (
            Level::Study,
            vec![(0x0010_0010, study.patient_name.clone())],
            false,
        ),
        (
            Level::Study,
            vec![
                (0x0010_0010, name_prefix.clone()),
                (0x0008_1030, String::new()),
            ],
            false,
        ),
        (Level::Study, vec![(0x0010_0010, "nguyen".into())], true),
        (Level::Study, vec![(0x0010_0010, "van an".into())], true),
        (Level::Study, vec![(0x0010_0010, "*BINH*".into())], false),
        (
            Level::Study,
            vec![(0x0008_0020, "20200101-20211231".into())],
            false,
        ),
        (Level::Study, vec![(0x0008_0020, "-20190630".into())], false),
        (Level::Study, vec![(0x0008_0061, "CT".into())], false),
        (
            Level::Study,
            vec![
                (0x0008_0061, "MR\\US".into()),
                (0x0008_0020, "20220101-".into()),
            ],
            false,
        ),
        (
            Level::Study,
            vec![
                (0x0008_0061, "MR".into()),
                (0x0008_0020, "20200101-20211231".into()),
            ],
            false,
        ),
        (
            Level::Study,
            vec![
                (0x0008_0061, "CT\\SR".into()),
                (0x0008_0020, "-20200630".into()),
                (0x0010_0010, String::new()),
            ],
            false,
        ),
        (Level::Study, vec![(0x0008_0050, accession.clone())], false),
        (Level::Study, vec![(0x0008_0050, "ACC1*".into())], false),
        (Level::Study, vec![(0x0020_000D, study_list)], false),
        (Level::Study, vec![(0x0008_1030, "*CHEST*".into())], false),
        (
            Level::Study,
            vec![(0x0010_0021, "HOSP_B".into()), (0x0010_0040, "F".into())],
            false,
        ),
        (Level::Series, vec![], false),
        (Level::Series, vec![(0x0008_0060, "CT".into())], false),
        (Level::Series, vec![(0x0020_000D, st.clone())], false),
        (
            Level::Series,
            vec![(0x0010_0020, pid.clone()), (0x0008_0060, "MR".into())],
            false,
        ),
        (Level::Series, vec![(0x0020_000E, su.clone())], false),
        (Level::Instance, vec![], false),
        (Level::Instance, vec![(0x0020_000E, su.clone())], false),
        (
            Level::Instance,
            vec![(0x0020_000D, st.clone()), (0x0008_0018, sop)],
            false,
        ),
        (
            Level::Instance,
            vec![(0x0020_000D, st), (0x0008_0016, CLASSES[1].into())],
            false,
        ),
        (
            Level::Instance,
            vec![(0x0008_0020, "20240101-".into()), (0x0020_0013, "3".into())],
            false,
        ),
    ];
    let mut out = Vec::new();
    for (level, keys, fuzzy) in specs {
        let keys: Vec<(u32, &str)> = keys.iter().map(|(t, v)| (*t, v.as_str())).collect();
        for (offset, limit) in [(0, None), (0, Some(10)), (7, Some(5)), (100_000, Some(3))] {
            let mut q = query(level, &keys, fuzzy);
            q.offset = offset;
            q.limit = limit;
            out.push(q);
        }
    }
    out
}

async fn fill(index: &Arc<dyn Index>, attrs: &[InstanceAttributes], tasks: usize) {
    let chunks: Vec<Vec<InstanceAttributes>> = attrs
        .chunks(attrs.len().div_ceil(tasks).max(1))
        .map(<[InstanceAttributes]>::to_vec)
        .collect();
    let mut handles = Vec::new();
    for chunk in chunks {
        let index = index.clone();
        handles.push(tokio::spawn(async move {
            for a in chunk {
                assert_eq!(index.put(a).await.unwrap(), IndexPut::Inserted);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    index.flush().await.unwrap();
}

/// Every query's page and total, and the records by UID, as the model says.
async fn check_answers(index: &Arc<dyn Index>, m: &Model, what: &str) {
    assert_eq!(index.stats().await.unwrap(), m.stats(), "{what}: stats");
    for q in queries(m) {
        let got = index.find(&q).await.unwrap();
        let (page, total) = m.find(&q);
        let keys: Vec<String> = q
            .keys
            .iter()
            .map(|k| format!("{}={}", k.attribute.keyword, k.raw))
            .collect();
        assert_eq!(
            got.total, total,
            "{what}: total of {:?} {keys:?} offset {} limit {:?}",
            q.level, q.offset, q.limit
        );
        assert!(
            got.matches == page,
            "{what}: rows of {:?} {keys:?} offset {} limit {:?}: got {} rows, want {}",
            q.level,
            q.offset,
            q.limit,
            got.matches.len(),
            page.len()
        );
    }
    // Paging through the study list gives every study once, in order.
    let mut paged = Vec::new();
    loop {
        let mut q = Query::new(Level::Study);
        q.offset = paged.len();
        q.limit = Some(37);
        let got = index.find(&q).await.unwrap();
        if got.matches.is_empty() {
            break;
        }
        paged.extend(got.matches);
    }
    assert!(paged == m.rows(Level::Study), "{what}: paged study list");
    for s in m.studies.values().step_by(7) {
        let got = index.study(&s.study_instance_uid).await.unwrap();
        assert_eq!(got.as_ref(), Some(s), "{what}: study record");
        let mut want: Vec<&InstanceRecord> = m
            .instances
            .values()
            .filter(|i| i.study_instance_uid == s.study_instance_uid)
            .collect();
        want.sort_by(|a, b| {
            (&a.series_instance_uid, &a.sop_instance_uid)
                .cmp(&(&b.series_instance_uid, &b.sop_instance_uid))
        });
        let got = index
            .instances_of_study(&s.study_instance_uid)
            .await
            .unwrap();
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            want,
            "{what}: instances of study"
        );
    }
    for s in m.series.values().step_by(11) {
        assert_eq!(
            index.series(&s.series_instance_uid).await.unwrap().as_ref(),
            Some(s),
            "{what}: series record"
        );
    }
}

/// Metadata in instance-number order for a series, and per instance.
async fn check_metadata(index: &Arc<dyn Index>, attrs: &[InstanceAttributes], m: &Model) {
    for s in m.series.values().step_by(13) {
        let mut want: Vec<(i64, &InstanceAttributes)> = attrs
            .iter()
            .filter(|a| {
                a.instance.series_instance_uid == s.series_instance_uid
                    && m.instances
                        .contains_key(a.instance.sop_instance_uid.as_str())
            })
            .map(|a| (a.instance.instance_number.parse().unwrap(), a))
            .collect();
        want.sort_by_key(|w| w.0);
        let want: Vec<Vec<u8>> = want.iter().map(|w| w.1.metadata.clone()).collect();
        assert_eq!(
            index
                .metadata_of_series(&s.series_instance_uid)
                .await
                .unwrap(),
            want
        );
    }
    for a in attrs.iter().step_by(17) {
        let sop = &a.instance.sop_instance_uid;
        let want = m
            .instances
            .contains_key(sop.as_str())
            .then(|| a.metadata.clone());
        assert_eq!(index.metadata(sop).await.unwrap(), want);
        assert_eq!(
            index.instance(sop).await.unwrap().as_ref(),
            m.instances.get(sop.as_str())
        );
    }
}

/// The whole contract on one engine (`index` starts empty).
async fn contract(index: Arc<dyn Index>) {
    let attrs = dataset(7, 150);
    assert!(attrs.len() > 1500, "dataset of {} instances", attrs.len());
    fill(&index, &attrs, 8).await;
    let model = Model::of(&attrs);
    check_answers(&index, &model, "filled").await;
    check_metadata(&index, &attrs, &model).await;
    let mut all = index.all_instances().await.unwrap();
    all.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
    assert_eq!(all, model.instances.values().cloned().collect::<Vec<_>>());
    // The paged walk gives them all once, in UID order, page by page.
    for limit in [1, 97, all.len(), all.len() + 5] {
        let mut walked: Vec<InstanceRecord> = Vec::new();
        let mut after: Option<Uid> = None;
        loop {
            let page = index.instances_after(after.as_ref(), limit).await.unwrap();
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            after = Some(last.sop_instance_uid.clone());
            walked.extend(page);
        }
        assert_eq!(walked, all, "walk in pages of {limit}");
    }

    // Deletes: every instance of some studies (studies and patients go),
    // some series whole, single instances; each journals its blob.
    let mut rng = Rng::new(99);
    let mut kept = Vec::new();
    let mut removed = 0;
    for a in &attrs {
        let study_gone = a.instance.study_instance_uid.as_str().ends_with(".2");
        let series_gone = a.instance.series_instance_uid.as_str().ends_with(".3");
        if study_gone || series_gone || rng.below(10) == 0 {
            let (old, id) = index
                .remove(&a.instance.sop_instance_uid)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(old, a.instance);
            let journal = index.journal().await.unwrap();
            assert!(journal.contains(&(
                id,
                JournalEntry::Delete {
                    key: a.instance.blob_key.clone()
                }
            )));
            index.journal_clear(id).await.unwrap();
            removed += 1;
        } else {
            kept.push(a.clone());
        }
    }
    assert!(removed > 200);
    assert!(index.journal().await.unwrap().is_empty());
    let gone = attrs.iter().find(|a| !kept.contains(a)).unwrap();
    assert!(index
        .remove(&gone.instance.sop_instance_uid)
        .await
        .unwrap()
        .is_none());
    let model = Model::of(&kept);
    check_answers(&index, &model, "after deletes").await;
    check_metadata(&index, &attrs, &model).await;

    // A replacement returns the old record and moves the byte count.
    let mut changed = kept[5].clone();
    changed.instance.size += 4096;
    changed.instance.sha256 = "ab".repeat(32);
    match index.put(changed.clone()).await.unwrap() {
        IndexPut::Replaced(old) => assert_eq!(*old, kept[5].instance),
        other => panic!("replacing gave {other:?}"),
    }
    kept[5] = changed;
    let model = Model::of(&kept);
    assert_eq!(index.stats().await.unwrap(), model.stats());

    // A study's rows replaced at once (a patient correction or merge
    // applied): it answers under the new patient, the old one loses it,
    // and the counters stay exact.
    let moved = kept[0].instance.study_instance_uid.clone();
    let issuer = kept[0].patient.issuer_of_patient_id.clone();
    let mut rows = Vec::new();
    for a in kept.iter_mut() {
        if a.instance.study_instance_uid == moved {
            a.patient.patient_id = "PID-MOVED".into();
            a.patient.patient_name = "Lê^Văn Mới".into();
            a.study.patient_id = "PID-MOVED".into();
            a.study.patient_name = "Lê^Văn Mới".into();
            a.study.patient_key = patient_key(&issuer, "PID-MOVED");
            rows.push(a.clone());
        }
    }
    assert!(!rows.is_empty());
    index.replace_study(&moved, rows).await.unwrap();
    let model = Model::of(&kept);
    check_answers(&index, &model, "after a study's rows were replaced").await;
    assert_eq!(index.stats().await.unwrap(), model.stats());
    let mut foreign = kept[1].clone();
    foreign.instance.study_instance_uid = uid(format!("{ROOT}.999"));
    assert!(index.replace_study(&moved, vec![foreign]).await.is_err());

    // Landing marks, the journal and the clean-shutdown flag.
    let mut landed = kept[9].clone();
    landed.instance.received_at_ms += 1;
    index.put_landing(landed.clone()).await.unwrap();
    kept[9] = landed;
    assert_eq!(
        index.landing_marks().await.unwrap(),
        vec![kept[9].instance.sop_instance_uid.clone()]
    );
    index
        .clear_landing_marks(&[kept[9].instance.sop_instance_uid.clone()])
        .await
        .unwrap();
    assert!(index.landing_marks().await.unwrap().is_empty());
    let entry = JournalEntry::Replace {
        staging: "staging/00000000000000000000000000000001.dcm".into(),
        target: kept[0].instance.blob_key.clone(),
        old: kept[0].instance.blob_key.clone(),
    };
    let id = index.journal_add(entry.clone()).await.unwrap();
    assert_eq!(index.journal().await.unwrap(), vec![(id, entry.clone())]);
    index.set_clean_shutdown(true).await.unwrap();
    assert!(index.was_clean_shutdown().await.unwrap());
    index.set_clean_shutdown(false).await.unwrap();
    assert!(!index.was_clean_shutdown().await.unwrap());

    // Clear, then reindex: the same answers; the journal survives.
    index.clear().await.unwrap();
    assert_eq!(index.stats().await.unwrap(), IndexStats::default());
    assert!(index
        .find(&Query::new(Level::Study))
        .await
        .unwrap()
        .matches
        .is_empty());
    assert_eq!(index.journal().await.unwrap(), vec![(id, entry)]);
    index.journal_clear(id).await.unwrap();
    fill(&index, &kept, 4).await;
    check_answers(&index, &Model::of(&kept), "reindexed").await;
}

/// Many concurrent puts of the instances of one study, through
/// `handles` (one per node), then concurrent removes of half of them:
/// every counter is exact.
async fn concurrent_counters(handles: Vec<Arc<dyn Index>>) {
    let mut attrs = dataset(3, 1);
    attrs.truncate(1);
    let template = attrs.remove(0);
    let mut all = Vec::new();
    for se in 1..=4u32 {
        for i in 1..=40u32 {
            let mut a = template.clone();
            let study = a.instance.study_instance_uid.clone();
            a.series.series_instance_uid = uid(format!("{study}.9{se}"));
            a.series.series_number = (90 + se).to_string();
            a.series.modality = MODALITIES[se as usize % 3].into();
            a.instance.series_instance_uid = a.series.series_instance_uid.clone();
            a.instance.sop_instance_uid = uid(format!("{study}.9{se}.{i}"));
            a.instance.instance_number = i.to_string();
            a.instance.sop_class_uid = uid(CLASSES[(i % 3) as usize].into());
            a.instance.size = u64::from(1000 + i);
            all.push(a);
        }
    }
    let mut tasks = Vec::new();
    for (n, a) in all.iter().cloned().enumerate() {
        let index = handles[n % handles.len()].clone();
        tasks.push(tokio::spawn(async move { index.put(a).await.unwrap() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), IndexPut::Inserted);
    }
    let model = Model::of(&all);
    let index = &handles[0];
    assert_eq!(index.stats().await.unwrap(), model.stats());
    let study = &all[0].instance.study_instance_uid;
    assert_eq!(
        index.study(study).await.unwrap().as_ref(),
        model.studies.get(study.as_str())
    );
    let (gone, kept): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|a| {
        a.instance.instance_number.parse::<u32>().unwrap() % 2 == 0
            || a.instance.series_instance_uid.as_str().ends_with(".91")
    });
    let mut tasks = Vec::new();
    for (n, a) in gone.into_iter().enumerate() {
        let index = handles[n % handles.len()].clone();
        tasks.push(tokio::spawn(async move {
            index
                .remove(&a.instance.sop_instance_uid)
                .await
                .unwrap()
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let model = Model::of(&kept);
    assert_eq!(index.stats().await.unwrap(), model.stats());
    assert_eq!(
        index.study(study).await.unwrap().as_ref(),
        model.studies.get(study.as_str())
    );
    for s in model.series.values() {
        assert_eq!(
            index.series(&s.series_instance_uid).await.unwrap().as_ref(),
            Some(s)
        );
    }
    assert!(index
        .series(&uid(format!("{study}.91")))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_index_keeps_the_contract() {
    contract(Arc::new(storage::SledIndex::temporary().unwrap())).await;
}

/// Benchmark (ignored): what the technologist's page reads of the index on
/// a day of 200 CT exams of 500 images (100,000 instances): each exam's
/// instances, as it did before, against each study's record (its count of
/// instances), as it does now.
/// `cargo test -p storage --release --test index_contract technologist_day_cost -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn technologist_day_cost() {
    let index = Arc::new(storage::SledIndex::temporary().unwrap());
    let template = dataset(7, 1).remove(0);
    let (exams, series, images) = (200u32, 2u32, 250u32);
    let mut tasks = Vec::new();
    for worker in 0..4u32 {
        let (index, template) = (index.clone(), template.clone());
        tasks.push(tokio::spawn(async move {
            for e in (0..exams).filter(|e| e % 4 == worker) {
                let study = uid(format!("{ROOT}.77.{e}"));
                for se in 0..series {
                    let series_uid = uid(format!("{ROOT}.77.{e}.{se}"));
                    for i in 0..images {
                        let sop = uid(format!("{ROOT}.77.{e}.{se}.{i}"));
                        let mut a = template.clone();
                        a.study.study_instance_uid = study.clone();
                        a.series.study_instance_uid = study.clone();
                        a.series.series_instance_uid = series_uid.clone();
                        a.instance.study_instance_uid = study.clone();
                        a.instance.series_instance_uid = series_uid.clone();
                        a.instance.sop_instance_uid = sop.clone();
                        a.instance.blob_key = format!("{study}/{series_uid}/{sop}.dcm");
                        a.metadata =
                            format!("{{\"00080018\":{{\"vr\":\"UI\",\"Value\":[\"{sop}\"]}}}}")
                                .into_bytes();
                        assert_eq!(index.put(a).await.unwrap(), IndexPut::Inserted);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let studies: Vec<Uid> = (0..exams).map(|e| uid(format!("{ROOT}.77.{e}"))).collect();
    let total = u64::from(exams * series * images);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let mut n = 0u64;
        for s in &studies {
            n += index.instances_of_study(s).await.unwrap().len() as u64;
        }
        before.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(n, total);
        let t = std::time::Instant::now();
        let mut n = 0u64;
        for s in &studies {
            n += u64::from(index.study(s).await.unwrap().unwrap().num_instances);
        }
        after.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(n, total);
    }
    println!(
        "{exams} exams, {total} instances: every exam's instances read {:.1} ms, \
         each study's record {:.2} ms (medians of 5)",
        median(before),
        median(after)
    );
}

/// The sled index on disk, its instance locators moved into runs and the
/// runs merged every few milliseconds while the whole contract runs
/// (puts, removes, replacements, a clear and a refill).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_index_keeps_the_contract_with_its_locator_in_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let index = storage::SledIndex::open(&dir.path().join("index")).unwrap();
    index.set_locator_move_at(0);
    let stop = Arc::new(AtomicBool::new(false));
    let upkeep = {
        let (index, stop) = (index.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut rounds, mut most) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                index.maintain_locators(true).unwrap();
                most = most.max(index.locator_runs().unwrap().len());
                rounds += 1;
                std::thread::sleep(std::time::Duration::from_millis(15));
            }
            (rounds, most)
        })
    };
    contract(Arc::new(index.clone())).await;
    stop.store(true, Ordering::SeqCst);
    let (rounds, most) = upkeep.join().unwrap();
    assert!(rounds > 10, "{rounds} upkeep rounds");
    assert!(most >= 2, "at most {most} runs at once: nothing was merged");
    // Everything in runs now: the walk and the lookups still agree.
    index.maintain_locators(true).unwrap();
    let runs = index.locator_runs().unwrap();
    let held: u64 = runs.iter().map(|r| r.1).sum();
    let stats = index.stats().await.unwrap();
    assert!(
        held >= stats.instances,
        "{held} entries for {} instances",
        stats.instances
    );
    let mut all = index.all_instances().await.unwrap();
    all.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
    assert_eq!(all.len() as u64, stats.instances);
    assert_eq!(index.instances_after(None, usize::MAX).await.unwrap(), all);
    for i in all.iter().step_by(17) {
        assert_eq!(
            index.instance(&i.sop_instance_uid).await.unwrap().as_ref(),
            Some(i)
        );
    }
}

/// Locator runs outlive a reopen; a run damaged on disk is noticed and the
/// locator rebuilt from the records, whether the damage is in a block
/// (found by a read) or in the block index (found at open).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_locator_runs_survive_a_reopen_and_a_damaged_run_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let mut attrs = dataset(11, 60);
    // Three quarters in the first run, so that the second (the last
    // quarter and the tombstones) stays apart from it.
    let half = attrs.len() * 3 / 4;
    let mut rng = Rng::new(5);
    let mut kept = Vec::new();
    {
        let index = storage::SledIndex::open(&path).unwrap();
        index.set_locator_move_at(0);
        let idx: Arc<dyn Index> = Arc::new(index.clone());
        fill(&idx, &attrs[..half], 4).await;
        index.maintain_locators(true).unwrap();
        assert_eq!(index.locator_runs().unwrap().len(), 1);
        fill(&idx, &attrs[half..], 4).await;
        // Removes of instances in the run and of recent ones; one removed
        // instance is stored again.
        for a in &attrs {
            if rng.below(12) == 0 {
                idx.remove(&a.instance.sop_instance_uid)
                    .await
                    .unwrap()
                    .unwrap();
            } else {
                kept.push(a.clone());
            }
        }
        // One removed from the first run is stored again, in another
        // series: the newer locator must win over the run's.
        let mut back = attrs[..half]
            .iter()
            .find(|a| !kept.contains(a))
            .unwrap()
            .clone();
        let host = kept
            .iter()
            .find(|k| k.instance.series_instance_uid != back.instance.series_instance_uid)
            .unwrap();
        back.patient = host.patient.clone();
        back.study = host.study.clone();
        back.series = host.series.clone();
        back.instance.series_instance_uid = host.instance.series_instance_uid.clone();
        back.instance.study_instance_uid = host.instance.study_instance_uid.clone();
        back.instance.instance_number = "999".into();
        assert_eq!(idx.put(back.clone()).await.unwrap(), IndexPut::Inserted);
        for a in attrs.iter_mut() {
            if a.instance.sop_instance_uid == back.instance.sop_instance_uid {
                *a = back.clone();
            }
        }
        kept.push(back);
        index.maintain_locators(true).unwrap();
        assert_eq!(index.locator_runs().unwrap().len(), 2);
        let model = Model::of(&kept);
        check_answers(&idx, &model, "locators in runs").await;
        check_metadata(&idx, &attrs, &model).await;
        idx.checkpoint().await.unwrap();
    }
    let model = Model::of(&kept);
    let walk = |index: Arc<dyn Index>| async move {
        let mut all = Vec::new();
        let mut after: Option<Uid> = None;
        loop {
            let page = index.instances_after(after.as_ref(), 50).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.sop_instance_uid.clone());
            all.extend(page);
        }
        all
    };
    let want: Vec<InstanceRecord> = model.instances.values().cloned().collect();
    let run_files = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(path.with_extension("locator"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    {
        let index = storage::SledIndex::open(&path).unwrap();
        assert!(!index.locator_runs().unwrap().is_empty());
        let idx: Arc<dyn Index> = Arc::new(index.clone());
        check_answers(&idx, &model, "reopened").await;
        check_metadata(&idx, &attrs, &model).await;
        assert_eq!(walk(idx.clone()).await, want);
    }
    // A changed byte in the newest run's first block.
    let newest = run_files().pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[40] ^= 0x04;
    std::fs::write(&newest, &bytes).unwrap();
    {
        let index = storage::SledIndex::open(&path).unwrap();
        index.set_locator_move_at(0);
        let idx: Arc<dyn Index> = Arc::new(index.clone());
        let mut failed = 0;
        for i in model.instances.values() {
            if idx.instance(&i.sop_instance_uid).await.is_err() {
                failed += 1;
            }
        }
        assert!(failed > 0, "no read met the damaged block");
        let before = run_files();
        index.maintain_locators(false).unwrap();
        // One run, new, in place of every damaged or not.
        assert_eq!(index.locator_runs().unwrap().len(), 1);
        let after = run_files();
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(!before.contains(&after[0]), "{before:?} {after:?}");
        check_answers(&idx, &model, "rebuilt after a damaged block").await;
        check_metadata(&idx, &attrs, &model).await;
        assert_eq!(walk(idx.clone()).await, want);
        index.maintain_locators(true).unwrap();
        assert!(!index.locator_runs().unwrap().is_empty());
        idx.checkpoint().await.unwrap();
    }
    // A changed byte in the block index: found at open, rebuilt there.
    let newest = run_files().pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n - 50] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();
    let before = run_files();
    let index = storage::SledIndex::open(&path).unwrap();
    assert_eq!(index.locator_runs().unwrap().len(), 1);
    let after = run_files();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(!before.contains(&after[0]), "{before:?} {after:?}");
    let idx: Arc<dyn Index> = Arc::new(index.clone());
    check_answers(&idx, &model, "rebuilt at open").await;
    check_metadata(&idx, &attrs, &model).await;
    assert_eq!(walk(idx).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_index_counters_stay_right_under_concurrent_stores() {
    let index: Arc<dyn Index> = Arc::new(storage::SledIndex::temporary().unwrap());
    concurrent_counters(vec![index]).await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use pacs_testkit::postgres::TestPostgres;
    use storage::PgIndex;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_index_keeps_the_contract() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("contract");
        contract(Arc::new(PgIndex::connect(&url, 8).await.unwrap())).await;
    }

    /// Two nodes (two pools on one database) store and delete the same
    /// study at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_index_counters_stay_right_under_concurrent_stores_from_two_nodes() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("counters");
        let a: Arc<dyn Index> = Arc::new(PgIndex::connect(&url, 8).await.unwrap());
        let b: Arc<dyn Index> = Arc::new(PgIndex::connect(&url, 8).await.unwrap());
        concurrent_counters(vec![a, b]).await;
    }

    /// A version-2 schema holding studies (before `study_name_leads` and
    /// `study_modalities`) is migrated when a node connects: both are
    /// written for the studies it holds, and every answer is still the
    /// model's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_index_of_schema_2_migrates_with_its_name_entries() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("schema2");
        let attrs = dataset(11, 40);
        {
            let index: Arc<dyn Index> = Arc::new(PgIndex::connect(&url, 4).await.unwrap());
            fill(&index, &attrs, 4).await;
        }
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        client
            .batch_execute(
                "DROP TABLE study_name_leads, study_modalities, patient_changes, patient_coercions, \
                 browser_sessions, browser_flows, jobs, sign_in_failures, mpps_accessions; \
                 UPDATE pacs_schema_version SET version = 2",
            )
            .await
            .unwrap();
        let index: Arc<dyn Index> = Arc::new(PgIndex::connect(&url, 4).await.unwrap());
        let v: i32 = client
            .query_one("SELECT version FROM pacs_schema_version", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, storage::pg_index::PG_SCHEMA_VERSION);
        let entries: i64 = client
            .query_one("SELECT count(*) FROM study_name_leads", &[])
            .await
            .unwrap()
            .get(0);
        assert!(entries > 0);
        let entries: i64 = client
            .query_one("SELECT count(*) FROM study_modalities", &[])
            .await
            .unwrap()
            .get(0);
        assert!(entries > 0);
        check_answers(&index, &Model::of(&attrs), "migrated from schema 2").await;
        drop(client);
        conn.abort();
    }

    /// A schema written by a newer build is refused with a message, and
    /// left as it was.
    #[tokio::test]
    async fn postgres_index_refuses_a_newer_schema() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let url = pg.create_database("newer");
        drop(PgIndex::connect(&url, 2).await.unwrap());
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        client
            .execute("UPDATE pacs_schema_version SET version = 99", &[])
            .await
            .unwrap();
        let err = PgIndex::connect(&url, 2).await.err().expect("refused");
        let msg = err.to_string();
        assert!(msg.contains("format version 99"), "{msg}");
        assert!(msg.contains("upgrade the pacs binary"), "{msg}");
        let v: i32 = client
            .query_one("SELECT version FROM pacs_schema_version", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, 99);
        drop(client);
        conn.abort();
    }
}
