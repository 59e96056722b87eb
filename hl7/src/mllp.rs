//! MLLP framing (HL7 v2 Minimal Lower Layer Protocol, Appendix C of the
//! transport specification): a message is sent as `0x0B`, the message,
//! `0x1C 0x0D`. Pure: bytes in, frames out.

/// Start block.
pub const VT: u8 = 0x0B;
/// End block, followed by a carriage return.
pub const FS: u8 = 0x1C;
pub const CR: u8 = 0x0D;

/// Why the stream cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message larger than {0} bytes (hl7_max_message_bytes)")]
    TooLarge(usize),
}

/// Takes the next complete frame out of `buf`, if there is one. Bytes
/// before a start block are dropped (line noise, a keep-alive newline).
/// A frame, or bytes after a start block, longer than `max` is an error:
/// the caller answers it and closes the connection.
pub fn next_frame(buf: &mut Vec<u8>, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    match buf.iter().position(|&b| b == VT) {
        Some(0) => {}
        Some(p) => {
            buf.drain(..p);
        }
        None => {
            buf.clear();
            return Ok(None);
        }
    }
    let end = buf.windows(2).position(|w| w == [FS, CR]);
    match end {
        Some(e) if e - 1 > max => Err(FrameError::TooLarge(max)),
        Some(e) => {
            let frame = buf[1..e].to_vec();
            buf.drain(..e + 2);
            Ok(Some(frame))
        }
        None if buf.len() > max + 3 => Err(FrameError::TooLarge(max)),
        None => Ok(None),
    }
}

/// Wraps a message in a frame.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(VT);
    out.extend_from_slice(message);
    out.extend_from_slice(&[FS, CR]);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_split_and_joined() {
        let mut buf = b"\r\n".to_vec();
        buf.extend(frame(b"MSH|1"));
        buf.extend(&frame(b"MSH|2")[..4]);
        assert_eq!(next_frame(&mut buf, 100).unwrap(), Some(b"MSH|1".to_vec()));
        assert_eq!(next_frame(&mut buf, 100).unwrap(), None);
        buf.extend(&frame(b"MSH|2")[4..]);
        assert_eq!(next_frame(&mut buf, 100).unwrap(), Some(b"MSH|2".to_vec()));
        assert!(buf.is_empty());
        let mut big = frame(&[b'x'; 20]);
        assert_eq!(next_frame(&mut big, 10), Err(FrameError::TooLarge(10)));
        let mut unterminated = vec![VT];
        unterminated.extend([b'x'; 20]);
        assert_eq!(
            next_frame(&mut unterminated, 10),
            Err(FrameError::TooLarge(10))
        );
        let mut noise = b"garbage".to_vec();
        assert_eq!(next_frame(&mut noise, 10).unwrap(), None);
        assert!(noise.is_empty());
    }
}
