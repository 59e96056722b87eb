//! Rendering one frame of a stored instance to a JPEG or PNG image, for
//! the rendered and thumbnail resources of PS3.18 (8.3.5, 9.5; Supplement
//! 203) and WADO-URI.
//!
//! The pipeline is the grayscale one of PS3.3 C.11 in its simplest form:
//! stored values → Modality LUT (Rescale Slope / Intercept only) → VOI
//! (a window: the request's, else the object's first Window Center /
//! Width, else the frame's minimum and maximum) → 8-bit presentation
//! values, inverted for MONOCHROME1. Colour images (RGB, YBR_FULL,
//! YBR_FULL_422, or whatever a codec hands back as RGB) are shown as they
//! are. The result may be scaled down to fit a viewport, keeping its
//! aspect; it is never scaled up past the source's size.
//!
//! Pure: bytes in, bytes out; no IO, no threads of its own (the decoder may
//! use rayon). A panic inside the decoder is caught and reported as
//! [`RenderError::Unsupported`].
//!
//! Not done (refused with [`RenderError::Unsupported`] or silently
//! skipped, as noted): PALETTE COLOR (refused: `dicom-pixeldata` 0.10 has
//! no palette conversion), images of more than 16 bits per sample and
//! float pixel data (refused), transfer syntaxes without a decoder here
//! (refused: JPEG-LS without CharLS, MPEG/HEVC video...), Modality LUT
//! Sequence, VOI LUT Sequence and Presentation LUT (skipped), overlays,
//! annotations, ICC profiles (skipped).

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_object::OpenFileOptions;
use dicom_pixeldata::{
    DecodedPixelData, PhotometricInterpretation, PixelDecoder, PixelRepresentation,
    PlanarConfiguration, VoiLutFunction,
};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::{self, FilterType};
use image::{ExtendedColorType, GrayImage, ImageEncoder, RgbImage};
use pacs_core::Limits;

use crate::object::ObjectError;

/// Largest viewport side accepted. Images are never scaled up (a viewport
/// larger than the image shows it at its own size), so this bounds only
/// what a request may say.
pub const MAX_VIEWPORT: u32 = 8192;

/// The encoding of the rendered image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Media {
    /// Baseline JPEG, quality 1..=100.
    Jpeg { quality: u8 },
    /// PNG (lossless: the 8-bit presentation values exactly).
    Png,
}

impl Media {
    /// The media type of the encoded bytes.
    pub fn media_type(self) -> &'static str {
        match self {
            Media::Jpeg { .. } => "image/jpeg",
            Media::Png => "image/png",
        }
    }
}

/// VOI LUT Function (0028,1056), PS3.3 C.11.2.1.2/3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VoiFunction {
    /// `LINEAR` (C.11.2.1.2.1): the classic window with its half-unit shift.
    #[default]
    Linear,
    /// `LINEAR_EXACT` (C.11.2.1.3.2).
    LinearExact,
    /// `SIGMOID` (C.11.2.1.3.1).
    Sigmoid,
}

/// A window in modality units (after Rescale Slope / Intercept).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub function: VoiFunction,
}

impl Window {
    /// Whether the standard allows this width for the function: at least 1
    /// for `LINEAR`, positive otherwise; both values finite.
    pub fn is_valid(&self) -> bool {
        self.center.is_finite()
            && self.width.is_finite()
            && match self.function {
                VoiFunction::Linear => self.width >= 1.0,
                VoiFunction::LinearExact | VoiFunction::Sigmoid => self.width > 0.0,
            }
    }
}

/// How to render a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderOptions {
    pub media: Media,
    /// Overrides the object's window (grayscale images only).
    pub window: Option<Window>,
    /// Scale to fit inside `(width, height)`, keeping the aspect ratio.
    pub viewport: Option<(u32, u32)>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            media: Media::Jpeg { quality: 90 },
            window: None,
            viewport: None,
        }
    }
}

/// An encoded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    /// `image/jpeg` or `image/png`.
    pub media_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Why a frame could not be rendered. Messages are for a person and carry
