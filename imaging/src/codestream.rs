//! Checks of a compressed frame's own description of itself against the
//! object's Image Pixel attributes, before any decoder sees it.
//!
//! Decoders size their buffers from the codestream (the JPEG frame header,
//! the JPEG 2000 image and tile size marker, the RLE header), not from
//! Rows and Columns. A stream that claims 65535 × 65535 in a 1 KB object
//! would make them allocate gigabytes, and an allocation failure aborts the
//! process (no `catch_unwind` can stop that). So a stream whose dimensions,
//! component count or precision disagree with the data set is refused here
//! with the reason, and never decoded.
//!
//! - JPEG (PS3.5 §8.2.1, ISO/IEC 10918-1 B.2.2): every SOF marker of the
//!   stream (not only the first) must say Y = Rows, X = Columns,
//!   Nf = Samples per Pixel and a precision P no larger than Bits Allocated.
//! - JPEG 2000 (PS3.5 §8.2.4, ISO/IEC 15444-1 A.5.1): SIZ right after SOC
//!   (inside the `jp2c` box when a JP2 header wraps it): image width and
//!   height (Xsiz − XOsiz, Ysiz − YOsiz) = Columns and Rows, Csiz = Samples,
//!   each component's depth no larger than Bits Allocated, and at most
//!   65535 tiles (Isot is 16-bit).
//! - RLE (PS3.5 Annex G): the 64-byte header's segment count is Samples ×
//!   bytes per sample (G.2), the first offset is 64 and the offsets
//!   increase and stay inside the frame (G.5).
//!
//! Pure: slices in, a reason out.

/// What the data set says a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected {
    pub rows: u16,
    pub columns: u16,
    pub samples: u16,
    pub bits_allocated: u16,
}

/// A JPEG codestream (SOI first) of one frame; `complete` is false when
/// `stream` is only its first part (then running out of bytes ends the
/// check, once a frame header was seen).
pub(crate) fn check_jpeg(stream: &[u8], complete: bool, e: &Expected) -> Result<(), String> {
    if stream.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err("the frame does not start with a JPEG SOI marker".into());
    }
    let mut pos = 2;
    let mut frames = 0usize;
    let mut in_scan = false;
    while pos + 1 < stream.len() {
        if stream[pos] != 0xFF {
            if !in_scan {
                return Err(format!("JPEG marker expected at byte {pos}"));
            }
            pos += 1;
            continue;
        }
        let marker = stream[pos + 1];
        match marker {
            // Fill bytes, stuffed zero, restart markers: no length.
            0xFF => {
                pos += 1;
                continue;
            }
            0x00 | 0xD0..=0xD7 if in_scan => {
                pos += 2;
                continue;
            }
            0x01 | 0xD0..=0xD8 => {
                pos += 2;
                continue;
            }
            0xD9 => break, // EOI
            _ => {}
        }
        let len = stream
            .get(pos + 2..pos + 4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        let segment = len.and_then(|len| stream.get(pos + 4..pos + 2 + len.max(2)));
        let (Some(len), Some(segment)) = (len, segment) else {
            if !complete && frames > 0 {
                break;
            }
            return Err("the JPEG stream ends inside a marker segment".into());
        };
        if len < 2 {
            return Err(format!(
                "JPEG marker segment at byte {pos} has length {len}"
            ));
        }
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC); SOF55 is
        // JPEG-LS (ISO/IEC 14495-1), same layout.
        let is_sof = matches!(marker, 0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC))
            || marker == 0xF7;
        if is_sof {
            frames += 1;
            check_sof(segment, e)?;
        }
        in_scan = marker == 0xDA;
        pos += 2 + len;
    }
    if frames == 0 {
        return Err("the JPEG stream has no frame header (SOF marker)".into());
    }
    Ok(())
}

fn check_sof(segment: &[u8], e: &Expected) -> Result<(), String> {
    let [p, y0, y1, x0, x1, nf, ..] = *segment else {
        return Err("the JPEG frame header (SOF) is truncated".into());
    };
    let (y, x) = (u16::from_be_bytes([y0, y1]), u16::from_be_bytes([x0, x1]));
    if y != e.rows || x != e.columns {
        return Err(format!(
            "the JPEG frame header says {x} × {y} but Columns × Rows are {} × {}",
            e.columns, e.rows
        ));
    }
    if u16::from(nf) != e.samples {
        return Err(format!(
            "the JPEG frame header has {nf} components but Samples per Pixel is {}",
            e.samples
        ));
    }
    if p == 0 || u16::from(p) > e.bits_allocated {
        return Err(format!(
            "the JPEG frame header has a precision of {p} bits but Bits Allocated is {}",
            e.bits_allocated
        ));
    }
    Ok(())
}

