//! Presentation data values: reassembling DIMSE messages from the PDV
//! fragments of P-DATA-TF PDUs, and cutting outgoing ones (PS3.8 §9.3.5,
//! Annex E).
//!
//! A message is a command set, sent as one or more command fragments, then,
//! when the command says so, a data set as one or more data fragments, all
//! on the presentation context the command was sent on (PS3.7 §6.3.1). The
//! [`Reassembler`] enforces that order: a data fragment before a command is
//! complete, a command in the middle of a data set, a change of context in
//! the middle of a message or a context that was not accepted are protocol
//! errors, which end the association with an A-ABORT.
//!
//! The command set is buffered (it is small; [`MAX_COMMAND_SET_LEN`] caps
//! it); data set fragments are handed out one by one as they arrive, never
//! accumulated here, so a large instance is streamed to its destination.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::command_set::{CommandSet, CommandSetError, GroupLength};

/// Largest command set accepted. Real command sets take a few hundred
/// bytes; the largest standard ones (N-services with attribute lists) stay
/// far below this.
pub const MAX_COMMAND_SET_LEN: usize = 64 * 1024;

/// Bytes of a PDV item other than its value: item length (4), presentation
/// context ID (1), message control header (1) (PS3.8 §9.3.5.1).
pub const PDV_ITEM_OVERHEAD: usize = 6;

/// One presentation data value: a command or data set fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdv {
    pub context_id: u8,
    /// Message control header bit 0 (PS3.8 E.2).
    pub is_command: bool,
    /// Message control header bit 1: last fragment of the command or data set.
    pub is_last: bool,
    pub data: Bytes,
}

/// What a fragment completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassembled {
    /// A whole command set. When `has_data_set`, data fragments on the same
    /// context follow.
    Command {
        context_id: u8,
        command: CommandSet,
        group_length: GroupLength,
        has_data_set: bool,
    },
    /// One fragment of the data set announced by the last command.
    Data {
        context_id: u8,
        fragment: Bytes,
        is_last: bool,
    },
}

/// A violation of the message structure; the association cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    #[error("PDV on presentation context {0}, which was not accepted")]
    UnknownContext(u8),
    #[error("data set fragment on context {0} without a preceding command")]
    DataBeforeCommand(u8),
    #[error("data set fragment on context {0} before the command set was complete")]
    DataDuringCommand(u8),
    #[error("command fragment on context {0} before the data set was complete")]
    CommandDuringDataSet(u8),
    #[error("fragment on context {found} in the middle of a message on context {expected}")]
    ContextChanged { expected: u8, found: u8 },
    #[error("command set larger than {limit} bytes")]
    CommandTooLarge { limit: usize },
    #[error("malformed command set: {0}")]
    MalformedCommand(#[from] CommandSetError),
}

#[derive(Debug)]
enum State {
    /// Between messages.
    Idle,
    /// Command fragments received, not the last one yet.
    Command { context_id: u8, buf: Vec<u8> },
    /// Reading the data set of the last command.
    DataSet { context_id: u8 },
}

/// The per-association message reassembly state machine.
#[derive(Debug)]
pub struct Reassembler {
    accepted: BTreeSet<u8>,
    max_command_len: usize,
    state: State,
}

impl Reassembler {
    /// `accepted`: the presentation context IDs accepted at negotiation.
    pub fn new(accepted: impl IntoIterator<Item = u8>, max_command_len: usize) -> Reassembler {
        Reassembler {
            accepted: accepted.into_iter().collect(),
            max_command_len,
            state: State::Idle,
        }
    }

    /// Whether the stream is at a message boundary.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Whether a data set is being received.
    pub fn in_data_set(&self) -> bool {
        matches!(self.state, State::DataSet { .. })
    }