/// no internal detail beyond the object's own attributes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The object is valid but this server cannot decode or show it.
    #[error("cannot render this object: {reason}")]
    Unsupported { reason: String },
    /// The object has no Pixel Data to render.
    #[error("the object has no pixel data")]
    NoPixelData,
    /// Frames are numbered from 1 to `frames`.
    #[error("frame {frame} does not exist (the object has {frames} frame(s))")]
    FrameOutOfRange { frame: u32, frames: u32 },
    /// The object could not be parsed or its image attributes contradict
    /// each other.
    #[error("the object's image could not be read: {reason}")]
    Malformed { reason: String },
    /// The options asked for something impossible (zero viewport, window
    /// width below the minimum, quality outside 1..=100).
    #[error("invalid rendering options: {reason}")]
    InvalidOptions { reason: String },
    /// The image encoder failed.
    #[error("the image could not be encoded: {reason}")]
    Encode { reason: String },
}

fn unsupported(reason: impl Into<String>) -> RenderError {
    RenderError::Unsupported {
        reason: reason.into(),
    }
}

fn malformed(reason: impl Into<String>) -> RenderError {
    RenderError::Malformed {
        reason: reason.into(),
    }
}

/// Renders frame `frame` (1-based) of the Part 10 object `part10`, under
/// the default [`Limits`].
pub fn render_frame(
    part10: &[u8],
    frame: u32,
    opts: &RenderOptions,
) -> Result<Rendered, RenderError> {
    render_frame_with(part10, frame, opts, &Limits::default())
}

/// [`render_frame`] under `limits` (what the pixel-work service uses): the
/// object is first cut after Pixel Data and checked ([`crate::object`]).
pub fn render_frame_with(
    part10: &[u8],
    frame: u32,
    opts: &RenderOptions,
    limits: &Limits,
) -> Result<Rendered, RenderError> {
    check_options(opts)?;
    let object = crate::object::bounded(part10, limits).map_err(|e| match e {
        ObjectError::Unreadable(r) => malformed(format!("not a readable DICOM object ({r})")),
        ObjectError::Refused(r) => malformed(r),
        ObjectError::TooLarge(r) => unsupported(r),
    })?;
    let part10 = &object.bytes[..];
    // A codec that panics on hostile input must not take the server down.
    catch_unwind(AssertUnwindSafe(|| render_inner(part10, frame, opts))).unwrap_or_else(|_| {
        Err(unsupported(
            "the pixel data decoder failed on this object (it may be corrupt)",
        ))
    })
}

fn check_options(opts: &RenderOptions) -> Result<(), RenderError> {
    if let Media::Jpeg { quality } = opts.media {
        if !(1..=100).contains(&quality) {
            return Err(RenderError::InvalidOptions {
                reason: format!("JPEG quality {quality} is outside 1..100"),
            });
        }
    }
    if let Some(w) = opts.window {
        if !w.is_valid() {
            return Err(RenderError::InvalidOptions {
                reason: format!(
                    "window width {} is not allowed for {:?} (LINEAR needs at least 1, others more than 0)",
                    w.width, w.function
                ),
            });
        }
    }
    if let Some((w, h)) = opts.viewport {
        if w == 0 || h == 0 || w > MAX_VIEWPORT || h > MAX_VIEWPORT {
            return Err(RenderError::InvalidOptions {
                reason: format!("viewport {w}x{h} is outside 1..{MAX_VIEWPORT}"),
            });
        }
    }
    Ok(())
}

