//! `pacs bench-index`: fills an empty index with synthetic instances through
//! the real [`Index`] port (records and DICOM JSON as ingest builds them; no
//! pixel data, no blobs) and measures, at each checkpoint size, the insert
//! rate, the index's bytes per instance and the latency of the queries QIDO
//! and C-FIND run (the same `Index::find`).
//!
//! The data are a deterministic function of the seed: [`Generator`] gives
//! every study's shape, and [`Generator::expected`] the number of studies
//! each benchmark query must match after `n` instances, which the run checks
//! against what the index answers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{Datelike, NaiveDate};
use futures::stream::{self, StreamExt};
use pacs_core::dicom::parse_part10;
use pacs_core::query::{Level, Match, Query};
use pacs_core::records::{
    patient_key, InstanceAttributes, InstanceRecord, PatientRecord, SeriesRecord, StudyRecord,
};
use pacs_core::{BlobKey, Index, Limits, Uid};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::Config;

/// One modality's share of exams and the shape of its studies.
struct Modality {
    code: &'static str,
    /// Share of studies, per thousand.
    permille: u64,
    series: (u64, u64),
    per_series: (u64, u64),
    sop_class: &'static str,
    template: usize,
    /// Typical stored size of one instance (for `size`, not written).
    bytes: u64,
    descriptions: &'static [&'static str],
    body_part: &'static str,
}

/// The modality mix (shares add up to 1000).
const MODALITIES: &[Modality] = &[
    Modality {
        code: "CR",
        permille: 330,
        series: (1, 2),
        per_series: (1, 1),
        sop_class: "1.2.840.10008.5.1.4.1.1.1",
        template: T_CR,
        bytes: 8_000_000,
        descriptions: &["X quang ngực thẳng", "X quang cột sống thắt lưng"],
        body_part: "CHEST",
    },
    Modality {
        code: "DX",
        permille: 150,
        series: (1, 2),
        per_series: (1, 2),
        sop_class: "1.2.840.10008.5.1.4.1.1.1.1",
        template: T_CR,
        bytes: 10_000_000,
        descriptions: &["X quang khớp gối", "X quang bàn tay"],
        body_part: "EXTREMITY",
    },
    Modality {
        code: "US",
        permille: 250,
        series: (1, 1),
        per_series: (5, 40),
        sop_class: "1.2.840.10008.5.1.4.1.1.6.1",
        template: T_US,
        bytes: 400_000,
        descriptions: &["Siêu âm ổ bụng tổng quát", "Siêu âm tuyến giáp"],
        body_part: "ABDOMEN",
    },
    Modality {
        code: "CT",
        permille: 150,
        series: (2, 4),
        per_series: (40, 400),
        sop_class: "1.2.840.10008.5.1.4.1.1.2",
        template: T_CT,
        bytes: 525_000,
        descriptions: &[
            "CT sọ não không tiêm thuốc",
            "CT ngực liều thấp",
            "CT bụng có tiêm thuốc cản quang",
        ],
        body_part: "HEAD",
    },
    Modality {
        code: "MR",
        permille: 80,
        series: (5, 9),
        per_series: (20, 60),
        sop_class: "1.2.840.10008.5.1.4.1.1.4",
        template: T_MR,
        bytes: 140_000,
        descriptions: &["MRI sọ não", "MRI cột sống thắt lưng", "MRI khớp gối"],
        body_part: "BRAIN",
    },
    Modality {
        code: "MG",
        permille: 40,
        series: (1, 1),
        per_series: (4, 4),
        sop_class: "1.2.840.10008.5.1.4.1.1.1.2",
        template: T_CR,
        bytes: 25_000_000,
        descriptions: &["Chụp X quang tuyến vú hai bên"],
        body_part: "BREAST",
    },
];

const T_CT: usize = 0;
const T_MR: usize = 1;
const T_CR: usize = 2;
const T_US: usize = 3;

/// Sample objects whose headers give the DICOM JSON kept per instance, as
/// ingest builds it (`InstanceAttributes::from_header`).
const TEMPLATE_FILES: [&[u8]; 4] = [
    include_bytes!("../sample-data/studies/ct-phantom/1/0001.dcm"),
    include_bytes!("../sample-data/studies/mr-head/1/0001.dcm"),
    include_bytes!("../sample-data/studies/cr-chest/1/0001.dcm"),
    include_bytes!("../sample-data/studies/us-cine/1/0001.dcm"),
];

/// Vietnamese family names, weighted (per thousand) roughly as in the
/// population.
const VN_FAMILY: &[(&str, u64)] = &[
    ("Nguyễn", 380),
    ("Trần", 110),
    ("Lê", 95),
    ("Phạm", 70),
    ("Hoàng", 50),
    ("Huỳnh", 40),
    ("Phan", 45),
    ("Vũ", 40),
    ("Võ", 35),
    ("Đặng", 25),
    ("Bùi", 25),
    ("Đỗ", 20),
    ("Hồ", 20),
    ("Ngô", 15),
    ("Dương", 15),
    ("Lý", 15),
];
const VN_MIDDLE_M: &[&str] = &["Văn", "Hữu", "Đức", "Minh", "Quốc", "Thành"];
const VN_MIDDLE_F: &[&str] = &["Thị", "Ngọc", "Thu", "Thanh", "Mỹ", "Kim"];
const VN_GIVEN_M: &[&str] = &[
    "An", "Bình", "Cường", "Dũng", "Hải", "Hùng", "Khánh", "Long", "Nam", "Quân", "Sơn", "Tuấn",
    "Việt", "Phúc",
];
const VN_GIVEN_F: &[&str] = &[
    "Hà", "Hạnh", "Hoa", "Hương", "Lan", "Linh", "Mai", "Phương", "Thảo", "Trang", "Vy", "Yến",
    "Ánh", "Nhung",
];
/// Latin names with diacritics (foreign patients, 1 in 10).
const LATIN_FAMILY: &[&str] = &[
    "Müller",
    "García",
    "Dubois",
    "Søndergaard",
    "Łukasiewicz",
    "Nguyen",
    "Smith",
    "Pérez",
    "Nuñez",
    "Öztürk",
];
const LATIN_GIVEN: &[&str] = &[
    "José",
    "Renée",
    "Inés",
    "François",
    "Jürgen",
    "Zoë",
    "Anne",
    "John",
    "Björn",
    "Chloé",
];
const HOSPITALS: &[&str] = &[
    "Bệnh viện Đa khoa tỉnh",
    "Bệnh viện Đa khoa khu vực Bắc",
    "Trung tâm Y tế huyện Hòa Bình",
    "Bệnh viện Sản Nhi",
    "Trung tâm Y tế thị xã Đông Hải",
    "Bệnh viện Y học cổ truyền",
];

