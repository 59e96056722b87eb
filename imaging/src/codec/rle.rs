//! RLE Lossless encoder (DICOM PS3.5 Annex G).
//!
//! dicom-rs 0.10 can decode RLE Lossless but not encode it, so the archive
//! carries this small encoder. One frame becomes one fragment made of a
//! 64-byte header (number of segments followed by 15 little-endian `u32`
//! segment offsets, unused ones zero) and one PackBits segment per byte plane:
//! for every sample, its most significant byte plane first. Each row is
//! encoded separately (runs never cross a row boundary) and each segment is
//! padded with a zero byte to an even length.

pub use super::FrameLayout;
use super::{bail, ensure, Result};

/// Size of the RLE header in bytes.
const HEADER_LEN: usize = 64;
/// Maximum number of segments the header can describe.
const MAX_SEGMENTS: usize = 15;
/// Longest run (literal or replicate) one PackBits packet can hold.
const MAX_RUN: usize = 128;

/// Encode one native little-endian frame into an RLE Lossless fragment.
pub fn encode_frame(native: &[u8], layout: FrameLayout) -> Result<Vec<u8>> {
    let segments = layout.samples_per_pixel * layout.bytes_per_sample;
    ensure!(
        (1..=MAX_SEGMENTS).contains(&segments),
        "RLE supports 1 to {MAX_SEGMENTS} segments, the layout needs {segments}"
    );
    ensure!(
        native.len() == layout.frame_len(),
        "frame has {} bytes, layout expects {}",
        native.len(),
        layout.frame_len()
    );
    ensure!(layout.columns > 0 && layout.rows > 0, "empty frame");

    let stride = segments; // bytes per pixel
    let mut out = vec![0u8; HEADER_LEN];
    let mut offsets = Vec::with_capacity(segments);
    let mut plane_row = Vec::with_capacity(layout.columns);
    for sample in 0..layout.samples_per_pixel {
        // Most significant byte first: in little-endian storage that is the
        // highest byte index within the sample.
        for byte in (0..layout.bytes_per_sample).rev() {
            let Ok(offset) = u32::try_from(out.len()) else {
                bail!("RLE fragment exceeds 4 GiB");
            };
            offsets.push(offset);
            let within_pixel = sample * layout.bytes_per_sample + byte;
            let segment_start = out.len();
            for row in native.chunks_exact(layout.columns * stride) {
                plane_row.clear();
                plane_row.extend(row.iter().skip(within_pixel).step_by(stride));
                packbits_row(&plane_row, &mut out);
            }
            if (out.len() - segment_start) % 2 == 1 {
                out.push(0);
            }
        }
    }

    let Ok(count) = u32::try_from(segments) else {
        bail!("too many segments");
    };
    out[0..4].copy_from_slice(&count.to_le_bytes());
    for (i, offset) in offsets.iter().enumerate() {
        let at = 4 + 4 * i;
        out[at..at + 4].copy_from_slice(&offset.to_le_bytes());
    }
    Ok(out)
}

/// Length of the run of bytes equal to `row[start]`, capped at [`MAX_RUN`].
fn run_length(row: &[u8], start: usize) -> usize {
    let first = row[start];
    row[start..]
        .iter()
        .take(MAX_RUN)
        .take_while(|&&b| b == first)
        .count()
}

/// PackBits-encode one row of one byte plane, appending to `out`.
fn packbits_row(row: &[u8], out: &mut Vec<u8>) {
    let n = row.len();
    let mut i = 0;
    while i < n {
        let run = run_length(row, i);
        if run >= 2 {
            // Replicate run: header is 1 - run as a two's complement byte
            // (-1 ..= -127).
            out.push((257 - run) as u8);
            out.push(row[i]);
            i += run;
            continue;
        }
        // Literal run: extend until three equal bytes start, the row ends or
        // the packet is full.
        let start = i;
        while i < n && i - start < MAX_RUN {
            if i + 2 < n && row[i] == row[i + 1] && row[i + 1] == row[i + 2] {
                break;
            }
            i += 1;
        }
        out.push((i - start - 1) as u8);
        out.extend_from_slice(&row[start..i]);
    }
}

