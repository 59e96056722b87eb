//! Synthetic pixel content for every sample study.
//!
//! Everything here is computed with integer arithmetic or with IEEE-754
//! basic operations (`+ - * /`, `sqrt`), which are exactly rounded, so the
//! output is identical on every platform. Transcendental functions from the
//! platform's libm are deliberately avoided.

/// A small integer hash used for deterministic texture and noise.
pub fn hash3(a: u32, b: u32, c: u32) -> u32 {
    let mut h = a
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add(b.wrapping_mul(0x85EB_CA77))
        .wrapping_add(c.wrapping_mul(0xC2B2_AE3D));
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297A_2D39);
    h ^= h >> 15;
    h
}

/// Cosine from a Taylor series after range reduction (basic operations only).
pub fn cos_det(x: f64) -> f64 {
    const TAU: f64 = std::f64::consts::TAU;
    const PI: f64 = std::f64::consts::PI;
    let mut r = x - TAU * (x / TAU).floor(); // 0 ..= TAU
    if r > PI {
        r -= TAU; // -PI ..= PI
    }
    let r2 = r * r;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=12 {
        let k = f64::from(2 * n);
        term = -term * r2 / ((k - 1.0) * k);
        sum += term;
    }
    sum
}

// ---------------------------------------------------------------------------
// CT phantom
// ---------------------------------------------------------------------------

/// CT phantom matrix size (rows = columns).
pub const CT_SIZE: usize = 256;

/// HU of the regions of the CT phantom (stored value = HU).
pub mod hu {
    /// Outside the body cylinder.
    pub const AIR: i16 = -1000;
    /// Body cylinder.
    pub const WATER: i16 = 0;
    /// Bone square insert.
    pub const BONE: i16 = 1000;
    /// Fat disk insert.
    pub const FAT: i16 = -100;
    /// Contrast disk insert.
    pub const CONTRAST: i16 = 200;
    /// Lung rectangle insert.
    pub const LUNG: i16 = -800;
    /// Spherical "lesion".
    pub const LESION: i16 = 60;
}

/// Exact geometry of the CT phantom, in pixel indices (column `c`, row `r`,
/// both 0-based, row 0 at the top) and millimetres along z. All bounds are
/// inclusive. README.md documents the same numbers.
pub mod ct_geometry {
    /// Body cylinder centre (column, row) and radius: `(c-128)²+(r-128)² <= 100²`.
    pub const BODY: (i32, i32, i32) = (128, 128, 100);
    /// Bone square: columns 108..=147, rows 58..=97 (40 × 40 px).
    pub const BONE: (i32, i32, i32, i32) = (108, 147, 58, 97);
    /// Fat disk centre and radius: `(c-80)²+(r-128)² <= 15²`.
    pub const FAT: (i32, i32, i32) = (80, 128, 15);
    /// Contrast disk centre and radius: `(c-176)²+(r-128)² <= 15²`.
    pub const CONTRAST: (i32, i32, i32) = (176, 128, 15);
    /// Lung rectangle: columns 113..=142, rows 150..=199 (30 wide × 50 tall).
    pub const LUNG: (i32, i32, i32, i32) = (113, 142, 150, 199);
    /// Lesion sphere centre (column, row, z in mm):
    /// `(c-128)²+(r-124)²+(z-60)² <= R²`, R = 22 mm in the current study and
    /// 16 mm in the prior (pixel spacing is 1 mm, so px = mm in-plane).
    pub const LESION_CENTRE: (i32, i32, i32) = (128, 124, 60);
}

fn in_disk(c: i32, r: i32, (cc, cr, radius): (i32, i32, i32)) -> bool {
    let (dc, dr) = (c - cc, r - cr);
    dc * dc + dr * dr <= radius * radius
}

fn in_rect(c: i32, r: i32, (c0, c1, r0, r1): (i32, i32, i32, i32)) -> bool {
    (c0..=c1).contains(&c) && (r0..=r1).contains(&r)
}

/// HU of the CT phantom at pixel (`c`, `r`) on the slice at `z_mm`, with a
/// lesion sphere of radius `lesion_radius_mm`. The inserts do not overlap.
pub fn ct_hu(c: i32, r: i32, z_mm: i32, lesion_radius_mm: i32) -> i16 {
    use ct_geometry as g;
    if !in_disk(c, r, g::BODY) {
        return hu::AIR;
    }
    if in_rect(c, r, g::BONE) {
        return hu::BONE;
    }
    if in_disk(c, r, g::FAT) {
        return hu::FAT;
    }
    if in_disk(c, r, g::CONTRAST) {
        return hu::CONTRAST;
    }
    if in_rect(c, r, g::LUNG) {
        return hu::LUNG;
    }
    let (lc, lr, lz) = g::LESION_CENTRE;
    let (dc, dr, dz) = (c - lc, r - lr, z_mm - lz);
    if dc * dc + dr * dr + dz * dz <= lesion_radius_mm * lesion_radius_mm {
        return hu::LESION;
    }
    hu::WATER
}