/// The first study day and the span of study dates.
const FIRST_DAY: (i32, u32, u32) = (2019, 1, 1);
const SPAN_DAYS: u64 = 8 * 365 + 2;
/// How far back (in studies) a returning patient's earlier study is.
const RETURN_WINDOW: u64 = 5000;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<'a>(list: &[&'a str], r: u64) -> &'a str {
    list[(r % list.len() as u64) as usize]
}

fn in_range(r: u64, (lo, hi): (u64, u64)) -> u64 {
    lo + r % (hi - lo + 1)
}

/// A synthetic patient.
#[derive(Debug, Clone)]
pub struct Patient {
    pub id: String,
    pub name: String,
    pub birth_date: String,
    pub sex: &'static str,
}

/// One study's shape: everything but the per-instance values.
#[derive(Debug, Clone)]
pub struct StudyShape {
    pub index: u64,
    pub patient: Patient,
    pub uid: String,
    pub date: String,
    pub time: String,
    pub accession: String,
    pub modality: usize,
    pub description: &'static str,
    pub institution: &'static str,
    pub referring: String,
    pub age: String,
    /// Instances of each series.
    pub series: Vec<u64>,
}

impl StudyShape {
    pub fn instances(&self) -> u64 {
        self.series.iter().sum()
    }
}

/// How the generated UIDs are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UidStyle {
    /// `2.25.<128-bit random>`, as many modalities write them: every new
    /// key lands anywhere in the index.
    #[default]
    Random,
    /// A fixed root, the level, then an increasing fixed-width number (as
    /// modalities that write root.date.time.counter do): new keys follow
    /// each other.
    Increasing,
}

/// The seeded source of studies.
#[derive(Debug, Clone, Copy)]
pub struct Generator {
    seed: u64,
    uids: UidStyle,
}

impl Generator {
    #[cfg(test)]
    pub fn new(seed: u64) -> Generator {
        Generator::with_uids(seed, UidStyle::Random)
    }

    pub fn with_uids(seed: u64, uids: UidStyle) -> Generator {
        Generator { seed, uids }
    }