    /// Feeds one PDV; returns what it completed, if anything. After an
    /// error the reassembler must not be fed again.
    pub fn push(&mut self, pdv: Pdv) -> Result<Option<Reassembled>, ReassemblyError> {
        let ctx = pdv.context_id;
        if !self.accepted.contains(&ctx) {
            return Err(ReassemblyError::UnknownContext(ctx));
        }
        match (&mut self.state, pdv.is_command) {
            (State::Idle, false) => Err(ReassemblyError::DataBeforeCommand(ctx)),
            (State::Idle, true) => {
                self.state = State::Command {
                    context_id: ctx,
                    buf: Vec::new(),
                };
                self.push_command(pdv)
            }
            (State::Command { context_id, .. }, true) => {
                if *context_id != ctx {
                    return Err(ReassemblyError::ContextChanged {
                        expected: *context_id,
                        found: ctx,
                    });
                }
                self.push_command(pdv)
            }
            (State::Command { .. }, false) => Err(ReassemblyError::DataDuringCommand(ctx)),
            (State::DataSet { .. }, true) => Err(ReassemblyError::CommandDuringDataSet(ctx)),
            (State::DataSet { context_id }, false) => {
                if *context_id != ctx {
                    return Err(ReassemblyError::ContextChanged {
                        expected: *context_id,
                        found: ctx,
                    });
                }
                if pdv.is_last {
                    self.state = State::Idle;
                }
                Ok(Some(Reassembled::Data {
                    context_id: ctx,
                    fragment: pdv.data,
                    is_last: pdv.is_last,
                }))
            }
        }
    }

    fn push_command(&mut self, pdv: Pdv) -> Result<Option<Reassembled>, ReassemblyError> {
        let State::Command { context_id, buf } = &mut self.state else {
            return Ok(None);
        };
        if buf.len() + pdv.data.len() > self.max_command_len {
            return Err(ReassemblyError::CommandTooLarge {
                limit: self.max_command_len,
            });
        }
        buf.extend_from_slice(&pdv.data);
        if !pdv.is_last {
            return Ok(None);
        }
        let context_id = *context_id;
        let (command, group_length) = CommandSet::decode(buf)?;
        let has_data_set = command.has_data_set();
        self.state = if has_data_set {
            State::DataSet { context_id }
        } else {
            State::Idle
        };
        Ok(Some(Reassembled::Command {
            context_id,
            command,
            group_length,
            has_data_set,
        }))
    }
}

/// The largest PDV value that fits in one P-DATA-TF PDU for a peer that
/// announced `peer_max_pdu` (0 means no limit, PS3.8 D.1; we then use
/// `fallback`).
pub fn max_fragment_len(peer_max_pdu: u32, fallback: usize) -> usize {
    if peer_max_pdu == 0 {
        return fallback.max(1);
    }
    (peer_max_pdu as usize)
        .saturating_sub(PDV_ITEM_OVERHEAD)
        .max(1)
}

/// Whether P-DATA-TF PDUs of at most `peer_max_pdu` bytes can carry a PDV
/// item with at least one byte of value (0 means no limit, PS3.8 D.1).
pub fn can_carry_pdv(peer_max_pdu: u32) -> bool {
    peer_max_pdu == 0 || peer_max_pdu as usize > PDV_ITEM_OVERHEAD
}