/// Decode an RLE Lossless fragment back into a native little-endian frame.
/// Used to self-check the encoder; strict about the header and segment
/// lengths, tolerant of the even-length padding byte.
pub fn decode_frame(fragment: &[u8], layout: FrameLayout) -> Result<Vec<u8>> {
    ensure!(fragment.len() >= HEADER_LEN, "fragment shorter than header");
    let read_u32 = |at: usize| -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&fragment[at..at + 4]);
        u32::from_le_bytes(b)
    };
    let segments = read_u32(0) as usize;
    ensure!(segments <= MAX_SEGMENTS, "too many segments: {segments}");
    ensure!(
        segments == layout.samples_per_pixel * layout.bytes_per_sample,
        "unexpected segment count {segments}"
    );
    let mut bounds: Vec<usize> = (0..segments)
        .map(|i| read_u32(4 + 4 * i) as usize)
        .collect();
    bounds.push(fragment.len());
    let plane_len = layout.rows * layout.columns;
    let stride = segments;
    let mut native = vec![0u8; layout.frame_len()];
    let mut segment_index = 0;
    for sample in 0..layout.samples_per_pixel {
        for byte in (0..layout.bytes_per_sample).rev() {
            let (from, to) = (bounds[segment_index], bounds[segment_index + 1]);
            ensure!(from <= to && to <= fragment.len(), "bad segment bounds");
            let plane = unpack(&fragment[from..to], plane_len)?;
            let within_pixel = sample * layout.bytes_per_sample + byte;
            for (p, value) in plane.into_iter().enumerate() {
                native[p * stride + within_pixel] = value;
            }
            segment_index += 1;
        }
    }
    Ok(native)
}

fn unpack(segment: &[u8], expected: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(expected);
    let mut i = 0;
    while i < segment.len() && out.len() < expected {
        let header = segment[i] as i8;
        i += 1;
        match header {
            0..=127 => {
                let len = header as usize + 1;
                ensure!(i + len <= segment.len(), "literal run past segment end");
                out.extend_from_slice(&segment[i..i + len]);
                i += len;
            }
            -127..=-1 => {
                ensure!(i < segment.len(), "replicate run past segment end");
                let len = (1 - header as isize) as usize;
                out.extend(std::iter::repeat_n(segment[i], len));
                i += 1;
            }
            _ => {}
        }
    }
    ensure!(
        out.len() == expected,
        "segment decodes to {} bytes, expected {expected}",
        out.len()
    );
    // Whatever remains may only be the single even-length padding byte.
    ensure!(segment.len() - i <= 1, "trailing data after segment");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg_bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn packbits_packets() {
        let mut out = Vec::new();
        packbits_row(&[7, 7, 7, 7], &mut out);
        assert_eq!(out, vec![0xfd, 7]);
        out.clear();
        packbits_row(&[1, 2, 3], &mut out);
        assert_eq!(out, vec![2, 1, 2, 3]);
        out.clear();
        packbits_row(&[1, 2, 5, 5, 5, 9], &mut out);
        assert_eq!(out, vec![1, 1, 2, 0xfe, 5, 0, 9]);
        out.clear();
        packbits_row(&[4; 300], &mut out);
        assert_eq!(out, vec![0x81, 4, 0x81, 4, 0xd5, 4]);
    }

    #[test]
    fn round_trips_various_layouts() -> Result<()> {
        let layouts = [
            FrameLayout {
                rows: 3,
                columns: 5,
                samples_per_pixel: 1,
                bytes_per_sample: 1,
            },
            FrameLayout {
                rows: 7,
                columns: 300,
                samples_per_pixel: 1,
                bytes_per_sample: 2,
            },
            FrameLayout {
                rows: 4,
                columns: 9,
                samples_per_pixel: 3,
                bytes_per_sample: 1,
            },
            FrameLayout {
                rows: 2,
                columns: 129,
                samples_per_pixel: 3,
                bytes_per_sample: 2,
            },
        ];
        for (k, layout) in layouts.into_iter().enumerate() {
            let mut data = lcg_bytes(layout.frame_len(), k as u32);
            // Mix in long runs so both packet kinds are exercised.
            for b in data.iter_mut().skip(layout.frame_len() / 3).take(200) {
                *b = 0x55;
            }
            let encoded = encode_frame(&data, layout)?;
            assert_eq!(encoded.len() % 2, 0);
            assert_eq!(decode_frame(&encoded, layout)?, data, "layout {k}");
        }
        Ok(())
    }

    #[test]
    fn rejects_bad_input() {
        let layout = FrameLayout {
            rows: 2,
            columns: 2,
            samples_per_pixel: 1,
            bytes_per_sample: 2,
        };
        assert!(encode_frame(&[0; 7], layout).is_err());
        let big = FrameLayout {
            rows: 1,
            columns: 1,
            samples_per_pixel: 4,
            bytes_per_sample: 4,
        };
        assert!(encode_frame(&[0; 16], big).is_err());
    }
}