    fn h(&self, k: u64, salt: u64) -> u64 {
        splitmix(splitmix(self.seed ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93)) ^ k)
    }

    fn uid(&self, k: u64, salt: u64) -> String {
        if self.uids == UidStyle::Increasing {
            // A leading 1 and fixed width: byte order is number order, and
            // no component starts with 0.
            return format!("1.2.3.4.5.6.7.8.{salt}.1{k:019}");
        }
        let hi = u128::from(self.h(k, salt) >> 1);
        let lo = u128::from(self.h(k, salt ^ 0x55));
        format!("2.25.{}", (hi << 64) | lo)
    }

    /// The patient of study `k`: one study in four is that of a patient
    /// seen in one of the previous `RETURN_WINDOW` studies.
    fn patient_no(&self, k: u64) -> u64 {
        let mut j = k;
        // Each step goes to a smaller study number: bounded.
        while j > 0 && self.h(j, 2).is_multiple_of(4) {
            j -= 1 + self.h(j, 3) % j.min(RETURN_WINDOW);
        }
        j
    }

    fn patient(&self, p: u64) -> Patient {
        let female = self.h(p, 4).is_multiple_of(2);
        let name = if self.h(p, 5).is_multiple_of(10) {
            format!(
                "{}^{}",
                pick(LATIN_FAMILY, self.h(p, 6)),
                pick(LATIN_GIVEN, self.h(p, 7))
            )
        } else {
            let mut r = self.h(p, 6) % 1000;
            let mut family = VN_FAMILY[0].0;
            for (f, w) in VN_FAMILY {
                if r < *w {
                    family = f;
                    break;
                }
                r -= w;
            }
            let (middle, given) = if female {
                (VN_MIDDLE_F, VN_GIVEN_F)
            } else {
                (VN_MIDDLE_M, VN_GIVEN_M)
            };
            format!(
                "{family}^{} {}",
                pick(middle, self.h(p, 7)),
                pick(given, self.h(p, 8))
            )
        };
        let birth = day(self.h(p, 9) % (85 * 365)) - chrono::Days::new(85 * 365 - 2 * 365);
        Patient {
            id: format!("{:02}{:08}", 10 + self.h(p, 10) % 90, p),
            name,
            birth_date: birth.format("%Y%m%d").to_string(),
            sex: if female { "F" } else { "M" },
        }
    }

    /// The shape of study `k`.
    pub fn study(&self, k: u64) -> StudyShape {
        let mut r = self.h(k, 1) % 1000;
        let mut modality = 0;
        for (i, m) in MODALITIES.iter().enumerate() {
            if r < m.permille {
                modality = i;
                break;
            }
            r -= m.permille;
        }
        let m = &MODALITIES[modality];
        let patient = self.patient(self.patient_no(k));
        let date = day(self.h(k, 11) % SPAN_DAYS);
        let secs = 7 * 3600 + self.h(k, 12) % (12 * 3600);
        let n_series = in_range(self.h(k, 13), m.series);
        let series = (0..n_series)
            .map(|s| in_range(self.h(k * 16 + s, 14), m.per_series))
            .collect();
        let birth_year = patient.birth_date[..4].parse::<i32>().unwrap_or(1970);
        let referring = self.patient(u64::MAX - k).name;
        StudyShape {
            index: k,
            uid: self.uid(k, 20),
            date: date.format("%Y%m%d").to_string(),
            time: format!("{:02}{:02}{:02}", secs / 3600, secs / 60 % 60, secs % 60),
            accession: format!("{}{:07}", date.year(), k),
            modality,
            description: m.descriptions[(self.h(k, 15) % m.descriptions.len() as u64) as usize],
            institution: pick(HOSPITALS, self.h(k, 16)),
            referring,
            age: format!("{:03}Y", (date.year() - birth_year).max(0)),
            patient,
            series,
        }
    }

    /// The benchmark queries: values taken from the first studies, so that
    /// each matches something even on a small run.
    pub fn queries(&self) -> Vec<BenchQuery> {
        let first = self.study(0);
        let second = self.study(1);
        let third = self.study(2);
        let month = &second.date[..6];
        let last_day = month_end(month);
        let mr_year = (0..10_000)
            .map(|k| self.study(k))
            .find(|s| MODALITIES[s.modality].code == "MR")
            .map_or_else(|| "2022".to_owned(), |s| s.date[..4].to_owned());
        vec![
            BenchQuery::new("patient_id", &[("PatientID", first.patient.id.clone())]),
            BenchQuery::new("name_prefix", &[("PatientName", "Nguy*".to_owned())]),
            BenchQuery::new(
                "date_month",
                &[("StudyDate", format!("{month}01-{month}{last_day:02}"))],
            ),
            BenchQuery::new(
                "modality_in_year",
                &[
                    ("ModalitiesInStudy", "MR".to_owned()),
                    ("StudyDate", format!("{mr_year}0101-{mr_year}1231")),
                ],
            ),
            BenchQuery::new("accession", &[("AccessionNumber", third.accession.clone())]),
            BenchQuery::new("all_studies", &[]),
        ]
    }

    /// The study records the index must hold after the first `n`
    /// instances (the last study may be cut short), in study order.
    pub fn studies_after(&self, n: u64) -> impl Iterator<Item = StudyRecord> + '_ {
        let mut left = n;
        let mut k = 0;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let mut shape = self.study(k);
            k += 1;
            let mut kept = Vec::new();
            for &c in &shape.series {
                if left == 0 {
                    break;
                }
                let take = c.min(left);
                left -= take;
                kept.push(take);
            }
            shape.series = kept;
            Some(study_record(&shape))
        })
    }

    /// How many studies each query matches after `n` instances: the
    /// archive's own matching rules applied to the records of
    /// [`Generator::studies_after`].
    pub fn expected(&self, n: u64, queries: &[BenchQuery]) -> Result<Vec<usize>> {
        let built: Vec<Query> = queries
            .iter()
            .map(BenchQuery::query)
            .collect::<Result<_>>()?;
        let mut counts = vec![0; queries.len()];
        for study in self.studies_after(n) {
            let row = Match {
                study: Some(study),
                ..Match::default()
            };
            for (c, q) in counts.iter_mut().zip(&built) {
                if q.matches(&row) {
                    *c += 1;
                }
            }
        }
        Ok(counts)
    }
}

fn day(offset: u64) -> NaiveDate {
    let (y, m, d) = FIRST_DAY;
    let first = NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
    first + chrono::Days::new(offset)
}

/// The last day of month `YYYYMM`.
fn month_end(month: &str) -> u32 {
    let y = month[..4].parse().unwrap_or(2020);
    let m: u32 = month[4..6].parse().unwrap_or(1);
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    next.and_then(|d| d.pred_opt()).map_or(28, |d| d.day())
}

/// The study record of a shape, with the counters the index maintains.
fn study_record(shape: &StudyShape) -> StudyRecord {
    let m = &MODALITIES[shape.modality];
    let instances: u64 = shape.instances();
    let mut modalities = BTreeMap::new();
    modalities.insert(m.code.to_owned(), shape.series.len() as u32);
    let mut sop_classes = BTreeMap::new();
    sop_classes.insert(m.sop_class.to_owned(), instances as u32);
    StudyRecord {
        study_instance_uid: Uid::parse(&shape.uid).unwrap_or_else(|_| unreachable_uid()),
        patient_key: patient_key("", &shape.patient.id),
        patient_id: shape.patient.id.clone(),
        issuer_of_patient_id: String::new(),
        patient_name: shape.patient.name.clone(),
        patient_birth_date: shape.patient.birth_date.clone(),
        patient_sex: shape.patient.sex.to_owned(),
        patient_age: shape.age.clone(),
        study_date: shape.date.clone(),
        study_time: shape.time.clone(),
        accession_number: shape.accession.clone(),
        referring_physician_name: shape.referring.clone(),
        study_description: shape.description.to_owned(),
        study_id: format!("{}", shape.index % 100_000),
        institution_name: shape.institution.to_owned(),
        timezone_offset_from_utc: String::new(),
        modalities,
        sop_classes,
        num_series: shape.series.len() as u32,
        num_instances: instances as u32,
    }
}

/// Generated UIDs are `2.25.<decimal>`, always valid; this is never used.
fn unreachable_uid() -> Uid {
    Uid::parse("2.25.0").unwrap_or_else(|_| unreachable!("2.25.0 is a valid UID"))
}

fn uid(s: &str) -> Result<Uid> {
    Uid::parse(s).map_err(|e| anyhow::anyhow!("generated UID {s:?}: {e}"))
}

