//! QR codes of provisioning URLs: PNG for the `/provisioning/qrcode` route and the wizard,
//! and text for terminals (`provisio token --qr`, `provisio demo`).
//!
//! Parameters follow FlexiAPI (endroid/qr-code): error correction High, at least 300 px, with
//! a quiet zone, so phones that scan FlexiAPI's codes scan ours.

use image::{ImageEncoder, Luma};
use qrcode::{EcLevel, QrCode};

/// Smallest side of the PNG, in pixels.
pub const MIN_SIZE_PX: u32 = 300;

/// Why a QR code could not be made (the data is too long for a QR code).
#[derive(Debug, thiserror::Error)]
#[error("QR code: {0}")]
pub struct QrError(String);

/// Encodes `data` as a PNG QR code (ECC High, ≥ 300 px). CPU-bound (~2–3 ms): call it from a
/// blocking task.
pub fn png(data: &str) -> Result<Vec<u8>, QrError> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::H)
        .map_err(|e| QrError(e.to_string()))?;
    let image = code
        .render::<Luma<u8>>()
        .min_dimensions(MIN_SIZE_PX, MIN_SIZE_PX)
        .quiet_zone(true)
        .build();
    let mut out = Vec::with_capacity(8 * 1024);
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::L8,
        )
        .map_err(|e| QrError(e.to_string()))?;
    Ok(out)
}

/// Renders `data` as a QR code with Unicode half blocks, for a terminal (dark on light).
pub fn terminal(data: &str) -> Result<String, QrError> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)
        .map_err(|e| QrError(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_is_large_enough_and_decodable() {
        let bytes = png("https://sip.example.com/provisioning/abc?reset_password=1").unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory(&bytes).unwrap();
        assert!(img.width() >= MIN_SIZE_PX && img.height() >= MIN_SIZE_PX);
        assert!(!terminal("x").unwrap().is_empty());
    }
}
