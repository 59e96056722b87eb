//! The storage service class provider (PS3.4 Annex B): how a C-STORE data
//! set reaches [`Archive::store_dataset`], and which status each outcome
//! becomes.
//!
//! The data set is never held whole: the association loop forwards each
//! PDV fragment through a bounded channel to a task that runs
//! `store_dataset` over a [`DataSetStream`]. The stream ends cleanly only
//! when the association loop says the last fragment has arrived; if the
//! loop stops for any other reason (peer gone, abort, time-out, shutdown)
//! the stream yields an error, so the archive discards what it received and
//! no partial instance becomes visible.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use pacs_core::archive::DuplicateRefusal;
use pacs_core::{Archive, StoreError, StoreOutcome, Uid};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::StreamReader;
use tracing::Instrument;

use crate::message::command_set::error_comment;
use crate::status::Status;

/// Data set fragments buffered between the association loop and the store
/// task. With fragments of at most one PDU (`Limits::max_pdu_len`), this
/// bounds the memory a C-STORE in flight holds.
pub const CHANNEL_DEPTH: usize = 8;

/// What the association loop sends to the store task.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    /// The last fragment has been forwarded: the data set is complete.
    End,
}

/// The data set as a byte stream. A channel closed without [`Chunk::End`]
/// yields an `UnexpectedEof` error: the data set was cut short.
pub struct DataSetStream {
    rx: mpsc::Receiver<Chunk>,
    done: bool,
}

impl DataSetStream {
    pub fn new(rx: mpsc::Receiver<Chunk>) -> DataSetStream {
        DataSetStream { rx, done: false }
    }
}

impl Stream for DataSetStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Chunk::Data(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Chunk::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the association ended before the last data set fragment",
                ))))
            }
        }
    }
}

/// A C-STORE whose data set is being received.
pub struct StoreInFlight {
    tx: Option<mpsc::Sender<Chunk>>,
    handle: JoinHandle<Result<StoreOutcome, StoreError>>,
}

impl StoreInFlight {
    /// Starts the store task for one data set.
    pub fn start(
        archive: &Archive,
        transfer_syntax: &str,
        sop_class: Uid,
        sop_instance: Uid,
        calling_ae: &str,
    ) -> StoreInFlight {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let archive = archive.clone();
        let ts = transfer_syntax.to_owned();
        let ae = calling_ae.to_owned();
        let handle = tokio::spawn(
            async move {
                let reader = StreamReader::new(DataSetStream::new(rx));
                archive
                    .store_dataset(&ts, &sop_class, &sop_instance, Some(&ae), reader)
                    .await
            }
            .in_current_span(),
        );
        StoreInFlight {
            tx: Some(tx),
            handle,
        }
    }

    /// Forwards a fragment. Once the store has given up (it failed before
    /// the end of the data set), fragments are dropped: the caller keeps
    /// reading them so the association stays in step.
    pub async fn forward(&mut self, fragment: Bytes) {
        if let Some(tx) = &self.tx {
            if tx.send(Chunk::Data(fragment)).await.is_err() {
                self.tx = None;
            }
        }
    }

    /// The last fragment was forwarded: waits for the archive's verdict
    /// (which comes only once blob and index entry are durable).
    pub async fn finish(mut self) -> Result<StoreOutcome, Failed> {
        if let Some(tx) = self.tx.take() {
            // A closed channel means the store already failed; its error
            // comes out of the handle.
            let _ = tx.send(Chunk::End).await;
        }
        self.join().await
    }

    /// The data set will not be completed: the store fails and removes
    /// whatever it had written; waits for that.
    pub async fn cancel(mut self) {
        self.tx = None;
        let _ = self.join().await;
    }

    async fn join(self) -> Result<StoreOutcome, Failed> {
        drop(self.tx);
        match self.handle.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(Failed::Store(e)),
            Err(e) => Err(Failed::Panicked(e.to_string())),
        }
    }
}

/// Why a C-STORE did not succeed.
#[derive(Debug)]
pub enum Failed {
    Store(StoreError),
    /// The store task panicked (a bug); the request fails, the association
    /// and the process go on.
    Panicked(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Store(e) => write!(f, "{e}"),
            Failed::Panicked(m) => write!(f, "store task panicked: {m}"),
        }
    }
}