/// A benchmark query: a name and QIDO-style keys at the study level.
#[derive(Debug, Clone)]
pub struct BenchQuery {
    pub name: &'static str,
    pub keys: Vec<(&'static str, String)>,
}

/// QIDO's page size for the benchmark (its first page).
const PAGE: usize = 100;

impl BenchQuery {
    fn new(name: &'static str, keys: &[(&'static str, String)]) -> BenchQuery {
        BenchQuery {
            name,
            keys: keys.to_vec(),
        }
    }

    /// The query as QIDO-RS parameters (`key=value&…`; values are ASCII).
    pub fn qido(&self) -> String {
        self.keys
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The query QIDO builds for `/studies?…&limit=100`.
    pub fn query(&self) -> Result<Query> {
        let mut q = Query::new(Level::Study);
        for (keyword, value) in &self.keys {
            let a = pacs_core::query::attribute_by_keyword(keyword)
                .with_context(|| format!("unknown attribute {keyword}"))?;
            q.add_key(a.tag, value)
                .map_err(|e| anyhow::anyhow!("{keyword}={value}: {e}"))?;
        }
        q.limit = Some(PAGE);
        Ok(q)
    }
}

/// What a template file gives: its DICOM JSON and its image attributes.
struct Template {
    json: Map<String, Value>,
    instance: InstanceRecord,
}

fn templates() -> Result<Vec<Template>> {
    TEMPLATE_FILES
        .iter()
        .map(|bytes| {
            let header = parse_part10(bytes, true, &Limits::default())
                .map_err(|e| anyhow::anyhow!("sample header: {e}"))?;
            let attrs = InstanceAttributes::from_header(&header)?;
            let json = match serde_json::from_slice(&attrs.metadata)? {
                Value::Object(m) => m,
                _ => anyhow::bail!("sample DICOM JSON is not an object"),
            };
            Ok(Template {
                json,
                instance: attrs.instance,
            })
        })
        .collect()
}

fn set(obj: &mut Map<String, Value>, tag: u32, vr: &str, value: Value) {
    obj.insert(format!("{tag:08X}"), json!({ "vr": vr, "Value": [value] }));
}

/// The instances of the generated studies, in order, built one at a time.
struct Instances {
    gen: Generator,
    templates: Vec<Template>,
    study: StudyShape,
    series: usize,
    instance: u64,
    series_uids: Vec<String>,
}

impl Instances {
    fn new(gen: Generator) -> Result<Instances> {
        let study = gen.study(0);
        Ok(Instances {
            series_uids: series_uids(&gen, &study),
            gen,
            templates: templates()?,
            study,
            series: 0,
            instance: 0,
        })
    }

    /// Passes over the next `n` instances without building them.
    fn skip(&mut self, mut n: u64) {
        while n > 0 {
            while self.series >= self.study.series.len() {
                self.study = self.gen.study(self.study.index + 1);
                self.series_uids = series_uids(&self.gen, &self.study);
                self.series = 0;
                self.instance = 0;
            }
            let left = self.study.series[self.series].saturating_sub(self.instance);
            if n >= left {
                n -= left;
                self.series += 1;
                self.instance = 0;
            } else {
                self.instance += n;
                n = 0;
            }
        }
    }

    /// The next instance's attributes, as ingest would put them.
    fn next_attrs(&mut self) -> Result<InstanceAttributes> {
        while self.series >= self.study.series.len() {
            self.study = self.gen.study(self.study.index + 1);
            self.series_uids = series_uids(&self.gen, &self.study);
            self.series = 0;
            self.instance = 0;
        }
        let s = &self.study;
        let m = &MODALITIES[s.modality];
        let t = &self.templates[m.template];
        let series_uid = &self.series_uids[self.series];
        let number = self.instance + 1;
        let sop = self
            .gen
            .uid((s.index << 24) ^ ((self.series as u64) << 16) ^ number, 30);
        let series_no = (self.series + 1).to_string();
        let series_desc = format!("{} – loạt {}", s.description, self.series + 1);
        let mut obj = t.json.clone();
        set(&mut obj, 0x0008_0016, "UI", json!(m.sop_class));
        set(&mut obj, 0x0008_0018, "UI", json!(sop));
        for tag in [0x0008_0020, 0x0008_0021, 0x0008_0023] {
            set(&mut obj, tag, "DA", json!(s.date));
        }
        for tag in [0x0008_0030, 0x0008_0031, 0x0008_0033] {
            set(&mut obj, tag, "TM", json!(s.time));
        }
        set(&mut obj, 0x0008_0050, "SH", json!(s.accession));
        set(&mut obj, 0x0008_0060, "CS", json!(m.code));
        set(&mut obj, 0x0008_0080, "LO", json!(s.institution));
        set(
            &mut obj,
            0x0008_0090,
            "PN",
            json!({ "Alphabetic": s.referring }),
        );
        set(&mut obj, 0x0008_1030, "LO", json!(s.description));
        set(&mut obj, 0x0008_103E, "LO", json!(series_desc));
        set(
            &mut obj,
            0x0010_0010,
            "PN",
            json!({ "Alphabetic": s.patient.name }),
        );
        set(&mut obj, 0x0010_0020, "LO", json!(s.patient.id));
        set(&mut obj, 0x0010_0030, "DA", json!(s.patient.birth_date));
        set(&mut obj, 0x0010_0040, "CS", json!(s.patient.sex));
        set(&mut obj, 0x0010_1010, "AS", json!(s.age));
        set(&mut obj, 0x0018_0015, "CS", json!(m.body_part));
        set(&mut obj, 0x0020_000D, "UI", json!(s.uid));
        set(&mut obj, 0x0020_000E, "UI", json!(series_uid));
        set(
            &mut obj,
            0x0020_0010,
            "SH",
            json!(format!("{}", s.index % 100_000)),
        );
        set(&mut obj, 0x0020_0011, "IS", json!(self.series + 1));
        set(&mut obj, 0x0020_0013, "IS", json!(number));
        if obj.contains_key("00200052") {
            set(&mut obj, 0x0020_0052, "UI", json!(series_uid));
        }
        if obj.contains_key("00201041") {
            let z = number as f64 * 1.25;
            set(&mut obj, 0x0020_1041, "DS", json!(z));
            obj.insert(
                "00200032".to_owned(),
                json!({ "vr": "DS", "Value": [-250.0, -250.0, z] }),
            );
        }
        let metadata = serde_json::to_vec(&Value::Object(obj))?;
        let study_uid = uid(&s.uid)?;
        let series_uid = uid(series_uid)?;
        let sop_uid = uid(&sop)?;
        let mut study = study_record(s);
        study.modalities.clear();
        study.sop_classes.clear();
        study.num_series = 0;
        study.num_instances = 0;
        let attrs = InstanceAttributes {
            patient: PatientRecord {
                patient_id: s.patient.id.clone(),
                issuer_of_patient_id: String::new(),
                patient_name: s.patient.name.clone(),
                patient_birth_date: s.patient.birth_date.clone(),
                patient_sex: s.patient.sex.to_owned(),
                other_patient_ids: Vec::new(),
                num_studies: 0,
                num_series: 0,
                num_instances: 0,
            },
            study,
            series: SeriesRecord {
                series_instance_uid: series_uid.clone(),
                study_instance_uid: study_uid.clone(),
                modality: m.code.to_owned(),
                series_number: series_no,
                series_description: series_desc,
                series_date: s.date.clone(),
                series_time: s.time.clone(),
                body_part_examined: m.body_part.to_owned(),
                performed_procedure_step_start_date: String::new(),
                performed_procedure_step_start_time: String::new(),
                request_attributes: Vec::new(),
                timezone_offset_from_utc: String::new(),
                num_instances: 0,
            },
            instance: InstanceRecord {
                blob_key: BlobKey::for_instance(&study_uid, &series_uid, &sop_uid).to_string(),
                sop_instance_uid: sop_uid,
                sop_class_uid: uid(m.sop_class)?,
                series_instance_uid: series_uid,
                study_instance_uid: study_uid,
                instance_number: number.to_string(),
                content_date: s.date.clone(),
                content_time: s.time.clone(),
                size: m.bytes,
                sha256: format!(
                    "{:016x}{:016x}{:016x}{:016x}",
                    self.gen.h(number, 40),
                    self.gen.h(s.index, 41),
                    self.gen.h(self.series as u64, 42),
                    self.gen.h(number ^ s.index, 43)
                ),
                received_at_ms: 1_700_000_000_000 + s.index * 60_000 + number,
                ..t.instance.clone()
            },
            metadata,
        };
        self.instance += 1;
        if self.instance >= s.series[self.series] {
            self.series += 1;
            self.instance = 0;
        }
        Ok(attrs)
    }
}

