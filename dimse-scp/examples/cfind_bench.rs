//! C-FIND latency client for benchmarks: one association (Study Root FIND,
//! implicit VR little endian, Nagle off), each query shape run REPEAT
//! times; prints p50/p99 in milliseconds and the match count per shape as
//! JSON (the same shapes and return keys as bench/cfind.py).
//!
//! The client does as little as it can per response: it reads each PDU,
//! looks at the command's status and skips the identifier without decoding
//! it, so the time measured is the server's (and the loopback's), not the
//! client's.
//!
//!     cargo run --release -p dimse-scp --example cfind_bench -- \
//!         127.0.0.1:11112 PACS 50

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dicom_ul::pdu::{
    AssociationRQ, PDataValue, PDataValueType, PresentationContextProposed, UserVariableItem,
};
use dicom_ul::Pdu;
use dimse_scp::message::{command_field, tags, CommandSet};

const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const MAX_PDU: u32 = 1024 * 1024;

type Error = Box<dyn std::error::Error>;

/// One element in implicit VR little endian, value padded to even length.
fn element(out: &mut Vec<u8>, tag: u32, value: &str, pad: u8) {
    let mut v = value.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(pad);
    }
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&(tag as u16).to_le_bytes());
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(&v);
}

/// A study-level identifier: the return keys of bench/cfind.py, with the
/// query's matching keys filled in. Elements in ascending tag order.
fn identifier(keys: &[(u32, &str)]) -> Vec<u8> {
    let uid_tags = [0x0020_000D];
    let mut all: Vec<(u32, String)> = vec![
        (0x0008_0020, String::new()), // StudyDate
        (0x0008_0050, String::new()), // AccessionNumber
        (0x0008_0052, "STUDY".into()),
        (0x0008_0061, String::new()), // ModalitiesInStudy
        (0x0010_0010, String::new()), // PatientName
        (0x0010_0020, String::new()), // PatientID
        (0x0020_000D, String::new()), // StudyInstanceUID
        (0x0020_1208, String::new()), // NumberOfStudyRelatedInstances
    ];
    for (tag, v) in keys {
        if let Some(e) = all.iter_mut().find(|(t, _)| t == tag) {
            e.1 = (*v).to_owned();
        }
    }
    let mut out = Vec::new();
    for (tag, v) in &all {
        let pad = if uid_tags.contains(tag) { 0 } else { b' ' };
        element(&mut out, *tag, v, pad);
    }
    out
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn send(&mut self, pdu: &Pdu) -> Result<(), Error> {
        let mut out = Vec::new();
        dicom_ul::write_pdu(&mut out, pdu)?;
        self.stream.write_all(&out)?;
        Ok(())
    }

    fn receive(&mut self) -> Result<Pdu, Error> {
        let mut head = [0u8; 6];
        self.stream.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        if len > MAX_PDU as usize + 6 {
            return Err(format!("PDU of {len} bytes").into());
        }
        self.buf.clear();
        self.buf.extend_from_slice(&head);
        self.buf.resize(6 + len, 0);
        self.stream.read_exact(&mut self.buf[6..])?;
        dicom_ul::read_pdu(&self.buf[..], MAX_PDU, false)?.ok_or_else(|| "short PDU".into())
    }
}

fn associate(addr: &str, called: &str) -> Result<Conn, Error> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    conn.send(&Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "BENCH".into(),
        called_ae_title: called.into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: STUDY_ROOT_FIND.into(),
            transfer_syntaxes: vec![IMPLICIT_LE.into()],
        }],
        user_variables: vec![
            UserVariableItem::MaxLength(MAX_PDU),
            UserVariableItem::ImplementationClassUID("2.25.1".into()),
        ],
    }))?;
    match conn.receive()? {
        Pdu::AssociationAC(_) => Ok(conn),
        other => Err(format!("association refused: {other:?}").into()),
    }
}

/// Runs one C-FIND; returns the number of pending responses.
fn find(conn: &mut Conn, message_id: u16, ident: &[u8]) -> Result<usize, Error> {
    let mut cmd = CommandSet::new();
    cmd.set_uid(tags::AFFECTED_SOP_CLASS_UID, STUDY_ROOT_FIND);
    cmd.set_us(tags::COMMAND_FIELD, command_field::C_FIND_RQ);
    cmd.set_us(tags::MESSAGE_ID, message_id);
    cmd.set_us(tags::PRIORITY, 0);
    cmd.set_us(tags::COMMAND_DATA_SET_TYPE, 0x0000);
    // Command and identifier in one PDU: one write, one round trip.
    conn.send(&Pdu::PData {
        data: vec![
            PDataValue {
                presentation_context_id: 1,
                value_type: PDataValueType::Command,
                is_last: true,
                data: cmd.encode(),
            },
            PDataValue {
                presentation_context_id: 1,
                value_type: PDataValueType::Data,
                is_last: true,
                data: ident.to_vec(),
            },
        ],
    })?;
    let mut pending = 0;
    let mut command = Vec::new();
    loop {
        let Pdu::PData { data } = conn.receive()? else {
            return Err("unexpected PDU".into());
        };
        for pdv in data {
            if pdv.value_type != PDataValueType::Command {
                continue;
            }
            command.extend_from_slice(&pdv.data);
            if !pdv.is_last {
                continue;
            }
            let (rsp, _) = CommandSet::decode(&command)?;
            command.clear();
            match rsp.us(tags::STATUS)? {
                0xFF00 | 0xFF01 => pending += 1,
                0x0000 => return Ok(pending),
                s => return Err(format!("C-FIND failed with status {s:04X}").into()),
            }
        }
    }
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, called, repeat] = args.as_slice() else {
        return Err("usage: cfind_bench HOST:PORT CALLED_AE REPEAT".into());
    };
    let repeat: usize = repeat.parse()?;
    let shapes: [(&str, Vec<(u32, &str)>); 3] = [
        ("PatientID", vec![(0x0010_0020, "P001234")]),
        ("PatientName wildcard", vec![(0x0010_0010, "Nguy*")]),
        ("StudyDate range", vec![(0x0008_0020, "20240101-20240131")]),
    ];
    let mut conn = associate(addr, called)?;
    let mut id = 0u16;
    let mut out = Vec::new();
    for (name, keys) in &shapes {
        let ident = identifier(keys);
        let mut times = Vec::with_capacity(repeat);
        let mut matches = 0;
        for _ in 0..repeat {
            id = id.wrapping_add(1);
            let t0 = Instant::now();
            matches = find(&mut conn, id, &ident)?;
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let p50 = if times.is_empty() {
            0.0
        } else if times.len() % 2 == 1 {
            times[times.len() / 2]
        } else {
            (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0
        };
        let p99 = times
            .get(((times.len() as f64 * 0.99) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0);
        out.push(format!(
            "\"{name}\": {{\"p50_ms\": {p50:.2}, \"p99_ms\": {p99:.2}, \"matches\": {matches}}}"
        ));
    }
    let _ = conn.send(&Pdu::ReleaseRQ);
    let _ = conn.receive();
    println!("{{{}}}", out.join(", "));
    Ok(())
}
