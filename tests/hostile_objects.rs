//! Hostile stored objects against every read path of the real binary.
//!
//! Each object is built here (nothing binary is committed), imported with
//! `pacs import`, and then asked for through every path that decodes,
//! renders or converts pixel data: thumbnail, rendered, frames converted to
//! Explicit VR LE, WADO-RS instance converted to Explicit VR LE and to RLE
//! Lossless (JPEG Lossless for RLE objects), `/wado` as a JPEG, and a DIMSE C-GET whose requestor accepts
//! the SOP class only in a syntax that forces a conversion. Each answer must
//! be a refusal (4xx/5xx, a failed C-GET sub-operation), or, for a valid
//! image followed by junk after Pixel Data, the image itself; and after
//! each object the server still answers `/healthz` and a normal render.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../dimse-scp/tests/common/mod.rs"]
mod dimse;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use dicom_ul::pdu::{Pdu, RequestorRoles, UserVariableItem};
use dimse::{association_rq, pc, Scu};
use dimse_scp::message::{command_field, tags, CStoreRsp, CommandSet, DATA_SET_PRESENT};
use dimse_scp::Status;
use pacs_core::dicom::{encode_file_meta, FileMeta};
use sample_data::synthetic::element;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const STUDY_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
const RLE: &str = "1.2.840.10008.1.2.5";
const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
const ROOT: &str = "1.2.826.0.1.3680043.10.77";
const CALLING_AE: &str = "HOSTILE";

// ---------------------------------------------------------------------------
// Building objects

/// What one test object is.
struct Obj {
    name: &'static str,
    ts: &'static str,
    rows: u16,
    columns: u16,
    bits: u16,
    frames: Option<u32>,
    /// The Pixel Data element, header included.
    pixel_data: Vec<u8>,
    /// Zero bytes of pixel data value after `pixel_data` (written straight
    /// into the deflate stream of a deflated object).
    zeros: usize,
    /// Bytes after Pixel Data.
    trailer: Vec<u8>,
    /// A valid image (only the junk after Pixel Data is hostile): the read
    /// paths must answer with it.
    valid: bool,
}

impl Obj {
    fn study(&self, n: usize) -> String {
        format!("{ROOT}.{n}")
    }

    /// The Part 10 file, SOP Instance UID `{ROOT}.{n}.1.1`.
    fn part10(&self, n: usize) -> Vec<u8> {
        let study = self.study(n);
        let series = format!("{study}.1");
        let sop = format!("{series}.1");
        let mut ds = Vec::new();
        element(&mut ds, 0x0008_0016, "UI", CT.as_bytes());
        element(&mut ds, 0x0008_0018, "UI", sop.as_bytes());
        element(&mut ds, 0x0008_0060, "CS", b"CT");
        element(&mut ds, 0x0010_0010, "PN", b"HOSTILE^OBJECT");
        element(&mut ds, 0x0010_0020, "LO", b"HOSTILE-1");
        element(&mut ds, 0x0020_000D, "UI", study.as_bytes());
        element(&mut ds, 0x0020_000E, "UI", series.as_bytes());
        element(&mut ds, 0x0020_0013, "IS", b"1");
        element(&mut ds, 0x0028_0002, "US", &1u16.to_le_bytes());
        element(&mut ds, 0x0028_0004, "CS", b"MONOCHROME2");
        if let Some(f) = self.frames {
            element(&mut ds, 0x0028_0008, "IS", f.to_string().as_bytes());
        }
        element(&mut ds, 0x0028_0010, "US", &self.rows.to_le_bytes());
        element(&mut ds, 0x0028_0011, "US", &self.columns.to_le_bytes());
        element(&mut ds, 0x0028_0100, "US", &self.bits.to_le_bytes());
        element(&mut ds, 0x0028_0101, "US", &self.bits.to_le_bytes());
        element(&mut ds, 0x0028_0102, "US", &(self.bits - 1).to_le_bytes());
        element(&mut ds, 0x0028_0103, "US", &0u16.to_le_bytes());
        ds.extend_from_slice(&self.pixel_data);
        let mut out = encode_file_meta(&FileMeta {
            transfer_syntax_uid: self.ts.to_owned(),
            media_storage_sop_class_uid: CT.to_owned(),
            media_storage_sop_instance_uid: sop,
            implementation_class_uid: "2.25.77".to_owned(),
            ..FileMeta::default()
        });
        let zeros = vec![0u8; 1 << 20];
        if self.ts == DEFLATED {
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(&ds).unwrap();
            for chunk in 0..self.zeros.div_ceil(zeros.len()) {
                let n = (self.zeros - chunk * zeros.len()).min(zeros.len());
                z.write_all(&zeros[..n]).unwrap();
            }
            z.write_all(&self.trailer).unwrap();
            out.extend_from_slice(&z.finish().unwrap());
        } else {
            out.extend_from_slice(&ds);
            out.resize(out.len() + self.zeros, 0);
            out.extend_from_slice(&self.trailer);
        }
        out
    }
}

