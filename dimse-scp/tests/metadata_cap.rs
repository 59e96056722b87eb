//! C-STORE of an object whose DICOM JSON exceeds `max_metadata_bytes`, over
//! real TCP: refused with 0xC000 and a comment naming the limit, nothing
//! stored, the association goes on.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dimse_scp::Status;
use pacs_core::Limits;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_store_over_the_metadata_limit_is_refused() {
    let sop = "1.2.826.0.1.3680043.10.1.1.90";
    let object = synthetic_ct(sop, 4096);
    let header = pacs_core::dicom::parse_part10(&object, true, &Limits::default()).unwrap();
    let json_len = pacs_core::records::InstanceAttributes::from_header(&header)
        .unwrap()
        .metadata
        .len() as u64;
    let server = start(|c| c.limits.max_metadata_bytes = json_len - 1).await;
    let dataset = dataset_of(&object);
    let mut scu = Scu::associate(server.addr).await;
    let rsp = scu.store(3, 1, CT_STORAGE, sop, &dataset).await;
    assert_eq!(rsp.status, Status::CANNOT_UNDERSTAND, "{rsp:?}");
    let comment = rsp.error_comment.clone().unwrap_or_default();
    assert!(
        comment.contains("metadata") && comment.contains(&format!("{}-byte limit", json_len - 1)),
        "{rsp:?}"
    );
    assert_eq!(server.archive.stats().await.unwrap().instances, 0);
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
    assert_eq!(scu.echo(2).await, Status::SUCCESS);
    scu.release().await;
}
