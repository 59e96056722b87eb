//! JPEG Lossless encoder: ITU-T T.81 Process 14 (Annex H), selection
//! value 1 (predictor Ra, the sample to the left), point transform 0. Its
//! output is what transfer syntax 1.2.840.10008.1.2.4.70 calls for, and it
//! is also valid under 1.2.840.10008.1.2.4.57 (any predictor).
//!
//! One frame becomes one fragment: SOI, SOF3, one Huffman table built for
//! this frame's differences (T.81 Annex K.2, code lengths limited to 16),
//! one interleaved scan of all components, EOI, and a zero byte after EOI
//! when needed for an even length.
//!
//! Samples are taken as unsigned values of `precision` bits (Bits Stored):
//! bits above them are dropped, which is how signed pixel data travels in
//! JPEG (PS3.5 §8.2.1: the decoder gives back the same bit pattern).

pub use super::FrameLayout;
use super::{ensure, Result};

/// Difference categories SSSS 0..=16 (T.81 Table H.2).
const CATEGORIES: usize = 17;

/// Encodes one native little-endian frame whose samples have `precision`
/// bits (Bits Stored, 2 to 16).
pub fn encode_frame(native: &[u8], layout: FrameLayout, precision: u8) -> Result<Vec<u8>> {
    let FrameLayout {
        rows,
        columns,
        samples_per_pixel: spp,
        bytes_per_sample,
    } = layout;
    ensure!(
        spp == 1 || spp == 3,
        "JPEG Lossless encoding takes 1 or 3 samples per pixel, not {spp}"
    );
    ensure!(
        bytes_per_sample == 1 || bytes_per_sample == 2,
        "JPEG Lossless encoding takes 8 or 16 bits allocated, not {}",
        bytes_per_sample * 8
    );
    ensure!(
        (2..=16).contains(&precision) && usize::from(precision) <= bytes_per_sample * 8,
        "JPEG Lossless sample precision must be 2 to 16 bits and fit in the allocated bits \
         ({precision} bits stored in {} allocated)",
        bytes_per_sample * 8
    );
    ensure!(
        rows > 0 && columns > 0 && rows <= 65_535 && columns <= 65_535,
        "JPEG frames are 1 to 65535 pixels in each direction ({rows} rows, {columns} columns)"
    );
    ensure!(
        native.len() == layout.frame_len(),
        "frame has {} bytes, the layout calls for {}",
        native.len(),
        layout.frame_len()
    );

    let mask = (1u32 << precision) - 1;
    let samples: Vec<u16> = if bytes_per_sample == 1 {
        native
            .iter()
            .map(|b| (u32::from(*b) & mask) as u16)
            .collect()
    } else {
        native
            .chunks_exact(2)
            .map(|b| (u32::from(u16::from_le_bytes([b[0], b[1]])) & mask) as u16)
            .collect()
    };
    let diffs = differences(&samples, rows, columns, spp, precision);

    let mut freq = [0u32; CATEGORIES];
    for d in &diffs {
        freq[category(i32::from(*d))] += 1;
    }
    let table = HuffmanTable::optimal(&freq);

    let mut out = Vec::with_capacity(native.len() / 2 + 1024);
    out.extend_from_slice(&[0xFF, 0xD8]); // SOI
    write_sof3(&mut out, layout, precision);
    table.write_dht(&mut out);
    write_sos(&mut out, spp);
    let mut bits = BitWriter::new(&mut out);
    for d in &diffs {
        let d = i32::from(*d);
        let ssss = category(d);
        let (code, len) = table.codes[ssss];
        if ssss == 0 || ssss == 16 {
            bits.put(u64::from(code), u32::from(len));
        } else {
            // The code, then SSSS extra bits: the difference, minus one
            // when negative, in its low bits (T.81 F.1.2.1.1).
            let extra = (if d > 0 { d } else { d - 1 }) as u64 & ((1 << ssss) - 1);
            bits.put(
                (u64::from(code) << ssss) | extra,
                u32::from(len) + ssss as u32,
            );
        }
    }
    bits.finish();
    out.extend_from_slice(&[0xFF, 0xD9]); // EOI
    if out.len() % 2 == 1 {
        out.push(0);
    }
    Ok(out)
}