/// A JPEG 2000 codestream (SOC first, or a JP2 file) of one frame.
pub(crate) fn check_j2k(stream: &[u8], e: &Expected) -> Result<(), String> {
    let codestream = if stream.get(..2) == Some(&[0xFF, 0x4F]) {
        stream
    } else if stream.get(4..8) == Some(b"jP  ") {
        jp2_codestream(stream)?
    } else {
        return Err("the frame does not start with a JPEG 2000 SOC marker".into());
    };
    // ISO/IEC 15444-1 A.5.1: SIZ is the first marker segment after SOC.
    if codestream.get(2..4) != Some(&[0xFF, 0x51]) {
        return Err("the JPEG 2000 stream has no SIZ marker after SOC".into());
    }
    let siz = codestream
        .get(6..)
        .ok_or("the JPEG 2000 SIZ marker is truncated")?;
    let u32_at = |i: usize| -> Result<u64, String> {
        siz.get(i..i + 4)
            .map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            .ok_or_else(|| "the JPEG 2000 SIZ marker is truncated".to_owned())
    };
    // Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz(2).
    let (xsiz, ysiz, xo, yo) = (u32_at(2)?, u32_at(6)?, u32_at(10)?, u32_at(14)?);
    let (xt, yt, xto, yto) = (u32_at(18)?, u32_at(22)?, u32_at(26)?, u32_at(30)?);
    let width = xsiz.checked_sub(xo).ok_or("JPEG 2000 SIZ: XOsiz > Xsiz")?;
    let height = ysiz.checked_sub(yo).ok_or("JPEG 2000 SIZ: YOsiz > Ysiz")?;
    if width != u64::from(e.columns) || height != u64::from(e.rows) {
        return Err(format!(
            "the JPEG 2000 SIZ marker says {width} × {height} but Columns × Rows are {} × {}",
            e.columns, e.rows
        ));
    }
    if xt == 0 || yt == 0 || xto > xo || yto > yo {
        return Err("the JPEG 2000 SIZ marker has an invalid tile grid".into());
    }
    let tiles = (xsiz - xto).div_ceil(xt) * (ysiz - yto).div_ceil(yt);
    if tiles > 65_535 {
        return Err(format!(
            "the JPEG 2000 SIZ marker declares {tiles} tiles (at most 65535 exist)"
        ));
    }
    let components = siz
        .get(34..36)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or("the JPEG 2000 SIZ marker is truncated")?;
    if components != e.samples {
        return Err(format!(
            "the JPEG 2000 SIZ marker has {components} components but Samples per Pixel is {}",
            e.samples
        ));
    }
    for c in 0..usize::from(components) {
        let ssiz = *siz
            .get(36 + 3 * c)
            .ok_or("the JPEG 2000 SIZ marker is truncated")?;
        let depth = u16::from(ssiz & 0x7F) + 1;
        if depth > e.bits_allocated {
            return Err(format!(
                "JPEG 2000 component {c} has {depth} bits but Bits Allocated is {}",
                e.bits_allocated
            ));
        }
    }
    Ok(())
}

/// The contiguous codestream box (`jp2c`) of a JP2 file (ISO/IEC 15444-1
/// I.4).
fn jp2_codestream(file: &[u8]) -> Result<&[u8], String> {
    let missing = || "the JP2 file has no readable codestream box".to_owned();
    let mut pos = 0usize;
    loop {
        let head = file.get(pos..pos + 8).ok_or_else(missing)?;
        let lbox = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let (start, len) = match lbox {
            // To the end of the file.
            0 => (pos + 8, (file.len() - pos - 8) as u64),
            // An 8-byte XLBox follows.
            1 => {
                let xl = file.get(pos + 8..pos + 16).ok_or_else(missing)?;
                let xl =
                    u64::from_be_bytes([xl[0], xl[1], xl[2], xl[3], xl[4], xl[5], xl[6], xl[7]]);
                (pos + 16, xl.checked_sub(16).ok_or_else(missing)?)
            }
            n => (pos + 8, n.checked_sub(8).ok_or_else(missing)?),
        };
        let end = usize::try_from(start as u64 + len)
            .ok()
            .filter(|e| *e <= file.len())
            .ok_or_else(missing)?;
        if &head[4..8] == b"jp2c" {
            return Ok(&file[start..end]);
        }
        if lbox == 0 {
            return Err(missing());
        }
        pos = end;
    }
}