/// Cuts a command set or data set into PDVs of at most `max_len` value
/// bytes, one per P-DATA-TF PDU; the last one carries the last-fragment
/// bit. An empty input still gives one (empty, last) PDV.
pub fn fragment(context_id: u8, is_command: bool, bytes: Bytes, max_len: usize) -> Vec<Pdv> {
    let max_len = max_len.max(1);
    let mut out = Vec::with_capacity(bytes.len() / max_len + 1);
    let mut rest = bytes;
    loop {
        let take = rest.len().min(max_len);
        let data = rest.split_to(take);
        let is_last = rest.is_empty();
        out.push(Pdv {
            context_id,
            is_command,
            is_last,
            data,
        });
        if is_last {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::message::{CEchoRq, CStoreRq};

    fn cmd(ctx: u8, last: bool, data: &[u8]) -> Pdv {
        Pdv {
            context_id: ctx,
            is_command: true,
            is_last: last,
            data: Bytes::copy_from_slice(data),
        }
    }

    fn data(ctx: u8, last: bool, d: &[u8]) -> Pdv {
        Pdv {
            context_id: ctx,
            is_command: false,
            is_last: last,
            data: Bytes::copy_from_slice(d),
        }
    }

    fn store_command() -> Vec<u8> {
        CStoreRq {
            message_id: 1,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            affected_sop_instance_uid: "1.2.3".into(),
            priority: 0,
            move_originator_ae_title: None,
            move_originator_message_id: None,
        }
        .to_command()
        .encode()
    }

    fn echo_command() -> Vec<u8> {
        CEchoRq {
            message_id: 1,
            affected_sop_class_uid: "1.2.840.10008.1.1".into(),
        }
        .to_command()
        .encode()
    }

    /// What pushing a sequence gives: the kinds of the events, then the
    /// error that stopped it (if any).
    #[derive(Debug, PartialEq, Eq)]
    enum Step {
        Nothing,
        Command { ctx: u8, data_set: bool },
        Data { ctx: u8, len: usize, last: bool },
        Error(ReassemblyError),
    }

    fn run(pdvs: Vec<Pdv>) -> Vec<Step> {
        let mut r = Reassembler::new([1, 3], 1024);
        let mut out = Vec::new();
        for p in pdvs {
            match r.push(p) {
                Ok(None) => out.push(Step::Nothing),
                Ok(Some(Reassembled::Command {
                    context_id,
                    has_data_set,
                    ..
                })) => out.push(Step::Command {
                    ctx: context_id,
                    data_set: has_data_set,
                }),
                Ok(Some(Reassembled::Data {
                    context_id,
                    fragment,
                    is_last,
                })) => out.push(Step::Data {
                    ctx: context_id,
                    len: fragment.len(),
                    last: is_last,
                }),
                Err(e) => {
                    out.push(Step::Error(e));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn reassembly_table() {
        let store = store_command();
        let echo = echo_command();
        let (s1, s2) = store.split_at(10);
        use Step::*;
        let cases: Vec<(&str, Vec<Pdv>, Vec<Step>)> = vec![
            (
                "echo in one fragment",
                vec![cmd(1, true, &echo)],
                vec![Command {
                    ctx: 1,
                    data_set: false,
                }],
            ),
            (
                "store: command in two fragments, data in two",
                vec![
                    cmd(1, false, s1),
                    cmd(1, true, s2),
                    data(1, false, &[1; 5]),
                    data(1, true, &[2; 3]),
                ],
                vec![
                    Nothing,
                    Command {
                        ctx: 1,
                        data_set: true,
                    },
                    Data {
                        ctx: 1,
                        len: 5,
                        last: false,
                    },
                    Data {
                        ctx: 1,
                        len: 3,
                        last: true,
                    },
                ],
            ),
            (
                "two messages back to back on different contexts",
                vec![
                    cmd(1, true, &echo),
                    cmd(3, true, &store),
                    data(3, true, &[0; 4]),
                    cmd(1, true, &echo),
                ],
                vec![
                    Command {
                        ctx: 1,
                        data_set: false,
                    },
                    Command {
                        ctx: 3,
                        data_set: true,
                    },
                    Data {
                        ctx: 3,
                        len: 4,
                        last: true,
                    },
                    Command {
                        ctx: 1,
                        data_set: false,
                    },
                ],
            ),
            (
                "empty data fragments are fine",
                vec![
                    cmd(1, true, &store),
                    data(1, false, &[]),
                    data(1, true, &[]),
                ],
                vec![
                    Command {
                        ctx: 1,
                        data_set: true,
                    },
                    Data {
                        ctx: 1,
                        len: 0,
                        last: false,
                    },
                    Data {
                        ctx: 1,
                        len: 0,
                        last: true,
                    },
                ],
            ),
            (
                "data before any command",
                vec![data(1, true, &[0; 4])],
                vec![Error(ReassemblyError::DataBeforeCommand(1))],
            ),
            (
                "data before the command is complete",
                vec![cmd(1, false, s1), data(1, true, &[0; 4])],
                vec![Nothing, Error(ReassemblyError::DataDuringCommand(1))],
            ),
            (
                "data after a command that announced none",
                vec![cmd(1, true, &echo), data(1, true, &[0; 4])],
                vec![
                    Command {
                        ctx: 1,
                        data_set: false,
                    },
                    Error(ReassemblyError::DataBeforeCommand(1)),
                ],
            ),
            (
                "new command in the middle of a data set",
                vec![
                    cmd(1, true, &store),
                    data(1, false, &[0; 4]),
                    cmd(1, true, &echo),
                ],
                vec![
                    Command {
                        ctx: 1,
                        data_set: true,
                    },
                    Data {
                        ctx: 1,
                        len: 4,
                        last: false,
                    },
                    Error(ReassemblyError::CommandDuringDataSet(1)),
                ],
            ),
            (
                "command fragments on two contexts",
                vec![cmd(1, false, s1), cmd(3, true, s2)],
                vec![
                    Nothing,
                    Error(ReassemblyError::ContextChanged {
                        expected: 1,
                        found: 3,
                    }),
                ],
            ),
            (
                "data set on another context than its command",
                vec![cmd(1, true, &store), data(3, true, &[0; 4])],
                vec![
                    Command {
                        ctx: 1,
                        data_set: true,
                    },
                    Error(ReassemblyError::ContextChanged {
                        expected: 1,
                        found: 3,
                    }),
                ],
            ),
            (
                "context never accepted",
                vec![cmd(5, true, &echo)],
                vec![Error(ReassemblyError::UnknownContext(5))],
            ),
            (
                "even (invalid) context id",
                vec![cmd(2, true, &echo)],
                vec![Error(ReassemblyError::UnknownContext(2))],
            ),
            (
                "oversized command set",
                vec![cmd(1, false, &[0; 1000]), cmd(1, true, &[0; 100])],
                vec![
                    Nothing,
                    Error(ReassemblyError::CommandTooLarge { limit: 1024 }),
                ],
            ),
            (
                "malformed command set",
                vec![cmd(1, true, &[0, 0, 0, 1, 255, 255, 255, 255])],
                vec![Error(ReassemblyError::MalformedCommand(
                    CommandSetError::UndefinedLength { tag: 0x0000_0100 },
                ))],
            ),
        ];
        for (name, pdvs, expect) in cases {
            assert_eq!(run(pdvs), expect, "{name}");
        }
    }

    #[test]
    fn state_queries() {
        let mut r = Reassembler::new([1], MAX_COMMAND_SET_LEN);
        assert!(r.is_idle());
        r.push(cmd(1, true, &store_command())).unwrap();
        assert!(r.in_data_set());
        r.push(data(1, true, b"xx")).unwrap();
        assert!(r.is_idle());
    }

    #[test]
    fn fragmentation() {
        let bytes = Bytes::from((0..=255u8).cycle().take(1000).collect::<Vec<u8>>());
        for max in [1usize, 7, 100, 999, 1000, 1001, 1 << 20] {
            let pdvs = fragment(3, false, bytes.clone(), max);
            assert_eq!(pdvs.len(), bytes.len().div_ceil(max), "max {max}");
            assert!(pdvs
                .iter()
                .all(|p| p.data.len() <= max && p.context_id == 3 && !p.is_command));
            assert!(pdvs[..pdvs.len() - 1].iter().all(|p| !p.is_last));
            assert!(pdvs.last().unwrap().is_last);
            let joined: Vec<u8> = pdvs.iter().flat_map(|p| p.data.iter().copied()).collect();
            assert_eq!(joined, bytes.to_vec());
        }
        let empty = fragment(1, true, Bytes::new(), 10);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].is_last && empty[0].is_command && empty[0].data.is_empty());
    }

    #[test]
    fn fragment_sizes_from_peer_max() {
        assert_eq!(max_fragment_len(16384, 1 << 20), 16378);
        assert_eq!(max_fragment_len(0, 1 << 20), 1 << 20);
        assert_eq!(max_fragment_len(3, 1 << 20), 1);
        assert!(can_carry_pdv(0) && can_carry_pdv(7) && can_carry_pdv(4096));
        assert!(!can_carry_pdv(6) && !can_carry_pdv(1));
    }

    #[test]
    fn random_fragment_sequences_never_panic() {
        let commands = [store_command(), echo_command()];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let mut r = Reassembler::new([1, 3], 512);
            for _ in 0..20 {
                let kind = next() % 4;
                let data: Vec<u8> = match kind {
                    0 => commands[(next() % 2) as usize].clone(),
                    1 => {
                        let c = &commands[(next() % 2) as usize];
                        c[..(next() as usize) % (c.len() + 1)].to_vec()
                    }
                    _ => (0..(next() % 600)).map(|_| next() as u8).collect(),
                };
                let pdv = Pdv {
                    context_id: [1, 3, 5][(next() % 3) as usize],
                    is_command: next() & 1 == 0,
                    is_last: !matches!(next() % 3, 0),
                    data: Bytes::from(data),
                };
                if r.push(pdv).is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn fragments_reassemble() {
        let store = Bytes::from(store_command());
        let mut r = Reassembler::new([1], MAX_COMMAND_SET_LEN);
        let mut got = None;
        for p in fragment(1, true, store.clone(), 7) {
            if let Some(ev) = r.push(p).unwrap() {
                got = Some(ev);
            }
        }
        let Some(Reassembled::Command { command, .. }) = got else {
            panic!("no command");
        };
        assert_eq!(command.encode(), store.to_vec());
    }
}