/// One 256×256 CT slice, row-major.
pub fn ct_slice(z_mm: i32, lesion_radius_mm: i32) -> Vec<i16> {
    let mut out = Vec::with_capacity(CT_SIZE * CT_SIZE);
    for r in 0..CT_SIZE as i32 {
        for c in 0..CT_SIZE as i32 {
            out.push(ct_hu(c, r, z_mm, lesion_radius_mm));
        }
    }
    out
}

/// Benchmark CT matrix size.
pub const BENCH_CT_SIZE: usize = 512;

/// One 512×512 benchmark CT slice: the phantom scaled ×2 with the lesion
/// following `z_mm`, plus deterministic noise (-8..=7 HU) that differs for
/// every slice index, so no two slices are identical.
pub fn bench_ct_slice(index: u32, z_mm: i32) -> Vec<i16> {
    let mut out = Vec::with_capacity(BENCH_CT_SIZE * BENCH_CT_SIZE);
    for r in 0..BENCH_CT_SIZE as i32 {
        for c in 0..BENCH_CT_SIZE as i32 {
            let base = ct_hu(c / 2, r / 2, z_mm, 22);
            let noise = (hash3(c as u32, r as u32, index) & 15) as i16 - 8;
            out.push(base + noise);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// MR head phantom
// ---------------------------------------------------------------------------

/// MR matrix size (rows = columns).
pub const MR_SIZE: usize = 192;
/// Number of MR slices.
pub const MR_SLICES: usize = 16;

/// Inside-ellipse test with centre (`cx`, `cy`) and semi-axes (`a`, `b`).
fn ellipse(x: f64, y: f64, cx: f64, cy: f64, a: f64, b: f64) -> f64 {
    let (u, v) = ((x - cx) / a, (y - cy) / b);
    u * u + v * v
}

/// One 192×192 T2-like head slice (values fit in 12 bits), row-major.
/// `slice` runs 0..16 from the skull base to the vertex.
pub fn mr_slice(slice: usize) -> Vec<u16> {
    let t = (slice as f64 - 6.0) / 10.0;
    let s = (1.0 - t * t).sqrt();
    let centre = MR_SIZE as f64 / 2.0;
    let ventricles = (4..=9).contains(&slice);
    let lesion = (8..=10).contains(&slice);
    let mut out = Vec::with_capacity(MR_SIZE * MR_SIZE);
    for row in 0..MR_SIZE {
        for col in 0..MR_SIZE {
            let (x, y) = (col as f64 + 0.5, row as f64 + 0.5);
            let texture = (hash3(col as u32, row as u32, slice as u32 + 1000) % 13) as i32 - 6;
            let value: i32 = if ellipse(x, y, centre, centre, 66.0 * s, 80.0 * s) <= 1.0 {
                // Brain.
                if lesion && ellipse(x, y, centre + 26.0, centre + 18.0, 8.0, 8.0) <= 1.0 {
                    2000
                } else if ventricles
                    && (ellipse(x, y, centre - 11.0, centre - 4.0, 6.0 * s, 18.0 * s) <= 1.0
                        || ellipse(x, y, centre + 11.0, centre - 4.0, 6.0 * s, 18.0 * s) <= 1.0)
                {
                    2600
                } else if ellipse(x, y, centre, centre, 52.0 * s, 64.0 * s) <= 1.0 {
                    650 + texture
                } else {
                    900 + texture
                }
            } else if ellipse(x, y, centre, centre, 72.0 * s, 86.0 * s) <= 1.0 {
                120 // skull
            } else if ellipse(x, y, centre, centre, 78.0 * s, 92.0 * s) <= 1.0 {
                1400 // scalp
            } else {
                0
            };
            out.push(value.clamp(0, 4095) as u16);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Ultrasound cine
// ---------------------------------------------------------------------------

/// Ultrasound frame width.
pub const US_WIDTH: usize = 320;
/// Ultrasound frame height.
pub const US_HEIGHT: usize = 240;
/// Number of ultrasound frames.
pub const US_FRAMES: usize = 24;

/// Bilinear value noise on a 6-pixel grid, 0..=255.
fn value_noise(x: usize, y: usize, seed: u32) -> u32 {
    const CELL: usize = 6;
    let (gx, gy) = ((x / CELL) as u32, (y / CELL) as u32);
    let (fx, fy) = ((x % CELL) as u32, (y % CELL) as u32);
    let corner = |dx: u32, dy: u32| hash3(gx + dx, gy + dy, seed) & 255;
    let top = corner(0, 0) * (CELL as u32 - fx) + corner(1, 0) * fx;
    let bottom = corner(0, 1) * (CELL as u32 - fx) + corner(1, 1) * fx;
    (top * (CELL as u32 - fy) + bottom * fy) / (CELL as u32 * CELL as u32)
}

/// One 320×240 RGB frame (interleaved, 8 bits per sample) of a synthetic
/// cardiac cine: a sector scan with a pulsating chamber, a colour-flow jet
/// that changes colour with the phase, an ECG strip and a moving cursor.
pub fn us_frame(frame: usize) -> Vec<u8> {
    let phase = frame as f64 / US_FRAMES as f64;
    // 0 (end diastole) .. 1 (end systole) .. 0
    let pulse = 0.5 - 0.5 * cos_det(std::f64::consts::TAU * phase);
    let (apex_x, apex_y) = (160.0, 8.0);
    let (chamber_x, chamber_y) = (160.0, 130.0);
    let (ax, ay) = (46.0 - 12.0 * pulse, 38.0 - 9.0 * pulse);
    let jet_strength = 1.0 - pulse;
    let filling = frame < US_FRAMES / 2;
    let cursor_x = 20 + frame * 280 / (US_FRAMES - 1);
    let mut out = vec![0u8; US_WIDTH * US_HEIGHT * 3];
    for y in 0..US_HEIGHT {
        for x in 0..US_WIDTH {
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            let (dx, dy) = (fx - apex_x, fy - apex_y);
            let dist = (dx * dx + dy * dy).sqrt();
            let mut rgb = [0u8; 3];
            // Sector: ±40° around the vertical (tan 40° ≈ 0.8391), 16..228 px deep.
            let in_sector = dy > 0.0 && dx.abs() <= 0.8391 * dy && (16.0..=228.0).contains(&dist);
            if in_sector {
                let tissue = 30 + value_noise(x, y, 7) * 100 / 255;
                let speckle = hash3(x as u32, y as u32, frame as u32) & 31;
                let gain = 1.0 - 0.35 * (dist / 228.0);
                let mut grey = (f64::from(tissue + speckle) * gain) as u32;
                let e = ellipse(fx, fy, chamber_x, chamber_y, ax, ay);
                if e <= 1.0 {
                    grey = 6 + (speckle >> 2);
                } else if e <= 1.6 {
                    grey = 170 + (speckle << 1) + value_noise(x, y, 11) / 8;
                }
                let g = grey.min(255) as u8;
                rgb = [g, g, g];
                if e <= 1.0 {
                    let j = ellipse(fx, fy, chamber_x, chamber_y - ay * 0.45, 12.0, 20.0);
                    if j <= 1.0 {
                        let v = ((1.0 - j) * jet_strength * 200.0) as u8;
                        rgb = if filling {
                            [55u8.saturating_add(v), 20, 20]
                        } else {
                            [20, 30, 60u8.saturating_add(v)]
                        };
                    }
                }
            }
            // Depth ticks every 20 px along the right edge of the sector.
            if (290..296).contains(&x) && y >= 20 && (y - 20) % 20 == 0 {
                rgb = [230, 230, 230];
            }
            // ECG strip along the bottom.
            if (206..=236).contains(&y) && (20..300).contains(&x) {
                let p = (x - 20) % 140;
                let level: i32 = match p {
                    30..=33 => 4 * (p as i32 - 29),
                    34..=37 => 16 - 8 * (p as i32 - 33),
                    38..=41 => -16 + 4 * (p as i32 - 37),
                    70..=89 => 3,
                    _ => 0,
                };
                let trace_y = 226 - level;
                if (y as i32 - trace_y).abs() <= 1 {
                    rgb = [40, 220, 70];
                }
                if x == cursor_x || x == cursor_x + 1 {
                    rgb = [240, 220, 40];
                }
            }
            let at = (y * US_WIDTH + x) * 3;
            out[at..at + 3].copy_from_slice(&rgb);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// CR chest
// ---------------------------------------------------------------------------

/// CR matrix size (rows = columns).
pub const CR_SIZE: usize = 512;

fn segment_distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let (apx, apy) = (p.0 - a.0, p.1 - a.1);
    let t = ((apx * abx + apy * aby) / (abx * abx + aby * aby)).clamp(0.0, 1.0);
    let (dx, dy) = (apx - t * abx, apy - t * aby);
    (dx * dx + dy * dy).sqrt()
}

/// One 512×512 PA chest-like radiograph (12-bit values, MONOCHROME2:
/// air dark, bone bright), row-major. Image right is the patient's left.
pub fn cr_image() -> Vec<u16> {
    let n = CR_SIZE as f64;
    let mut out = Vec::with_capacity(CR_SIZE * CR_SIZE);
    for row in 0..CR_SIZE {
        for col in 0..CR_SIZE {
            let (u, v) = ((col as f64 + 0.5) / n, (row as f64 + 0.5) / n);
            let du = u - 0.5;
            let half_width = if v < 0.10 {
                0.09
            } else if v < 0.20 {
                0.09 + (v - 0.10) * 3.1
            } else {
                0.40 + 0.02 * (v - 0.20)
            };
            let mut value = 150.0; // direct exposure, outside the body
            if v > 0.02 && du.abs() <= half_width {
                let w = du / half_width;
                value = 1300.0 + 700.0 * (1.0 - w * w).sqrt();
                let right_lung = ellipse(u, v, 0.33, 0.47, 0.13, 0.27);
                let left_lung = ellipse(u, v, 0.67, 0.47, 0.12, 0.26);
                let heart = ellipse(u, v, 0.57, 0.60, 0.13, 0.12);
                let lung = right_lung.min(left_lung);
                if heart <= 1.0 {
                    value = 1900.0 + 150.0 * (1.0 - heart);
                } else if lung <= 1.0 {
                    value = 650.0 + 350.0 * lung;
                }
                // Spine and mediastinum.
                if du.abs() < 0.045 {
                    let disc = ((v * 20.0) - (v * 20.0).floor()) < 0.12;
                    value += if disc { 350.0 } else { 600.0 };
                }
                // Posterior ribs, curving down laterally.
                let lateral = du.abs();
                if (0.05..0.40).contains(&lateral) {
                    for i in 0..10 {
                        let centre = 0.17 + 0.058 * f64::from(i) + 0.6 * lateral * lateral;
                        if (v - centre).abs() < 0.009 {
                            value += 330.0;
                        }
                    }
                }
                // Clavicles.
                let left = segment_distance((u, v), (0.30, 0.15), (0.47, 0.19));
                let right = segment_distance((u, v), (0.70, 0.15), (0.53, 0.19));
                if left.min(right) < 0.011 {
                    value += 500.0;
                }
            }
            out.push(value.clamp(0.0, 4095.0) as u16);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cos_is_accurate() {
        for i in -40..=40 {
            let x = f64::from(i) * 0.37;
            assert!((cos_det(x) - x.cos()).abs() < 1e-9, "{x}");
        }
    }

    #[test]
    fn ct_regions_have_documented_values() {
        assert_eq!(ct_hu(0, 0, 0, 22), hu::AIR);
        assert_eq!(ct_hu(128, 128, 0, 22), hu::WATER);
        assert_eq!(ct_hu(108, 58, 0, 22), hu::BONE);
        assert_eq!(ct_hu(147, 97, 0, 22), hu::BONE);
        assert_eq!(ct_hu(148, 97, 0, 22), hu::WATER);
        assert_eq!(ct_hu(80, 128, 0, 22), hu::FAT);
        assert_eq!(ct_hu(176, 113, 0, 22), hu::CONTRAST);
        assert_eq!(ct_hu(113, 150, 0, 22), hu::LUNG);
        assert_eq!(ct_hu(142, 199, 0, 22), hu::LUNG);
        assert_eq!(ct_hu(128, 124, 60, 22), hu::LESION);
        assert_eq!(ct_hu(128, 124, 60, 16), hu::LESION);
        assert_eq!(ct_hu(128, 124, 85, 22), hu::WATER);
        let slice = ct_slice(0, 22);
        let bone = slice.iter().filter(|&&v| v == hu::BONE).count();
        let lung = slice.iter().filter(|&&v| v == hu::LUNG).count();
        assert_eq!(bone, 40 * 40);
        assert_eq!(lung, 30 * 50);
    }

    #[test]
    fn bench_slices_differ() {
        assert_ne!(bench_ct_slice(0, 0), bench_ct_slice(1, 0));
    }

    #[test]
    fn mr_values_fit_12_bits() {
        for s in 0..MR_SLICES {
            assert!(mr_slice(s).iter().all(|&v| v < 4096));
        }
    }
}