fn native_pixels(len: usize, declared: Option<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut values: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    if values.len() % 2 == 1 {
        values.push(0);
    }
    out.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00]);
    out.extend_from_slice(b"OB\0\0");
    out.extend_from_slice(&declared.unwrap_or(values.len() as u32).to_le_bytes());
    out.extend_from_slice(&values);
    out
}

/// Encapsulated Pixel Data (PS3.5 A.4): an empty offset table, one
/// fragment, the sequence delimiter.
fn encapsulated(fragment: &[u8]) -> Vec<u8> {
    let mut f = fragment.to_vec();
    if f.len() % 2 == 1 {
        f.push(0);
    }
    let mut out = vec![
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    out.extend_from_slice(&(f.len() as u32).to_le_bytes());
    out.extend_from_slice(&f);
    out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    out
}

/// A JPEG stream whose frame header says `x` × `y`.
fn jpeg_claiming(x: u16, y: u16) -> Vec<u8> {
    let mut s = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8];
    s.extend_from_slice(&y.to_be_bytes());
    s.extend_from_slice(&x.to_be_bytes());
    s.extend_from_slice(&[1, 1, 0x11, 0]);
    // A scan header and a little entropy-coded data.
    s.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0]);
    s.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    s.extend_from_slice(&[0xFF, 0xD9]);
    s
}

/// A JPEG 2000 codestream whose SIZ says `w` × `h`.
fn j2k_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut s = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
    for v in [w, h, 0, 0, w, h, 0, 0] {
        s.extend_from_slice(&v.to_be_bytes());
    }
    s.extend_from_slice(&[0, 1, 7, 1, 1]);
    s.extend_from_slice(&[0xFF, 0xD9]);
    s
}

/// An RLE frame whose header lies about its segments.
fn rle_lying() -> Vec<u8> {
    let mut s = vec![0u8; 128];
    s[0] = 15;
    for i in 0..15u32 {
        let off = 64 + i * 0x0100_0000;
        s[4 + 4 * i as usize..8 + 4 * i as usize].copy_from_slice(&off.to_le_bytes());
    }
    s
}