fn render_inner(part10: &[u8], frame: u32, opts: &RenderOptions) -> Result<Rendered, RenderError> {
    let obj = OpenFileOptions::new()
        .from_reader(Cursor::new(part10))
        .map_err(|e| malformed(format!("not a readable DICOM Part 10 object ({e})")))?;

    let ts_uid = obj.meta().transfer_syntax().to_owned();
    match TransferSyntaxRegistry.get(&ts_uid) {
        None => return Err(unsupported(format!("unknown transfer syntax {ts_uid}"))),
        Some(ts) if !ts.can_decode_all() => {
            return Err(unsupported(format!(
                "no decoder for transfer syntax {} ({ts_uid})",
                ts.name()
            )))
        }
        Some(_) => {}
    }
    if obj.element(dicom_dictionary_std::tags::PIXEL_DATA).is_err() {
        let float = obj
            .element(dicom_dictionary_std::tags::FLOAT_PIXEL_DATA)
            .is_ok()
            || obj
                .element(dicom_dictionary_std::tags::DOUBLE_FLOAT_PIXEL_DATA)
                .is_ok();
        return Err(if float {
            unsupported("float pixel data cannot be rendered")
        } else {
            RenderError::NoPixelData
        });
    }
    let int_attr = |tag| obj.element(tag).ok().and_then(|e| e.to_int::<i64>().ok());
    let frames = int_attr(dicom_dictionary_std::tags::NUMBER_OF_FRAMES)
        .unwrap_or(1)
        .max(1);
    let frames = u32::try_from(frames).unwrap_or(u32::MAX);
    if frame == 0 || frame > frames {
        return Err(RenderError::FrameOutOfRange { frame, frames });
    }
    let bits_allocated = int_attr(dicom_dictionary_std::tags::BITS_ALLOCATED).unwrap_or(0);
    if !matches!(bits_allocated, 1 | 8 | 16) {
        return Err(unsupported(format!(
            "Bits Allocated {bits_allocated} (only 1, 8 and 16 are rendered)"
        )));
    }
    let photometric = obj
        .element(dicom_dictionary_std::tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if photometric == "PALETTE COLOR" {
        return Err(unsupported(
            "PALETTE COLOR images are not rendered (no palette conversion available)",
        ));
    }

    let decoded = obj
        .decode_pixel_data_frame(frame - 1)
        .map_err(|e| unsupported(format!("the pixel data could not be decoded: {e}")))?;
    let image = match decoded.samples_per_pixel() {
        1 => Image::Gray(gray_frame(&decoded, opts.window)?),
        3 => Image::Rgb(rgb_frame(&decoded)?),
        n => return Err(unsupported(format!("Samples per Pixel {n}"))),
    };
    let image = match opts.viewport {
        Some(vp) => image.fit(vp),
        None => image,
    };
    image.encode(opts.media)
}

enum Image {
    Gray(GrayImage),
    Rgb(RgbImage),
}

impl Image {
    fn dimensions(&self) -> (u32, u32) {
        match self {
            Image::Gray(i) => i.dimensions(),
            Image::Rgb(i) => i.dimensions(),
        }
    }

    fn fit(self, (vw, vh): (u32, u32)) -> Image {
        let (w, h) = self.dimensions();
        let (nw, nh) = fit_inside((w, h), (vw, vh));
        if (nw, nh) == (w, h) {
            return self;
        }
        // Triangle (bilinear) is enough for viewing sizes and much faster
        // than Lanczos on large images.
        match self {
            Image::Gray(i) => Image::Gray(imageops::resize(&i, nw, nh, FilterType::Triangle)),
            Image::Rgb(i) => Image::Rgb(imageops::resize(&i, nw, nh, FilterType::Triangle)),
        }
    }

    fn encode(self, media: Media) -> Result<Rendered, RenderError> {
        let (width, height) = self.dimensions();
        let (raw, color) = match &self {
            Image::Gray(i) => (i.as_raw().as_slice(), ExtendedColorType::L8),
            Image::Rgb(i) => (i.as_raw().as_slice(), ExtendedColorType::Rgb8),
        };
        let mut bytes = Vec::new();
        let result = match media {
            Media::Jpeg { quality } => JpegEncoder::new_with_quality(&mut bytes, quality)
                .write_image(raw, width, height, color),
            Media::Png => PngEncoder::new(&mut bytes).write_image(raw, width, height, color),
        };
        result.map_err(|e| RenderError::Encode {
            reason: e.to_string(),
        })?;
        Ok(Rendered {
            bytes,
            media_type: media.media_type(),
            width,
            height,
        })
    }
}

/// The largest size with the aspect of `(w, h)` that fits inside
/// `(vw, vh)`, never larger than `(w, h)` itself (no upscaling: a viewer
/// scales up better, and memory stays bounded by the source); never zero.
fn fit_inside((w, h): (u32, u32), (vw, vh): (u32, u32)) -> (u32, u32) {
    if w == 0 || h == 0 {
        return (w, h);
    }
    let scale = (f64::from(vw) / f64::from(w))
        .min(f64::from(vh) / f64::from(h))
        .min(1.0);
    let side = |n: u32, limit: u32| ((f64::from(n) * scale).round() as u32).clamp(1, limit);
    (side(w, vw), side(h, vh))
}

fn dims(decoded: &DecodedPixelData<'_>) -> Result<(u32, u32, usize), RenderError> {
    let (w, h) = (decoded.columns(), decoded.rows());
    let n =
        usize::try_from(u64::from(w) * u64::from(h)).map_err(|_| malformed("image too large"))?;
    if n == 0 {
        return Err(malformed("Rows or Columns is zero"));
    }
    Ok((w, h, n))
}

/// Stored values of a one-sample frame as signed integers, honouring Bits
/// Stored, High Bit and Pixel Representation.
fn stored_values(decoded: &DecodedPixelData<'_>, n: usize) -> Result<Vec<i32>, RenderError> {
    let data = decoded
        .frame_data(0)
        .map_err(|e| malformed(e.to_string()))?;
    let allocated = decoded.bits_allocated();
    if allocated == 1 {
        // dicom-pixeldata expands single-bit samples to 0 / 255 bytes.
        return data
            .get(..n)
            .map(|d| d.iter().map(|&b| i32::from(b != 0)).collect())
            .ok_or_else(|| malformed("pixel data shorter than Rows × Columns"));
    }
    let stored = decoded.bits_stored().clamp(1, allocated);
    let high_bit = decoded.high_bit();
    let shift = (high_bit + 1)
        .saturating_sub(stored)
        .min(allocated - stored);
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let mask: u32 = if stored >= 32 {
        u32::MAX
    } else {
        (1u32 << stored) - 1
    };
    let sign_bit = 1u32 << (stored - 1);
    let value = |raw: u32| -> i32 {
        let v = (raw >> shift) & mask;
        if signed && v & sign_bit != 0 {
            // Two's complement within `stored` bits.
            (i64::from(v) - (1i64 << stored)) as i32
        } else {
            v as i32
        }
    };
    match allocated {
        8 => data
            .get(..n)
            .map(|d| d.iter().map(|&b| value(u32::from(b))).collect())
            .ok_or_else(|| malformed("pixel data shorter than Rows × Columns")),
        16 => data
            .get(..n * 2)
            .map(|d| {
                d.chunks_exact(2)
                    .map(|c| value(u32::from(u16::from_le_bytes([c[0], c[1]]))))
                    .collect()
            })
            .ok_or_else(|| malformed("pixel data shorter than Rows × Columns")),
        other => Err(unsupported(format!("Bits Allocated {other}"))),
    }
}

fn gray_frame(
    decoded: &DecodedPixelData<'_>,
    requested: Option<Window>,
) -> Result<GrayImage, RenderError> {
    let (w, h, n) = dims(decoded)?;
    let inverted = match decoded.photometric_interpretation() {
        PhotometricInterpretation::Monochrome1 => true,
        PhotometricInterpretation::Monochrome2 => false,
        other => {
            return Err(unsupported(format!(
                "photometric interpretation {other} with one sample per pixel"
            )))
        }
    };
    let stored = stored_values(decoded, n)?;
    // Modality LUT: Rescale Slope / Intercept (PS3.3 C.11.1).
    let rescale = decoded
        .rescale()
        .ok()
        .and_then(|r| r.first().copied())
        .filter(|r| r.slope.is_finite() && r.intercept.is_finite() && r.slope != 0.0);
    let (slope, intercept) = rescale.map_or((1.0, 0.0), |r| (r.slope, r.intercept));
    let modality = |v: i32| f64::from(v) * slope + intercept;

    let window = requested.or_else(|| file_window(decoded));
    let voi: Box<dyn Fn(f64) -> f64> = match window {
        Some(win) => Box::new(move |x| voi(win, x)),
        None => {
            // No window anywhere: stretch the frame's own range.
            let (min, max) = stored
                .iter()
                .fold((i32::MAX, i32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let (a, b) = (modality(min), modality(max));
            let (lo, hi) = (a.min(b), a.max(b));
            if hi > lo {
                Box::new(move |x| (x - lo) / (hi - lo) * 255.0)
            } else {
                Box::new(|_| 0.0)
            }
        }
    };
    let present = |v: i32| -> u8 {
        let y = voi(modality(v)).round().clamp(0.0, 255.0) as u8;
        if inverted {
            255 - y
        } else {
            y
        }
    };
    // For up to 16 stored bits a table over every stored value is cheaper
    // than evaluating the functions per pixel.
    let pixels: Vec<u8> = if decoded.bits_stored() <= 16 && n > 4096 {
        let (lo, hi) = stored
            .iter()
            .fold((i32::MAX, i32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let table: Vec<u8> = (lo..=hi).map(present).collect();
        stored
            .iter()
            .map(|&v| {
                usize::try_from(v - lo)
                    .ok()
                    .and_then(|i| table.get(i).copied())
                    .unwrap_or(0)
            })
            .collect()
    } else {
        stored.iter().map(|&v| present(v)).collect()
    };
    GrayImage::from_raw(w, h, pixels).ok_or_else(|| malformed("frame size mismatch"))
}

/// The object's first Window Center / Width and VOI LUT Function, when
/// usable.
fn file_window(decoded: &DecodedPixelData<'_>) -> Option<Window> {
    let wl = decoded.window().ok().flatten()?.first().copied()?;
    let function = match decoded
        .voi_lut_function()
        .ok()
        .flatten()
        .and_then(|f| f.first().copied())
    {
        Some(VoiLutFunction::LinearExact) => VoiFunction::LinearExact,
        Some(VoiLutFunction::Sigmoid) => VoiFunction::Sigmoid,
        _ => VoiFunction::Linear,
    };
    let window = Window {
        center: wl.center,
        width: wl.width,
        function,
    };
    window.is_valid().then_some(window)
}

/// The VOI function of PS3.3 C.11.2.1.2 with output range 0..=255.
fn voi(win: Window, x: f64) -> f64 {
    const Y_MAX: f64 = 255.0;
    let (c, w) = (win.center, win.width);
    match win.function {
        VoiFunction::Linear => {
            if x <= c - 0.5 - (w - 1.0) / 2.0 {
                0.0
            } else if x > c - 0.5 + (w - 1.0) / 2.0 {
                Y_MAX
            } else {
                ((x - (c - 0.5)) / (w - 1.0) + 0.5) * Y_MAX
            }
        }
        VoiFunction::LinearExact => {
            if x <= c - w / 2.0 {
                0.0
            } else if x > c + w / 2.0 {
                Y_MAX
            } else {
                ((x - c) / w + 0.5) * Y_MAX
            }
        }
        VoiFunction::Sigmoid => Y_MAX / (1.0 + (-4.0 * (x - c) / w).exp()),
    }
}

fn rgb_frame(decoded: &DecodedPixelData<'_>) -> Result<RgbImage, RenderError> {
    let (w, h, n) = dims(decoded)?;
    let ycbcr = match decoded.photometric_interpretation() {
        PhotometricInterpretation::Rgb => false,
        PhotometricInterpretation::YbrFull | PhotometricInterpretation::YbrFull422 => true,
        other => {
            return Err(unsupported(format!(
                "photometric interpretation {other} is not rendered"
            )))
        }
    };
    let data = decoded
        .frame_data(0)
        .map_err(|e| malformed(e.to_string()))?;
    // Samples narrowed to 8 bits.
    let samples: Vec<u8> = match decoded.bits_allocated() {
        8 => data
            .get(..n * 3)
            .ok_or_else(|| malformed("pixel data shorter than the frame"))?
            .to_vec(),
        16 => {
            let shift = decoded.bits_stored().clamp(8, 16) - 8;
            data.get(..n * 6)
                .ok_or_else(|| malformed("pixel data shorter than the frame"))?
                .chunks_exact(2)
                .map(|c| (u16::from_le_bytes([c[0], c[1]]) >> shift).min(255) as u8)
                .collect()
        }
        other => return Err(unsupported(format!("colour with Bits Allocated {other}"))),
    };
    let mut interleaved = match decoded.planar_configuration() {
        PlanarConfiguration::Standard => samples,
        PlanarConfiguration::PixelFirst => {
            // Colour-by-plane (Planar Configuration 1): RRR…GGG…BBB…
            let mut out = Vec::with_capacity(n * 3);
            for i in 0..n {
                for plane in 0..3 {
                    out.push(samples.get(plane * n + i).copied().unwrap_or(0));
                }
            }
            out
        }
    };
    if ycbcr {
        // PS3.3 C.7.6.3.1.2, YBR_FULL to RGB (full-range ITU-R BT.601).
        for px in interleaved.chunks_exact_mut(3) {
            let (y, cb, cr) = (
                f64::from(px[0]),
                f64::from(px[1]) - 128.0,
                f64::from(px[2]) - 128.0,
            );
            let to_u8 = |v: f64| v.round().clamp(0.0, 255.0) as u8;
            px[0] = to_u8(y + 1.402 * cr);
            px[1] = to_u8(y - 0.344_136 * cb - 0.714_136 * cr);
            px[2] = to_u8(y + 1.772 * cb);
        }
    }
    RgbImage::from_raw(w, h, interleaved).ok_or_else(|| malformed("frame size mismatch"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn win(center: f64, width: f64, function: VoiFunction) -> Window {
        Window {
            center,
            width,
            function,
        }
    }

    #[test]
    fn linear_window_follows_ps3_3() {
        // C.11.2.1.2.1 with c = 0, w = 2: x <= -1 → 0, x > 0 → 255, and
        // x = 0 lies on the top of the ramp ((0 + 0.5) / 1 + 0.5 = 1).
        let w = win(0.0, 2.0, VoiFunction::Linear);
        assert_eq!(voi(w, -1000.0), 0.0);
        assert_eq!(voi(w, -1.0), 0.0);
        assert_eq!(voi(w, 0.0), 255.0);
        assert_eq!(voi(w, 1.0), 255.0);
        let w = win(40.0, 400.0, VoiFunction::Linear);
        assert_eq!(voi(w, -160.0), 0.0);
        assert_eq!(voi(w, 240.0), 255.0);
        assert!((voi(w, 40.0) - 127.82).abs() < 0.01);
    }

    #[test]
    fn linear_exact_and_sigmoid() {
        let w = win(0.0, 2.0, VoiFunction::LinearExact);
        assert_eq!(voi(w, -1.0), 0.0);
        assert_eq!(voi(w, 0.0), 127.5);
        assert_eq!(voi(w, 1.0), 255.0);
        assert_eq!(voi(w, 1.5), 255.0);
        let s = win(0.0, 2.0, VoiFunction::Sigmoid);
        assert_eq!(voi(s, 0.0), 127.5);
        assert!(voi(s, 10.0) > 254.0);
        assert!(voi(s, -10.0) < 1.0);
    }

    #[test]
    fn fitting() {
        assert_eq!(fit_inside((256, 256), (64, 64)), (64, 64));
        assert_eq!(fit_inside((320, 240), (128, 128)), (128, 96));
        assert_eq!(fit_inside((240, 320), (128, 128)), (96, 128));
        assert_eq!(fit_inside((100, 1), (10, 10)), (10, 1));
        // Never upscaled: a larger viewport gives the image at its size.
        assert_eq!(fit_inside((64, 64), (128, 100)), (64, 64));
        assert_eq!(fit_inside((64, 32), (8192, 8192)), (64, 32));
    }

    #[test]
    fn options_are_checked() {
        let bad = |o: RenderOptions| {
            matches!(
                render_frame(b"", 1, &o),
                Err(RenderError::InvalidOptions { .. })
            )
        };
        assert!(bad(RenderOptions {
            media: Media::Jpeg { quality: 0 },
            ..RenderOptions::default()
        }));
        assert!(bad(RenderOptions {
            window: Some(win(0.0, 0.5, VoiFunction::Linear)),
            ..RenderOptions::default()
        }));
        assert!(bad(RenderOptions {
            viewport: Some((0, 10)),
            ..RenderOptions::default()
        }));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let r = render_frame(&[0u8; 300], 1, &RenderOptions::default());
        assert!(matches!(r, Err(RenderError::Malformed { .. })), "{r:?}");
        let r = render_frame(b"", 1, &RenderOptions::default());
        assert!(r.is_err());
    }
}