fn series_uids(gen: &Generator, study: &StudyShape) -> Vec<String> {
    (0..study.series.len() as u64)
        .map(|s| gen.uid(study.index * 16 + s, 21))
        .collect()
}

/// The options of one run.
pub struct Options {
    pub sizes: Vec<u64>,
    pub index_url: Option<String>,
    pub seed: u64,
    /// How the UIDs are drawn (the same style to resume or measure).
    pub uids: UidStyle,
    pub jobs: usize,
    pub repeat: usize,
    /// Measure an index an earlier run with the same seed filled (no
    /// inserts; the one checkpoint is its instance count).
    pub measure_existing: bool,
    /// sled: skip the fresh copy that gives the live bytes (it reads and
    /// writes the whole index; minutes at 10 M).
    pub live_copy: bool,
    /// Go on filling an index an earlier run with the same seed left,
    /// stopped or finished: from the start of the batch it was in.
    pub resume: bool,
    /// Put as the server's stores do: each instance marked as landing,
    /// the marks of a batch cleared once it is flushed (as the landing
    /// mover clears them once the objects are in place).
    pub landing: bool,
}

/// The engine under test.
enum Engine {
    Sled {
        index: Arc<storage::SledIndex>,
        dir: std::path::PathBuf,
    },
    #[cfg(feature = "postgres")]
    Pg(Arc<storage::PgIndex>),
}

impl Engine {
    fn index(&self) -> Arc<dyn Index> {
        match self {
            Engine::Sled { index, .. } => index.clone(),
            #[cfg(feature = "postgres")]
            Engine::Pg(index) => index.clone(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Engine::Sled { .. } => "sled",
            #[cfg(feature = "postgres")]
            Engine::Pg(_) => "postgres",
        }
    }

    /// Bytes of the index (and, for PostgreSQL, of the whole database).
    async fn bytes(&self) -> Result<(u64, Option<u64>)> {
        match self {
            Engine::Sled { index, dir } => {
                index.flush().await?;
                // The checkpoint thread writes sled's pages and truncates
                // the log: measure what stays on disk after it has run.
                tokio::time::sleep(storage::index::CHECKPOINT_INTERVAL * 2).await;
                let mut total = dir_bytes(dir)?;
                // The instance locator's runs, beside the index.
                let runs = storage::index::locator_dir(dir);
                if runs.exists() {
                    total += dir_bytes(&runs)?;
                }
                for ext in ["wal", "format"] {
                    total += std::fs::metadata(dir.with_extension(ext)).map_or(0, |m| m.len());
                }
                Ok((total, None))
            }
            #[cfg(feature = "postgres")]
            Engine::Pg(index) => {
                index.flush().await?;
                let (tables, database) = index.disk_usage().await?;
                Ok((tables, Some(database)))
            }
        }
    }
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    storage::index::dir_size(dir).with_context(|| format!("sizing {}", dir.display()))
}

async fn open_engine(config: &Config, url: Option<&str>, existing: bool) -> Result<Engine> {
    let existing_allowed = existing;
    let engine = match url.filter(|u| !u.is_empty()) {
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
            storage::SledIndex::set_cache_capacity(config.index_cache_bytes);
            let dir = config.index_dir();
            let index = storage::SledIndex::open(&dir)?;
            // Reopened as the server does, so the fill pays it too.
            index.set_reopen_after(config.index_reopen_after_bytes);
            Engine::Sled {
                index: Arc::new(index),
                dir,
            }
        }
        Some(url) => open_pg(url, config.index_pool_size).await?,
    };
    let index = engine.index();
    let stats = index.stats().await?;
    if existing_allowed {
        if stats.instances == 0 {
            anyhow::bail!(
                "the {} index is empty: --measure-existing measures an index an earlier \
                 bench-index run filled",
                engine.name()
            );
        }
    } else if stats != pacs_core::ports::IndexStats::default() || !index.journal().await?.is_empty()
    {
        anyhow::bail!(
            "the {} index is not empty ({} instances): bench-index only fills an empty index \
             (a fresh --data-dir, or an empty PostgreSQL database)",
            engine.name(),
            stats.instances
        );
    }
    Ok(engine)
}

