//! Prints the header of DICOM Part 10 files as read by `pacs_core::dicom`:
//! meta information, transfer syntax, every element (sequences indented),
//! pixel data location and warnings.
//!
//! `cargo run -p pacs-core --example dicom_dump -- FILE...`

use pacs_core::dicom::{parse_part10, tags, DataSet, Value};
use pacs_core::Limits;

fn print(ds: &DataSet, indent: usize) {
    let pad = "  ".repeat(indent);
    for e in ds.iter() {
        let tag = format!("({:04X},{:04X})", tags::group(e.tag), tags::element(e.tag));
        match &e.value {
            Value::Sequence(items) => {
                println!("{pad}{tag} {} {} item(s)", e.vr_str(), items.len());
                for (i, item) in items.iter().enumerate() {
                    println!("{pad}  item {i}");
                    print(item, indent + 2);
                }
            }
            Value::Fragments(f) => println!("{pad}{tag} {} {} fragment(s)", e.vr_str(), f.len()),
            Value::Bytes(b) => {
                let shown = ds
                    .string(e.tag)
                    .map(|s| format!("{s:?}"))
                    .or_else(|| {
                        let v = ds.f64_values(e.tag);
                        (!v.is_empty() && v.len() <= 8).then(|| format!("{v:?}"))
                    })
                    .unwrap_or_else(|| format!("<{} bytes>", b.len()));
                println!("{pad}{tag} {} {shown}", e.vr_str());
            }
        }
    }
}

fn main() {
    let limits = Limits::default();
    for path in std::env::args().skip(1) {
        println!("== {path}");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) => {
                println!("cannot read: {e}");
                continue;
            }
        };
        match parse_part10(&data, true, &limits) {
            Ok(h) => {
                println!("meta: {:?}", h.meta);
                println!("syntax: {:?}", h.syntax);
                println!(
                    "data set at {}; pixel data: {:?}",
                    h.dataset_offset, h.pixel_data
                );
                print(&h.dataset, 0);
                for w in &h.warnings {
                    println!("warning: {w}");
                }
            }
            Err(e) => println!("error: {e}"),
        }
    }
}