/// The RLE header (PS3.5 G.5) of one frame: its first fragment, and the
/// length of all its fragments.
pub(crate) fn check_rle(first: &[u8], frame_len: usize, e: &Expected) -> Result<(), String> {
    let header = first
        .get(..64)
        .ok_or("the RLE frame is shorter than its 64-byte header")?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let segments = word(0);
    let expected = u32::from(e.samples) * u32::from(e.bits_allocated.div_ceil(8));
    if segments == 0 || segments > 15 || segments != expected {
        return Err(format!(
            "the RLE header declares {segments} segments but Samples per Pixel and Bits \
             Allocated call for {expected} (PS3.5 G.2)"
        ));
    }
    let mut previous = 0u64;
    for s in 0..segments as usize {
        let offset = u64::from(word(4 + 4 * s));
        let ok = if s == 0 {
            offset == 64
        } else {
            offset > previous
        };
        if !ok || offset >= frame_len as u64 {
            return Err(format!(
                "RLE segment {} starts at offset {offset}, outside the {frame_len}-byte frame or \
                 out of order",
                s + 1,
            ));
        }
        previous = offset;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Expected = Expected {
        rows: 4,
        columns: 6,
        samples: 1,
        bits_allocated: 8,
    };

    fn sof(y: u16, x: u16, nf: u8, p: u8) -> Vec<u8> {
        let mut s = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 8 + 3 * nf, p];
        s.extend_from_slice(&y.to_be_bytes());
        s.extend_from_slice(&x.to_be_bytes());
        s.push(nf);
        for i in 0..nf {
            s.extend_from_slice(&[i + 1, 0x11, 0]);
        }
        s.extend_from_slice(&[0xFF, 0xD9]);
        s
    }

    fn check_jpeg_all(stream: &[u8], e: &Expected) -> Result<(), String> {
        check_jpeg(stream, true, e)
    }

    fn check_rle_all(frame: &[u8], e: &Expected) -> Result<(), String> {
        check_rle(frame, frame.len(), e)
    }

    #[test]
    fn jpeg_frame_header_must_match() {
        assert_eq!(check_jpeg_all(&sof(4, 6, 1, 8), &E), Ok(()));
        assert!(check_jpeg_all(&sof(4000, 6, 1, 8), &E).is_err());
        assert!(check_jpeg_all(&sof(4, 60000, 1, 8), &E).is_err());
        assert!(check_jpeg_all(&sof(4, 6, 3, 8), &E).is_err());
        assert!(check_jpeg_all(&sof(4, 6, 1, 12), &E).is_err());
        assert!(
            check_jpeg_all(&[0xFF, 0xD8, 0xFF, 0xD9], &E).is_err(),
            "no SOF"
        );
        assert!(check_jpeg_all(&[0, 1, 2], &E).is_err(), "no SOI");
        // A second, lying frame header later in the stream is seen too.
        let mut two = sof(4, 6, 1, 8);
        two.truncate(two.len() - 2);
        two.extend_from_slice(&sof(9999, 9999, 1, 8)[2..]);
        assert!(check_jpeg_all(&two, &E).is_err());
    }

    fn siz(w: u32, h: u32, c: u16, depth: u8, tile: u32) -> Vec<u8> {
        let mut s = vec![0xFF, 0x4F, 0xFF, 0x51];
        s.extend_from_slice(&(38 + 3 * c).to_be_bytes());
        s.extend_from_slice(&0u16.to_be_bytes());
        for v in [w, h, 0, 0, tile, tile, 0, 0] {
            s.extend_from_slice(&v.to_be_bytes());
        }
        s.extend_from_slice(&c.to_be_bytes());
        for _ in 0..c {
            s.extend_from_slice(&[depth - 1, 1, 1]);
        }
        s
    }

    #[test]
    fn j2k_siz_must_match() {
        assert_eq!(check_j2k(&siz(6, 4, 1, 8, 6), &E), Ok(()));
        assert!(check_j2k(&siz(60000, 4, 1, 8, 6), &E).is_err());
        assert!(check_j2k(&siz(6, 4, 3, 8, 6), &E).is_err());
        assert!(check_j2k(&siz(6, 4, 1, 16, 6), &E).is_err());
        assert!(check_j2k(&siz(6, 4, 1, 8, 0), &E).is_err());
        let big = Expected {
            rows: 4096,
            columns: 4096,
            ..E
        };
        assert!(check_j2k(&siz(4096, 4096, 1, 8, 1), &big).is_err(), "tiles");
        assert!(check_j2k(&siz(6, 4, 1, 8, 6)[..20], &E).is_err());
        // Wrapped in a JP2 file.
        let cs = siz(6, 4, 1, 8, 6);
        let mut jp2 = vec![0, 0, 0, 12];
        jp2.extend_from_slice(b"jP  \r\n\x87\n");
        jp2.extend_from_slice(&(8 + cs.len() as u32).to_be_bytes());
        jp2.extend_from_slice(b"jp2c");
        jp2.extend_from_slice(&cs);
        assert_eq!(check_j2k(&jp2, &E), Ok(()));
    }

    #[test]
    fn rle_header_must_match() {
        let mut frame = vec![0u8; 100];
        frame[0] = 1;
        frame[4] = 64;
        assert_eq!(check_rle_all(&frame, &E), Ok(()));
        frame[0] = 2;
        assert!(check_rle_all(&frame, &E).is_err(), "segment count");
        frame[0] = 1;
        frame[4] = 200;
        assert!(check_rle_all(&frame, &E).is_err(), "offset outside");
        assert!(check_rle_all(&frame[..10], &E).is_err());
        let rgb16 = Expected {
            samples: 3,
            bits_allocated: 16,
            ..E
        };
        let mut frame = vec![0u8; 200];
        frame[0] = 6;
        for (i, off) in [64u32, 70, 80, 90, 100, 110].iter().enumerate() {
            frame[4 + 4 * i..8 + 4 * i].copy_from_slice(&off.to_le_bytes());
        }
        assert_eq!(check_rle_all(&frame, &rgb16), Ok(()));
        frame[12..16].copy_from_slice(&65u32.to_le_bytes());
        assert!(check_rle_all(&frame, &rgb16).is_err(), "out of order");
    }
}