#[cfg(feature = "postgres")]
async fn open_pg(url: &str, pool: usize) -> Result<Engine> {
    Ok(Engine::Pg(Arc::new(
        storage::PgIndex::connect_own(url, pool).await?,
    )))
}

#[cfg(not(feature = "postgres"))]
async fn open_pg(_url: &str, _pool: usize) -> Result<Engine> {
    anyhow::bail!(
        "--index-url names PostgreSQL, but this pacs was built without the `postgres` feature"
    )
}

/// One query's result at a checkpoint.
#[derive(Serialize)]
struct QueryResult {
    name: &'static str,
    qido: String,
    expected: usize,
    found: usize,
    p50_ms: f64,
    p99_ms: f64,
}

/// One checkpoint's line of JSON.
#[derive(Serialize)]
struct Checkpoint {
    engine: &'static str,
    seed: u64,
    uids: UidStyle,
    /// Whether the puts were marked as landing (`--landing`).
    landing: bool,
    instances: u64,
    studies: u64,
    series: u64,
    patients: u64,
    expected_studies: u64,
    insert_seconds: f64,
    insert_rate: f64,
    index_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_bytes: Option<u64>,
    bytes_per_instance: f64,
    /// Mean size of the DICOM JSON put with each instance.
    metadata_bytes_per_instance: f64,
    /// sled: the series metadata blobs the JSON moved into, per instance,
    /// and the time spent compacting (included in `insert_seconds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_blob_bytes_per_instance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compact_seconds: Option<f64>,
    /// sled: the size of a fresh copy of the index (its live data, without
    /// the replaced pages sled's files still hold), per instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    live_bytes_per_instance: Option<f64>,
    queries: Vec<QueryResult>,
    /// Instance lookups by SOP Instance UID alone: held ones, absent ones.
    lookups: Vec<QueryResult>,
}