/// Sequences nested `depth` deep after Pixel Data, never closed.
fn deep_sequences(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 20);
    for _ in 0..depth {
        // (FFFA,FFFA) Digital Signatures Sequence, undefined length, and an
        // item of undefined length.
        out.extend_from_slice(&[
            0xFA, 0xFF, 0xFA, 0xFF, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    out
}

/// A value after Pixel Data that claims nearly 4 GiB.
fn huge_trailer() -> Vec<u8> {
    let mut out = vec![0xFC, 0xFF, 0xFC, 0xFF, b'O', b'B', 0, 0];
    out.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    out.extend_from_slice(&[0; 16]);
    out
}

fn good() -> Obj {
    Obj {
        name: "valid 16x16",
        ts: EXPLICIT_LE,
        rows: 16,
        columns: 16,
        bits: 8,
        frames: None,
        pixel_data: native_pixels(256, None),
        zeros: 0,
        trailer: Vec::new(),
        valid: true,
    }
}

fn corpus() -> Vec<Obj> {
    let jpeg = |rows, columns, claim: (u16, u16)| Obj {
        ts: JPEG_BASELINE,
        rows,
        columns,
        pixel_data: encapsulated(&jpeg_claiming(claim.0, claim.1)),
        valid: false,
        ..good()
    };
    vec![
        Obj {
            name: "sequences nested 100000 deep after Pixel Data",
            trailer: deep_sequences(100_000),
            ..good()
        },
        Obj {
            name: "a 4 GiB value after Pixel Data",
            trailer: huge_trailer(),
            ..good()
        },
        Obj {
            name: "JPEG whose frame header says 60000 x 60000",
            ..jpeg(16, 16, (60000, 60000))
        },
        Obj {
            name: "JPEG 2000 whose SIZ says 60000 x 60000",
            ts: J2K_LOSSLESS,
            pixel_data: encapsulated(&j2k_claiming(60000, 60000)),
            valid: false,
            ..good()
        },
        Obj {
            name: "RLE whose header declares 15 segments far outside the frame",
            ts: RLE,
            pixel_data: encapsulated(&rle_lying()),
            valid: false,
            ..good()
        },
        Obj {
            name: "deflate bomb (300 MiB inflated)",
            ts: DEFLATED,
            pixel_data: native_pixels(0, Some(300 << 20)),
            zeros: 300 << 20,
            valid: false,
            ..good()
        },
        Obj {
            name: "65535 x 65535 x 1000 frames of 16 bits in 16 bytes",
            rows: 65535,
            columns: 65535,
            bits: 16,
            frames: Some(1000),
            pixel_data: native_pixels(16, None),
            valid: false,
            ..good()
        },
        Obj {
            name: "JPEG of 65535 x 65535 that says so",
            ..jpeg(65535, 65535, (65535, 65535))
        },
    ]
}

// ---------------------------------------------------------------------------
// HTTP

/// A GET with extra headers: (status, body), chunked bodies decoded;
/// status 0 when nothing answers.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Vec::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut rq = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        rq.push_str(&format!("{k}: {v}\r\n"));
    }
    rq.push_str("\r\n");
    s.write_all(rq.as_bytes()).unwrap();
    let mut buf = Vec::new();
    // A body cut off mid-stream is an answer too (an error after the head).
    let _ = s.read_to_end(&mut buf);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut body = buf.get(split + 4..).unwrap_or_default().to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .unwrap_or(0);
            if n == 0 || rest.len() < eol + 2 + n {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 4 + n..];
        }
        body = out;
    }
    (status, body)
}

/// Width and height of a JPEG from its frame header.
fn jpeg_size(jpeg: &[u8]) -> Option<(u16, u16)> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    while i + 9 < jpeg.len() {
        let marker = jpeg[i + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if (0xC0..=0xC3).contains(&marker) {
            let y = u16::from_be_bytes([jpeg[i + 5], jpeg[i + 6]]);
            let x = u16::from_be_bytes([jpeg[i + 7], jpeg[i + 8]]);
            return Some((x, y));
        }
        i += 2 + len;
    }
    None
}

fn instance_path(study: &str) -> String {
    format!("/dicom-web/studies/{study}/series/{study}.1/instances/{study}.1.1")
}