/// What to answer for a failed store, or `None` when the association must
/// end instead (the data set stream broke: the peer is gone).
pub fn failure_status(failed: &Failed) -> Option<(Status, String)> {
    let e = match failed {
        Failed::Panicked(_) => {
            return Some((
                Status::PROCESSING_FAILURE,
                "internal error while storing".into(),
            ))
        }
        Failed::Store(e) => e,
    };
    let (status, comment) = match e {
        StoreError::Parse(p) => (Status::CANNOT_UNDERSTAND, p.to_string()),
        StoreError::Extract(x) => (Status::CANNOT_UNDERSTAND, x.to_string()),
        StoreError::SeriesInOtherStudy { .. } => (
            Status::CANNOT_UNDERSTAND,
            "series already belongs to another study".to_owned(),
        ),
        StoreError::Mismatch(m) => (Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, m.clone()),
        // The SOP Instance UID is stored with other content and the
        // duplicate policy refuses this object (PS3.4 B.2.3 Cxxx: the SCP
        // cannot accept it as it stands; a retry would not help).
        StoreError::Duplicate { reason, .. } => (
            Status::CANNOT_UNDERSTAND,
            match reason {
                DuplicateRefusal::MovesInstance => {
                    "SOP Instance UID stored for another patient/study".to_owned()
                }
                DuplicateRefusal::DifferentContent => {
                    "SOP Instance UID stored with different content".to_owned()
                }
            },
        ),
        // Below the free-space watermark: refused before anything was
        // written (PS3.4 B.2.3 A7xx); a retry later can succeed.
        StoreError::InsufficientStorage { .. } => (
            Status::OUT_OF_RESOURCES,
            "storage full: below the free-space watermark".to_owned(),
        ),
        StoreError::TooLarge { limit } => (
            Status::OUT_OF_RESOURCES,
            format!("object exceeds the {limit}-byte limit"),
        ),
        // The port's message may name paths or buckets: not for the peer.
        StoreError::Storage(_) => (Status::OUT_OF_RESOURCES, "storage unavailable".to_owned()),
        StoreError::Io(_) => return None,
    };
    Some((status, error_comment(&comment)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::StreamExt;
    use pacs_core::dicom::ParseError;
    use pacs_core::ports::PortError;

    #[tokio::test]
    async fn stream_ends_cleanly_only_after_end() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Chunk::Data(Bytes::from_static(b"ab")))
            .await
            .unwrap();
        tx.send(Chunk::End).await.unwrap();
        drop(tx);
        let items: Vec<_> = DataSetStream::new(rx).collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap(), &Bytes::from_static(b"ab"));

        let (tx, rx) = mpsc::channel(4);
        tx.send(Chunk::Data(Bytes::from_static(b"ab")))
            .await
            .unwrap();
        drop(tx);
        let items: Vec<_> = DataSetStream::new(rx).collect().await;
        assert_eq!(items.len(), 2);
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn status_mapping_table() {
        let cases: Vec<(Failed, Option<Status>)> = vec![
            (
                Failed::Store(StoreError::Parse(ParseError::NotPart10 {
                    detail: "x".into(),
                })),
                Some(Status::CANNOT_UNDERSTAND),
            ),
            (
                Failed::Store(StoreError::Extract(
                    pacs_core::records::ExtractError::Missing {
                        attribute: "StudyInstanceUID",
                    },
                )),
                Some(Status::CANNOT_UNDERSTAND),
            ),
            (
                Failed::Store(StoreError::SeriesInOtherStudy {
                    series: "1".into(),
                    existing: "2".into(),
                    claimed: "3".into(),
                }),
                Some(Status::CANNOT_UNDERSTAND),
            ),
            (
                Failed::Store(StoreError::Mismatch("different".into())),
                Some(Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
            ),
            (
                Failed::Store(StoreError::TooLarge { limit: 10 }),
                Some(Status::OUT_OF_RESOURCES),
            ),
            (
                Failed::Store(StoreError::Duplicate {
                    sop: "1.2.3".into(),
                    reason: DuplicateRefusal::MovesInstance,
                }),
                Some(Status::CANNOT_UNDERSTAND),
            ),
            (
                Failed::Store(StoreError::Duplicate {
                    sop: "1.2.3".into(),
                    reason: DuplicateRefusal::DifferentContent,
                }),
                Some(Status::CANNOT_UNDERSTAND),
            ),
            (
                Failed::Store(StoreError::InsufficientStorage {
                    volume: "/secret/data".into(),
                    available: 1,
                    required: 2,
                }),
                Some(Status::OUT_OF_RESOURCES),
            ),
            (
                Failed::Store(StoreError::Storage(PortError::Storage(
                    "/secret/path full".into(),
                ))),
                Some(Status::OUT_OF_RESOURCES),
            ),
            (
                Failed::Store(StoreError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                None,
            ),
            (
                Failed::Panicked("boom".into()),
                Some(Status::PROCESSING_FAILURE),
            ),
        ];
        for (failed, expect) in cases {
            let got = failure_status(&failed);
            assert_eq!(got.as_ref().map(|(s, _)| *s), expect, "{failed:?}");
            if let Some((_, comment)) = got {
                assert!(!comment.is_empty() && comment.len() <= 64, "{comment}");
                assert!(!comment.contains("/secret"), "{comment}");
            }
        }
    }
}