/// Rows put between two flushes.
const BATCH: u64 = 1000;
/// Seconds between two progress lines on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub async fn run(config: &Config, opts: Options) -> Result<ExitCode> {
    let mut sizes = opts.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if !opts.measure_existing && (sizes.first() == Some(&0) || sizes.is_empty()) {
        anyhow::bail!("--sizes takes positive instance counts, e.g. 100000,1000000");
    }
    let url = opts
        .index_url
        .as_deref()
        .or(Some(config.index_url.as_str()));
    let engine = open_engine(config, url, opts.measure_existing || opts.resume).await?;
    let index = engine.index();
    let mut done = 0u64;
    let mut skip = 0u64;
    if opts.measure_existing {
        done = index.stats().await?.instances;
        sizes = vec![done];
        eprintln!("bench-index: measuring the existing index of {done} instances");
    } else if opts.resume {
        // Batches are put one after another: what a stopped run left is
        // every batch before the one it was in, and part of that one,
        // which is put again (a put of a present instance replaces it).
        let held = index.stats().await?.instances;
        done = held / BATCH * BATCH;
        skip = done;
        sizes.retain(|&n| n > done);
        if sizes.is_empty() {
            anyhow::bail!(
                "the index already holds {held} instances: give a larger --sizes, or --measure-existing"
            );
        }
        eprintln!("bench-index: resuming at {done} instances (the index holds {held})");
    }
    let gen = Generator::with_uids(opts.seed, opts.uids);
    let queries = gen.queries();
    let mut source = Instances::new(gen)?;
    source.skip(skip);
    let jobs = opts.jobs.max(1);
    let mut metadata_bytes = 0u64;
    let mut failed = false;
    // sled moves the DICOM JSON of quiet series into per-series blobs, as
    // the server does in the background: here after every batch, into a
    // file blob store beside the index.
    let blob_dir = config.data_dir.join("bench-metadata");
    let compactor = if index.compacts_metadata() {
        std::fs::create_dir_all(&blob_dir)
            .with_context(|| format!("cannot create {}", blob_dir.display()))?;
        let blobs = storage::ObjectBlobStore::open(&format!("file://{}", blob_dir.display()))?;
        Some(pacs_core::series_metadata::SeriesMetadata::new(
            Arc::new(blobs),
            index.clone(),
        ))
    } else {
        None
    };
    let mut compact_time = Duration::ZERO;
    // Ctrl-C or SIGTERM: the batch under way is finished and flushed, the
    // index closed cleanly, and the run ends (`--resume` goes on).
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::serve::shutdown_signal(stop_tx));
    for &target in &sizes {
        let start = Instant::now();
        let from = done;
        let mut last_report = Instant::now();
        while done < target {
            if *stop.borrow() {
                index.set_clean_shutdown(true).await?;
                index.flush().await?;
                eprintln!(
                    "bench-index: stopped at {done} instances, the index closed cleanly; \
                     go on with --resume --sizes {target} (same --seed and --uids)"
                );
                return Ok(ExitCode::from(2));
            }
            let n = BATCH.min(target - done);
            let mut batch = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let attrs = source.next_attrs()?;
                metadata_bytes += attrs.metadata.len() as u64;
                batch.push(attrs);
            }
            let index_ref = &index;
            let landing = opts.landing;
            let marked: Vec<Uid> = if landing {
                batch
                    .iter()
                    .map(|a| a.instance.sop_instance_uid.clone())
                    .collect()
            } else {
                Vec::new()
            };
            let results: Vec<_> = stream::iter(batch)
                .map(|attrs| async move {
                    if landing {
                        index_ref.put_landing(attrs).await
                    } else {
                        index_ref.put(attrs).await
                    }
                })
                .buffer_unordered(jobs)
                .collect()
                .await;
            for r in results {
                r?;
            }
            index.flush().await?;
            if !marked.is_empty() {
                index.clear_landing_marks(&marked).await?;
            }
            done += n;
            if let Some(c) = &compactor {
                let t = Instant::now();
                loop {
                    let r = c
                        .compact_due(Duration::ZERO, 1024, &pacs_core::series_metadata::NoSource)
                        .await?;
                    if r.failed > 0 {
                        anyhow::bail!("compacting series metadata failed ({} series)", r.failed);
                    }
                    if r.series == 0 {
                        break;
                    }
                }
                compact_time += t.elapsed();
            }
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                let rate = (done - from) as f64 / start.elapsed().as_secs_f64().max(1e-9);
                let eta = (target - done) as f64 / rate.max(1e-9);
                eprintln!(
                    "bench-index: {done}/{target} instances, {rate:.0}/s, ETA {}",
                    human_secs(eta)
                );
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let rate = (done - from) as f64 / seconds.max(1e-9);
        eprintln!("bench-index: {done} instances ({rate:.0}/s); measuring");
        let (bytes, database) = engine.bytes().await?;
        let stats = index.stats().await?;
        let expected = gen.expected(done, &queries)?;
        let mut results = Vec::new();
        for (q, want) in queries.iter().zip(expected) {
            let query = q.query()?;
            // One untimed run warms the caches and gives the total.
            let found = index.find(&query).await?.total;
            let mut times = Vec::with_capacity(opts.repeat.max(1));
            for _ in 0..opts.repeat.max(1) {
                let t = Instant::now();
                index.find(&query).await?;
                times.push(t.elapsed());
            }
            times.sort_unstable();
            if found != want {
                failed = true;
                eprintln!(
                    "bench-index: query {} ({}) matched {found} studies, {want} expected",
                    q.name,
                    q.qido()
                );
            }
            results.push(QueryResult {
                name: q.name,
                qido: q.qido(),
                expected: want,
                found,
                p50_ms: ms(percentile(&times, 50)),
                p99_ms: ms(percentile(&times, 99)),
            });
        }
        // Instances by SOP Instance UID alone (storage commitment, a
        // retrieve by UID) spread over the archive, and UIDs it does not
        // hold (what every store of a new instance looks up first).
        let samples = opts.repeat.clamp(1, 1_000) as u64;
        let mut present = Vec::with_capacity(samples as usize);
        let mut walk = Instances::new(gen)?;
        for _ in 0..samples {
            walk.skip((done / samples).saturating_sub(1));
            present.push(walk.next_attrs()?.instance.sop_instance_uid);
        }
        // A salt of no level the generator draws UIDs for.
        let absent: Vec<Uid> = (0..samples)
            .map(|k| Uid::parse(&gen.uid(k, 0xAB5E)))
            .collect::<Result<_, _>>()?;
        let mut lookups = Vec::new();
        for (name, uids, want) in [
            ("instance_by_uid", &present, samples as usize),
            ("instance_absent", &absent, 0),
        ] {
            let mut found = 0;
            let mut times = Vec::with_capacity(uids.len());
            for uid in uids {
                let t = Instant::now();
                let got = index.instance(uid).await?;
                times.push(t.elapsed());
                found += usize::from(got.is_some());
            }
            times.sort_unstable();
            if found != want {
                failed = true;
                eprintln!(
                    "bench-index: {name} found {found} of {} instances, {want} expected",
                    uids.len()
                );
            }
            lookups.push(QueryResult {
                name,
                qido: String::new(),
                expected: want,
                found,
                p50_ms: ms(percentile(&times, 50)),
                p99_ms: ms(percentile(&times, 99)),
            });
        }
        let expected_studies = gen.studies_after(done).count() as u64;
        if stats.instances != done || stats.studies != expected_studies {
            failed = true;
            eprintln!(
                "bench-index: the index counts {} instances and {} studies, {done} and {expected_studies} expected",
                stats.instances, stats.studies
            );
        }
        let checkpoint = Checkpoint {
            engine: engine.name(),
            seed: opts.seed,
            uids: opts.uids,
            landing: opts.landing,
            instances: stats.instances,
            studies: stats.studies,
            series: stats.series,
            patients: stats.patients,
            expected_studies,
            insert_seconds: seconds,
            insert_rate: rate,
            index_bytes: bytes,
            database_bytes: database,
            bytes_per_instance: bytes as f64 / done as f64,
            metadata_bytes_per_instance: metadata_bytes as f64 / done as f64,
            metadata_blob_bytes_per_instance: match &compactor {
                Some(_) => Some(dir_bytes(&blob_dir)? as f64 / done as f64),
                None => None,
            },
            compact_seconds: compactor.as_ref().map(|_| compact_time.as_secs_f64()),
            live_bytes_per_instance: match &engine {
                Engine::Sled { .. } if !opts.live_copy => None,
                Engine::Sled { index, dir } => {
                    let copy = dir.with_extension(format!("copy-{done}"));
                    let mut bytes = index.copy_to(&copy)?;
                    std::fs::remove_dir_all(&copy)
                        .with_context(|| format!("removing {}", copy.display()))?;
                    // The runs hold live data only.
                    let runs = storage::index::locator_dir(dir);
                    if runs.exists() {
                        bytes += dir_bytes(&runs)?;
                    }
                    Some(bytes as f64 / done as f64)
                }
                #[cfg(feature = "postgres")]
                Engine::Pg(_) => None,
            },
            queries: results,
            lookups,
        };
        print_table(&checkpoint);
        println!("{}", serde_json::to_string(&checkpoint)?);
    }
    index.set_clean_shutdown(true).await?;
    index.flush().await?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn human_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