/// The prediction differences in scan order (pixel by pixel, components
/// interleaved), each reduced modulo 2^16 to -32768..=32767 (T.81 H.1.2.1),
/// which is exactly the range of `i16`.
fn differences(
    samples: &[u16],
    rows: usize,
    columns: usize,
    spp: usize,
    precision: u8,
) -> Vec<i16> {
    let stride = columns * spp;
    let mut out = Vec::with_capacity(samples.len());
    let mut above: Option<&[u16]> = None;
    for row in samples.chunks_exact(stride).take(rows) {
        for c in 0..spp {
            // First column: the sample above; the very first sample: the
            // middle of the range.
            let prediction = above.map_or(1u16 << (precision - 1), |a| a[c]);
            out.push(row[c].wrapping_sub(prediction) as i16);
        }
        for (x, left) in row[spp..].iter().zip(row) {
            out.push(x.wrapping_sub(*left) as i16);
        }
        above = Some(row);
    }
    out
}

/// SSSS of a difference: the number of bits of its magnitude; 16 for
/// -32768 (32768 modulo 2^16, sent without extra bits).
fn category(d: i32) -> usize {
    (32 - d.unsigned_abs().leading_zeros()) as usize
}

fn write_sof3(out: &mut Vec<u8>, layout: FrameLayout, precision: u8) {
    let nf = layout.samples_per_pixel as u8;
    out.extend_from_slice(&[0xFF, 0xC3]);
    out.extend_from_slice(&(8 + 3 * u16::from(nf)).to_be_bytes());
    out.push(precision);
    out.extend_from_slice(&(layout.rows as u16).to_be_bytes());
    out.extend_from_slice(&(layout.columns as u16).to_be_bytes());
    out.push(nf);
    for id in 1..=nf {
        // Component id, 1×1 sampling, quantisation table 0 (unused).
        out.extend_from_slice(&[id, 0x11, 0]);
    }
}

fn write_sos(out: &mut Vec<u8>, spp: usize) {
    let ns = spp as u8;
    out.extend_from_slice(&[0xFF, 0xDA]);
    out.extend_from_slice(&(6 + 2 * u16::from(ns)).to_be_bytes());
    out.push(ns);
    for id in 1..=ns {
        // Every component uses DC table 0.
        out.extend_from_slice(&[id, 0x00]);
    }
    // Ss = predictor 1, Se = 0, Ah = 0, Al = point transform 0.
    out.extend_from_slice(&[1, 0, 0]);
}

/// A Huffman table over the difference categories.
struct HuffmanTable {
    /// BITS: how many codes of each length 1..=16.
    counts: [u8; 16],
    /// HUFFVAL: the categories in code order.
    symbols: Vec<u8>,
    /// (code, length) per category; length 0 = unused.
    codes: [(u16, u8); CATEGORIES],
}