/// Every HTTP read path that decodes, renders or converts: (what, status,
/// body).
fn http_paths(port: u16, study: &str, stored_ts: &str) -> Vec<(String, u16, Vec<u8>)> {
    let i = instance_path(study);
    let dicom =
        |ts: &str| format!("multipart/related; type=\"application/dicom\"; transfer-syntax={ts}");
    let frames = format!(
        "multipart/related; type=\"application/octet-stream\"; transfer-syntax={EXPLICIT_LE}"
    );
    let wado = format!(
        "/wado?requestType=WADO&studyUID={study}&seriesUID={study}.1&objectUID={study}.1.1&contentType=image/jpeg"
    );
    let asks: Vec<(String, String, Option<String>)> = vec![
        ("thumbnail".into(), format!("{i}/thumbnail"), None),
        ("rendered".into(), format!("{i}/rendered"), None),
        (
            "frames, converted".into(),
            format!("{i}/frames/1"),
            Some(frames),
        ),
        (
            "WADO-RS to an uncompressed syntax".into(),
            i.clone(),
            // Explicit VR LE, or Implicit VR LE for objects stored in the
            // former: always a conversion.
            Some(dicom(if stored_ts == EXPLICIT_LE {
                IMPLICIT_LE
            } else {
                EXPLICIT_LE
            })),
        ),
        // A compressed syntax other than the stored one.
        (
            "WADO-RS to a compressed syntax".into(),
            i.clone(),
            Some(dicom(if stored_ts == RLE {
                JPEG_LOSSLESS_SV1
            } else {
                RLE
            })),
        ),
        ("/wado as JPEG".into(), wado, None),
    ];
    asks.into_iter()
        .map(|(what, path, accept)| {
            let headers: Vec<(&str, &str)> =
                accept.iter().map(|a| ("Accept", a.as_str())).collect();
            let (status, body) = get(port, &path, &headers);
            (what, status, body)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// DIMSE C-GET

/// A C-GET of `study` by a requestor that takes CT instances only in
/// `accept_ts`: (final status, completed, failed, data sets received).
async fn c_get(port: u16, study: &str, accept_ts: &str) -> (Status, u16, u16, Vec<Vec<u8>>) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut scu = Scu::connect(addr).await;
    let mut rq = association_rq(
        CALLING_AE,
        "PACS",
        vec![pc(1, STUDY_GET, &[IMPLICIT_LE]), pc(3, CT, &[accept_ts])],
    );
    rq.user_variables
        .push(UserVariableItem::ScuScpRoleSelectionSubItem(
            CT.into(),
            RequestorRoles {
                scu: false,
                scp: true,
            },
        ));
    let pdu = scu.request(rq).await;
    assert!(matches!(pdu, Pdu::AssociationAC(_)), "{pdu:?}");
    let mut c = CommandSet::new();
    c.set_uid(tags::AFFECTED_SOP_CLASS_UID, STUDY_GET);
    c.set_us(tags::COMMAND_FIELD, command_field::C_GET_RQ);
    c.set_us(tags::MESSAGE_ID, 1);
    c.set_us(tags::PRIORITY, 0);
    c.set_us(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT);
    scu.send_command(1, &c).await;
    // Identifier in Implicit VR LE: Query/Retrieve Level, Study Instance UID.
    let mut id = Vec::new();
    for (tag, value) in [
        (0x0008_0052u32, "STUDY".to_owned()),
        (0x0020_000D, study.to_owned()),
    ] {
        let mut v = value.into_bytes();
        if v.len() % 2 == 1 {
            v.push(if tag == 0x0020_000D { 0 } else { b' ' });
        }
        id.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        id.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
        id.extend_from_slice(&(v.len() as u32).to_le_bytes());
        id.extend_from_slice(&v);
    }
    scu.send_data(1, &id).await;
    let mut received = Vec::new();
    for _ in 0..100 {
        let (command, data) = scu.read_message().await;
        match command.command_field().unwrap() {
            command_field::C_STORE_RQ => {
                received.push(data.unwrap_or_default());
                let rsp = CStoreRsp {
                    message_id_being_responded_to: command.us(tags::MESSAGE_ID).unwrap(),
                    affected_sop_class_uid: command.text(tags::AFFECTED_SOP_CLASS_UID).ok(),
                    affected_sop_instance_uid: command.text(tags::AFFECTED_SOP_INSTANCE_UID).ok(),
                    status: Status::SUCCESS,
                    error_comment: None,
                };
                scu.send_command(3, &rsp.to_command()).await;
            }
            command_field::C_GET_RSP => {
                let status = Status(command.us(tags::STATUS).unwrap());
                if status == Status::PENDING {
                    continue;
                }
                let n = |t| command.us_opt(t).ok().flatten().unwrap_or(0);
                let out = (
                    status,
                    n(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS),
                    n(tags::NUMBER_OF_FAILED_SUBOPERATIONS),
                    received,
                );
                scu.release().await;
                return out;
            }
            other => panic!("unexpected command {other:#x}"),
        }
    }
    panic!("C-GET never ended")
}

// ---------------------------------------------------------------------------

/// The imported objects and how to (re)start a server on them.
struct Archive {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    config: String,
}

impl Archive {
    fn start(&self) -> Server {
        Server::start(&self.dir, &["--config", &self.config])
    }
}

fn import(objects: &[(usize, &Obj)]) -> Archive {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    for (n, o) in objects {
        std::fs::write(inbox.join(format!("{n}.dcm")), o.part10(*n)).unwrap();
    }
    let dir = tmp.path().join("data");
    let o = pacs(&dir, &["import", inbox.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = tmp.path().join("pacs.toml");
    std::fs::write(
        &cfg,
        format!("[[remote_ae]]\nae_title = \"{CALLING_AE}\"\nhost = \"127.0.0.1\"\nport = 1\n"),
    )
    .unwrap();
    Archive {
        config: cfg.to_str().unwrap().to_owned(),
        _tmp: tmp,
        dir,
    }
}

/// Whether the server is up and still does normal work: `/healthz`, and a
/// render of the valid object.
fn serving(server: &Server, good_study: &str) -> Result<(), String> {
    match http_get(server.http_port, "/healthz") {
        Ok((200, _)) => {}
        Ok((status, body)) => return Err(format!("/healthz answered {status}: {body}")),
        Err(e) => return Err(format!("/healthz unreachable ({e}): the server died")),
    }
    let (status, body) = get(
        server.http_port,
        &format!("{}/rendered", instance_path(good_study)),
        &[],
    );
    if status != 200 || jpeg_size(&body) != Some((16, 16)) {
        return Err(format!(
            "a normal render answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

#[test]
fn hostile_objects_are_refused_on_every_read_path_and_the_server_stays_up() {
    let good = good();
    let corpus = corpus();
    let mut objects: Vec<(usize, &Obj)> = vec![(1, &good)];
    objects.extend(corpus.iter().enumerate().map(|(i, o)| (i + 2, o)));
    let archive = import(&objects);
    let mut server = archive.start();
    let good_study = good.study(1);
    assert_eq!(serving(&server, &good_study), Ok(()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Every wrong answer, not only the first: a server that died is
    // restarted so the rest of the corpus is still tried.
    let mut failures: Vec<String> = Vec::new();
    let after = |server: &mut Server, what: String, failures: &mut Vec<String>| {
        if let Err(e) = serving(server, &good_study) {
            failures.push(format!("after {what}: {e}"));
            *server = archive.start();
        }
    };
    for (n, o) in &objects[1..] {
        let study = o.study(*n);
        for (what, status, body) in http_paths(server.http_port, &study, o.ts) {
            let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            let ok = if o.valid {
                status == 200
            } else {
                (400..600).contains(&status)
            };
            if !ok {
                failures.push(format!("{}: {what} answered {status}: {text}", o.name));
            }
            after(&mut server, format!("{}: {what}", o.name), &mut failures);
        }
        // A C-GET whose requestor forces a conversion.
        let accept = if o.ts == EXPLICIT_LE {
            IMPLICIT_LE
        } else {
            EXPLICIT_LE
        };
        let port = server.dimse_port;
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(c_get(port, &study, accept))
        }));
        let outcome = match got {
            // A valid image arrives converted, without what followed Pixel
            // Data; a hostile one is a failed sub-operation.
            Ok((status, completed, failed, received)) => match o.valid {
                true if (status, completed, failed) == (Status::SUCCESS, 1, 0)
                    && received[0].len() < 1000 =>
                {
                    Ok(())
                }
                false
                    if (status, completed, failed)
                        == (Status::UNABLE_TO_PERFORM_SUBOPERATIONS, 0, 1)
                        && received.is_empty() =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "status {status:?}, {completed} completed, {failed} failed, {} received",
                    received.len()
                )),
            },
            Err(_) => Err("the association broke".to_owned()),
        };
        if let Err(e) = outcome {
            failures.push(format!("{}: C-GET: {e}", o.name));
        }
        after(&mut server, format!("{}: C-GET", o.name), &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}

/// Renders are never larger than the source: a viewport larger than the
/// image gives the image at its own size, on the rendered resources and on
/// `/wado`; a viewport past 8192 stays a bad request.
#[test]
fn renders_never_upscale() {
    let good = good();
    let archive = import(&[(1, &good)]);
    let server = archive.start();
    let study = good.study(1);
    let i = instance_path(&study);
    for path in [
        format!("{i}/rendered?viewport=512,512"),
        format!("{i}/thumbnail?viewport=4096,4096"),
        format!("{i}/frames/1/rendered?viewport=8192,8192"),
        format!(
            "/wado?requestType=WADO&studyUID={study}&seriesUID={study}.1&objectUID={study}.1.1&rows=1000&columns=1000"
        ),
    ] {
        let (status, body) = get(server.http_port, &path, &[]);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(jpeg_size(&body), Some((16, 16)), "{path}");
    }
    let (status, _) = get(
        server.http_port,
        &format!("{i}/rendered?viewport=9000,9000"),
        &[],
    );
    assert_eq!(status, 400);
    // Scaling down still works.
    let (status, body) = get(server.http_port, &format!("{i}/rendered?viewport=8,8"), &[]);
    assert_eq!(status, 200);
    assert_eq!(jpeg_size(&body), Some((8, 8)));
    let (exit, log) = server.stop();
    assert!(exit.success(), "{log}");
}