fn print_table(c: &Checkpoint) {
    println!(
        "# {} index: {} instances, {} series, {} studies, {} patients",
        c.engine, c.instances, c.series, c.studies, c.patients
    );
    println!(
        "#   insert {:.0} instances/s ({:.1} s); index {} bytes = {:.0} bytes/instance \
         (DICOM JSON {:.0} bytes/instance){}",
        c.insert_rate,
        c.insert_seconds,
        c.index_bytes,
        c.bytes_per_instance,
        c.metadata_bytes_per_instance,
        c.database_bytes
            .map(|d| format!("; database {d} bytes"))
            .unwrap_or_default()
    );
    if let Some(live) = c.live_bytes_per_instance {
        println!("#   a fresh copy of the index (its live data): {live:.0} bytes/instance");
    }
    if let (Some(b), Some(t)) = (c.metadata_blob_bytes_per_instance, c.compact_seconds) {
        println!(
            "#   series metadata blobs {b:.0} bytes/instance (compacting took {t:.1} s of the insert time)"
        );
    }
    println!(
        "#   {:<18} {:>9} {:>9} {:>9} {:>9}  query",
        "query", "expected", "found", "p50 ms", "p99 ms"
    );
    for q in c.queries.iter().chain(&c.lookups) {
        println!(
            "#   {:<18} {:>9} {:>9} {:>9.3} {:>9.3}  {}",
            q.name, q.expected, q.found, q.p50_ms, q.p99_ms, q.qido
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_realistic() {
        let g = Generator::new(7);
        let a: Vec<_> = (0..50).map(|k| g.study(k).uid).collect();
        let b: Vec<_> = (0..50).map(|k| Generator::new(7).study(k).uid).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], Generator::new(8).study(0).uid);
        let studies: Vec<_> = (0..2000).map(|k| g.study(k)).collect();
        let ct = studies
            .iter()
            .filter(|s| MODALITIES[s.modality].code == "CT")
            .count();
        assert!((200..400).contains(&ct), "{ct} CT studies of 2000");
        let nguyen = studies
            .iter()
            .filter(|s| s.patient.name.starts_with("Nguy"))
            .count();
        assert!(nguyen > 500, "{nguyen}");
        let total: u64 = studies.iter().map(StudyShape::instances).sum();
        assert!((50..300).contains(&(total / 2000)), "{total}");
    }

    #[test]
    fn instances_follow_the_shapes_and_carry_their_metadata() {
        let g = Generator::new(3);
        let mut src = Instances::new(g).unwrap();
        let first = g.study(0);
        let n = first.instances();
        let mut sops = std::collections::HashSet::new();
        for _ in 0..n {
            let a = src.next_attrs().unwrap();
            assert_eq!(a.study.study_instance_uid.to_string(), first.uid);
            assert!(sops.insert(a.instance.sop_instance_uid.to_string()));
            let meta: Value = serde_json::from_slice(&a.metadata).unwrap();
            assert_eq!(
                meta["00080018"]["Value"][0].as_str().unwrap(),
                a.instance.sop_instance_uid.to_string()
            );
        }
        let next = src.next_attrs().unwrap();
        assert_eq!(next.study.study_instance_uid.to_string(), g.study(1).uid);
        let records: Vec<_> = g.studies_after(n + 1).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].num_instances, 1);
    }

    /// A resumed run puts the instances a whole run puts after the same
    /// count.
    #[test]
    fn skipping_lands_where_putting_would() {
        let g = Generator::new(5);
        let mut all = Instances::new(g).unwrap();
        let sops: Vec<String> = (0..3000)
            .map(|_| {
                all.next_attrs()
                    .unwrap()
                    .instance
                    .sop_instance_uid
                    .to_string()
            })
            .collect();
        for k in [0, 1, 7, 999, 1000, 2500] {
            let mut src = Instances::new(g).unwrap();
            src.skip(k);
            let got: Vec<String> = (0..3)
                .map(|_| {
                    src.next_attrs()
                        .unwrap()
                        .instance
                        .sop_instance_uid
                        .to_string()
                })
                .collect();
            assert_eq!(got, sops[k as usize..k as usize + 3], "after skipping {k}");
        }
    }

    /// Increasing UIDs: valid, each level's in the order generated (byte
    /// order, as the index sorts keys), and the same studies otherwise.
    #[test]
    fn increasing_uids_follow_each_other() {
        let inc = Generator::with_uids(5, UidStyle::Increasing);
        let mut src = Instances::new(inc).unwrap();
        let mut random = Instances::new(Generator::new(5)).unwrap();
        let (mut sops, mut studies) = (Vec::new(), Vec::new());
        for _ in 0..3000 {
            let a = src.next_attrs().unwrap();
            let r = random.next_attrs().unwrap();
            assert_eq!(a.study.patient_name, r.study.patient_name);
            assert_eq!(a.study.study_date, r.study.study_date);
            assert!(!a.instance.sop_instance_uid.as_str().starts_with("2.25."));
            sops.push(a.instance.sop_instance_uid.to_string());
            studies.push(a.instance.study_instance_uid.to_string());
        }
        studies.dedup();
        assert!(studies.len() > 10, "{} studies", studies.len());
        assert!(studies.windows(2).all(|w| w[0] < w[1]), "{studies:?}");
        // Within a series, the instances follow each other.
        let mut by_series: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut src = Instances::new(inc).unwrap();
        for _ in 0..3000 {
            let a = src.next_attrs().unwrap();
            by_series
                .entry(a.instance.series_instance_uid.to_string())
                .or_default()
                .push(a.instance.sop_instance_uid.to_string());
        }
        for (series, sops) in by_series {
            assert!(sops.windows(2).all(|w| w[0] < w[1]), "{series}: {sops:?}");
        }
        assert_eq!(sops.len(), 3000);
    }
}
