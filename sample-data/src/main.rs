//! `gen-sample-data`: writes Sen PACS's deterministic synthetic sample
//! studies, or a large CT series for ingest benchmarks.

//!
//! Running the generator twice yields byte-identical files: there are no
//! timestamps, every UID is derived from a fixed name (see [`uid`]) and all
//! pixel content is computed with platform-independent arithmetic (see
//! [`phantom`]). The committed output lives in `sample-data/studies/` with
//! its `sample-data/manifest.json`; a test regenerates everything and fails
//! if the committed files are stale.
//!
//! (The crate's library target, `src/lib.rs`, is separate test support for
//! the workspace and does not include these modules.)

mod bench;
mod dataset;
mod hanging;
mod manifest;
mod mpr;
mod phantom;
mod studies;
mod uid;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use manifest::Manifest;

/// The crate directory (`sample-data/`).
fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Default output directory: `sample-data/studies`.
fn default_out_dir() -> PathBuf {
    crate_dir().join("studies")
}

/// Default manifest path: `sample-data/manifest.json`.
fn default_manifest_path() -> PathBuf {
    crate_dir().join("manifest.json")
}

/// Generate every sample study under `out` and return the manifest (not
/// written; see [`Manifest::write`]). Existing folders of the sample studies
/// under `out` are removed first so no stale file survives.
fn generate_all(out: &Path) -> Result<Manifest> {
    for study in studies::ALL_STUDIES {
        let dir = out.join(study.key);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing stale {}", dir.display()))?;
        }
    }
    let mut files = Vec::new();
    files.extend(studies::ct_current(out)?);
    files.extend(studies::ct_prior(out)?);
    files.extend(studies::mr(out)?);
    files.extend(studies::us(out)?);
    files.extend(studies::cr(out)?);
    Ok(Manifest::new(files))
}

const USAGE: &str = "\
usage:
  gen-sample-data [--out DIR] [--manifest FILE]
      Write the sample studies to DIR (default: sample-data/studies) and the
      manifest to FILE (default: sample-data/manifest.json when DIR is the
      default, DIR/manifest.json otherwise).
  gen-sample-data bench-ct --count N --out DIR
      Write N synthetic 512x512 16-bit CT slices (one study, one series,
      Explicit VR Little Endian) as DIR/000001.dcm ... for ingest benchmarks.
  gen-sample-data bench-index --studies N --per-study M --out DIR
      Write N studies of M small instances each (no real pixel data; varied
      patients with Vietnamese names, dates over 2019-2026, modalities,
      accession numbers) as DIR/<study>/<n>.dcm for query benchmarks.
  gen-sample-data mpr-ct --out DIR
      Write three small CT studies of known geometry for the viewer's MPR
      tests (regular with a fiducial cube, gantry-tilted, irregular spacing)
      as DIR/<study>/<n>.dcm.
  gen-sample-data hanging --out DIR
      Write small CT and MR studies for the viewer's hanging-protocol test
      (a CT chest with a relevant and an irrelevant prior, an MR brain with
      T1, T2, FLAIR and DWI series) as DIR/<study>/<series>-<n>.dcm.
";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-sample-data: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Take the value following option `name`.
fn value(args: &mut std::vec::IntoIter<String>, name: &str) -> Result<String> {
    args.next()
        .with_context(|| format!("{name} needs a value\n{USAGE}"))
}

fn run(args: Vec<String>) -> Result<()> {
    if args.first().map(String::as_str) == Some("bench-ct") {
        return bench(args.into_iter().skip(1).collect());
    }
    if args.first().map(String::as_str) == Some("mpr-ct") {
        return mpr_ct(args.into_iter().skip(1).collect());
    }
    if args.first().map(String::as_str) == Some("hanging") {
        return out_only(
            args.into_iter().skip(1).collect(),
            "hanging",
            hanging::hanging,
        );
    }
    if args.first().map(String::as_str) == Some("bench-index") {
        return bench_index(args.into_iter().skip(1).collect());
    }
    let mut out: Option<PathBuf> = None;
    let mut manifest: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = Some(value(&mut args, "--out")?.into()),
            "--manifest" => manifest = Some(value(&mut args, "--manifest")?.into()),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let manifest_path = match (&manifest, &out) {
        (Some(m), _) => m.clone(),
        (None, Some(o)) => o.join("manifest.json"),
        (None, None) => default_manifest_path(),
    };
    let out = out.unwrap_or_else(default_out_dir);
    let m = generate_all(&out)?;
    m.write(&manifest_path)?;
    println!(
        "wrote {} files ({} bytes) under {}; manifest {}",
        m.file_count,
        m.total_size,
        out.display(),
        manifest_path.display()
    );
    Ok(())
}