impl HuffmanTable {
    /// The table of T.81 Annex K.2 for these frequencies: a Huffman code
    /// with one extra code point reserved (so no code is all ones) and
    /// lengths limited to 16 bits.
    fn optimal(freq: &[u32; CATEGORIES]) -> HuffmanTable {
        const RESERVED: usize = CATEGORIES;
        let mut f = [0u64; CATEGORIES + 1];
        for (dst, src) in f.iter_mut().zip(freq) {
            *dst = u64::from(*src);
        }
        f[RESERVED] = 1;
        let mut size = [0usize; CATEGORIES + 1];
        let mut others: [Option<usize>; CATEGORIES + 1] = [None; CATEGORIES + 1];
        // The least frequent non-zero entry other than `skip`; ties go to
        // the largest index, so the reserved code point ends up longest.
        let least = |f: &[u64; CATEGORIES + 1], skip: Option<usize>| -> Option<usize> {
            let mut best: Option<usize> = None;
            for v in 0..f.len() {
                if f[v] == 0 || Some(v) == skip {
                    continue;
                }
                if best.is_none_or(|b| f[v] <= f[b]) {
                    best = Some(v);
                }
            }
            best
        };
        while let Some(v1) = least(&f, None) {
            let Some(v2) = least(&f, Some(v1)) else {
                break;
            };
            f[v1] += f[v2];
            f[v2] = 0;
            let mut v = v1;
            size[v] += 1;
            while let Some(next) = others[v] {
                v = next;
                size[v] += 1;
            }
            others[v] = Some(v2);
            let mut v = v2;
            size[v] += 1;
            while let Some(next) = others[v] {
                v = next;
                size[v] += 1;
            }
        }
        let mut bits = [0usize; 33];
        for s in size.iter().filter(|s| **s > 0) {
            bits[(*s).min(32)] += 1;
        }
        // T.81 K.3: shorten codes longer than 16 bits.
        let mut i = 32;
        while i > 16 {
            while bits[i] > 0 {
                let mut j = i - 2;
                while bits[j] == 0 {
                    j -= 1;
                }
                bits[i] -= 2;
                bits[i - 1] += 1;
                bits[j + 1] += 2;
                bits[j] -= 1;
            }
            i -= 1;
        }
        // Drop the reserved code point: the last code of the longest length.
        while i > 0 && bits[i] == 0 {
            i -= 1;
        }
        bits[i] -= 1;

        let mut order: Vec<usize> = (0..CATEGORIES).filter(|v| size[*v] > 0).collect();
        order.sort_by_key(|v| (size[*v], *v));
        let mut counts = [0u8; 16];
        for (len, c) in counts.iter_mut().enumerate() {
            *c = bits[len + 1] as u8;
        }
        let mut codes = [(0u16, 0u8); CATEGORIES];
        let mut code: u32 = 0;
        let mut k = 0;
        for len in 1..=16u8 {
            for _ in 0..counts[usize::from(len) - 1] {
                codes[order[k]] = (code as u16, len);
                code += 1;
                k += 1;
            }
            code <<= 1;
        }
        HuffmanTable {
            counts,
            symbols: order.iter().map(|v| *v as u8).collect(),
            codes,
        }
    }

    fn write_dht(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0xFF, 0xC4]);
        out.extend_from_slice(&(19 + self.symbols.len() as u16).to_be_bytes());
        out.push(0x00); // DC class, table 0
        out.extend_from_slice(&self.counts);
        out.extend_from_slice(&self.symbols);
    }
}