fn bench_index(args: Vec<String>) -> Result<()> {
    let (mut studies, mut per_study, mut out) = (None::<u32>, None::<u32>, None::<PathBuf>);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--studies" | "--per-study" => {
                let v = value(&mut args, &arg)?;
                let n: u32 = v
                    .parse()
                    .with_context(|| format!("{arg} {v:?} is not a number"))?;
                if arg == "--studies" {
                    studies = Some(n);
                } else {
                    per_study = Some(n);
                }
            }
            "--out" => out = Some(value(&mut args, "--out")?.into()),
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let (Some(studies), Some(per_study), Some(out)) = (studies, per_study, out) else {
        bail!("bench-index needs --studies N --per-study M --out DIR\n{USAGE}");
    };
    const FAMILY: [&str; 10] = [
        "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
    ];
    const GIVEN: [&str; 10] = [
        "Văn An",
        "Thị Bích",
        "Minh Châu",
        "Quốc Dũng",
        "Thu Hà",
        "Đức Huy",
        "Ngọc Lan",
        "Hữu Nghĩa",
        "Thanh Tâm",
        "Xuân Yến",
    ];
    const MODALITIES: [&str; 5] = ["CT", "MR", "US", "CR", "DX"];
    for s in 0..studies {
        let patient = s / 2;
        let name = format!(
            "{}^{}",
            FAMILY[(patient % 10) as usize],
            GIVEN[((patient / 10) % 10) as usize]
        );
        let day = s.wrapping_mul(7919) % (365 * 7);
        let date = format!(
            "{:04}{:02}{:02}",
            2019 + day / 365,
            1 + (day % 365) / 31 % 12,
            1 + day % 28
        );
        let study = format!("2.25.{}", 900_000_000 + u64::from(s));
        let series = format!("{study}.1");
        let dir = out.join(format!("{s:06}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for i in 0..per_study {
            let sop = format!("{series}.{i}");
            let bytes = sample_data::synthetic::object(&sample_data::synthetic::Spec {
                study: &study,
                series: &series,
                sop: &sop,
                patient_name: &name,
                patient_id: &format!("P{patient:06}"),
                study_date: &date,
                modality: MODALITIES[(s % 5) as usize],
                accession: &format!("A{s:07}"),
                pixel_bytes: 64,
            });
            let p = dir.join(format!("{i:04}.dcm"));
            std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
        }
    }
    println!(
        "wrote {studies} studies of {per_study} instances under {}",
        out.display()
    );
    Ok(())
}

fn bench(args: Vec<String>) -> Result<()> {
    let mut count: Option<u32> = None;
    let mut out: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--count" => {
                let v = value(&mut args, "--count")?;
                count = Some(
                    v.parse()
                        .with_context(|| format!("--count {v:?} is not a number"))?,
                );
            }
            "--out" => out = Some(value(&mut args, "--out")?.into()),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let (Some(count), Some(out)) = (count, out) else {
        bail!("bench-ct needs --count N and --out DIR\n{USAGE}");
    };
    let total = bench::bench_ct(&out, count)?;
    println!(
        "wrote {count} CT slices ({total} bytes) under {}",
        out.display()
    );
    Ok(())
}

fn mpr_ct(args: Vec<String>) -> Result<()> {
    out_only(args, "mpr-ct", mpr::mpr_ct)
}

/// A subcommand whose only option is `--out DIR`.
fn out_only(args: Vec<String>, name: &str, write: fn(&Path) -> Result<usize>) -> Result<()> {
    let mut out: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = Some(value(&mut args, "--out")?.into()),
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let Some(out) = out else {
        bail!("{name} needs --out DIR\n{USAGE}");
    };
    let files = write(&out)?;
    println!("wrote {files} files under {}", out.display());
    Ok(())
}