/// Entropy-coded data, most significant bit first, with a zero byte
/// stuffed after every 0xFF (T.81 F.1.2.3).
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    len: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> BitWriter<'a> {
        BitWriter {
            out,
            acc: 0,
            len: 0,
        }
    }

    /// Appends the low `len` bits of `value` (`len` at most 32).
    fn put(&mut self, value: u64, len: u32) {
        debug_assert!(len <= 32);
        self.acc = (self.acc << len) | value;
        self.len += len;
        if self.len >= 32 {
            self.len -= 32;
            let word = ((self.acc >> self.len) as u32).to_be_bytes();
            if word.contains(&0xFF) {
                for byte in word {
                    self.out.push(byte);
                    if byte == 0xFF {
                        self.out.push(0);
                    }
                }
            } else {
                self.out.extend_from_slice(&word);
            }
            self.acc &= (1u64 << self.len) - 1;
        }
    }

    /// Pads the last byte with one bits and writes what is left.
    fn finish(mut self) {
        let pad = (8 - self.len % 8) % 8;
        self.acc = (self.acc << pad) | ((1u64 << pad) - 1);
        self.len += pad;
        while self.len > 0 {
            self.len -= 8;
            let byte = (self.acc >> self.len) as u8;
            self.out.push(byte);
            if byte == 0xFF {
                self.out.push(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u32) -> Vec<u32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                state >> 8
            })
            .collect()
    }

    #[test]
    fn categories_follow_table_h2() {
        assert_eq!(category(0), 0);
        assert_eq!(category(1), 1);
        assert_eq!(category(-1), 1);
        assert_eq!(category(-3), 2);
        assert_eq!(category(255), 8);
        assert_eq!(category(32767), 15);
        assert_eq!(category(-32768), 16);
    }

    #[test]
    fn differences_wrap_modulo_2_16() {
        // 16-bit: 0 after 65535 is +1 modulo 2^16; the first sample is
        // predicted from 2^15.
        let d = differences(&[65535, 0, 32768], 1, 3, 1, 16);
        assert_eq!(d, vec![32767, 1, -32768]);
        // The first column is predicted from the sample above.
        let d = differences(&[10, 20, 13, 7], 2, 2, 1, 8);
        assert_eq!(d, vec![10 - 128, 10, 3, -6]);
        // Components are predicted from their own kind.
        let d = differences(&[1, 2, 3, 5, 7, 9, 4, 4, 4, 0, 0, 0], 2, 2, 3, 8);
        assert_eq!(d, vec![-127, -126, -125, 4, 5, 6, 3, 2, 1, -4, -4, -4]);
    }

    #[test]
    fn huffman_codes_are_prefix_free_and_short() {
        let cases: Vec<[u32; CATEGORIES]> = vec![
            [1; CATEGORIES],
            {
                let mut f = [0; CATEGORIES];
                f[0] = 1000;
                f
            },
            {
                // Fibonacci frequencies force lengths past 16 before K.3.
                let mut f = [0u32; CATEGORIES];
                let (mut a, mut b) = (1u32, 1u32);
                for v in f.iter_mut() {
                    *v = a;
                    (a, b) = (b, a + b);
                }
                f
            },
        ];
        for freq in cases {
            let t = HuffmanTable::optimal(&freq);
            let used: Vec<(u16, u8)> = (0..CATEGORIES)
                .filter(|v| freq[*v] > 0)
                .map(|v| t.codes[v])
                .collect();
            assert_eq!(used.len(), t.symbols.len());
            for (i, (c1, l1)) in used.iter().enumerate() {
                assert!((1..=16).contains(l1));
                // Never all ones (reserved for the marker prefix).
                assert_ne!(u32::from(*c1), (1u32 << l1) - 1);
                for (c2, l2) in used.iter().skip(i + 1) {
                    let l = (*l1).min(*l2);
                    assert_ne!(c1 >> (l1 - l), c2 >> (l2 - l), "prefix clash");
                }
            }
        }
    }

    #[test]
    fn stuffs_ff_and_pads_with_ones() {
        let mut out = Vec::new();
        let mut w = BitWriter::new(&mut out);
        w.put(0xFF, 8);
        w.put(0b101, 3);
        w.finish();
        assert_eq!(out, vec![0xFF, 0x00, 0b1011_1111]);
        // Whole words, with and without an 0xFF among their bytes.
        let mut out = Vec::new();
        let mut w = BitWriter::new(&mut out);
        w.put(0x1234, 16);
        w.put(0x56FF, 16);
        w.put(0x7F, 7);
        w.put(0xABCD_EF01, 32);
        w.finish();
        assert_eq!(
            out,
            vec![0x12, 0x34, 0x56, 0xFF, 0x00, 0xFF, 0x00, 0x57, 0x9B, 0xDE, 0x03]
        );
    }

    #[test]
    fn rejects_bad_layouts() {
        let ok = FrameLayout {
            rows: 2,
            columns: 2,
            samples_per_pixel: 1,
            bytes_per_sample: 2,
        };
        assert!(encode_frame(&[0; 8], ok, 12).is_ok());
        assert!(encode_frame(&[0; 7], ok, 12).is_err());
        for (bad, precision) in [
            (
                FrameLayout {
                    samples_per_pixel: 2,
                    ..ok
                },
                12,
            ),
            (ok, 17),
            (ok, 1),
            (
                FrameLayout {
                    bytes_per_sample: 1,
                    ..ok
                },
                12,
            ),
            (FrameLayout { rows: 0, ..ok }, 12),
        ] {
            assert!(encode_frame(&vec![0; bad.frame_len()], bad, precision).is_err());
        }
    }

    #[test]
    fn output_is_framed_and_even() {
        let layout = FrameLayout {
            rows: 17,
            columns: 33,
            samples_per_pixel: 3,
            bytes_per_sample: 1,
        };
        let data: Vec<u8> = lcg(layout.frame_len(), 7)
            .iter()
            .map(|v| *v as u8)
            .collect();
        let jpeg = encode_frame(&data, layout, 8).unwrap_or_default();
        assert_eq!(&jpeg[..4], &[0xFF, 0xD8, 0xFF, 0xC3]);
        assert_eq!(jpeg.len() % 2, 0);
        let end = jpeg.len() - if jpeg.ends_with(&[0]) { 3 } else { 2 };
        assert_eq!(&jpeg[end..end + 2], &[0xFF, 0xD9]);
    }
}
