//! A minimal PNG encoder: 8-bit RGB (colour type 2), no interlace, each scanline unfiltered
//! (filter 0), the image data one zlib stream (deflate by `flate2`) split into IDAT chunks, and
//! optional `tEXt` chunks. Each chunk carries the CRC-32 of its type and data.

use std::io::Write;
use std::path::Path;

use flate2::write::ZlibEncoder;
use flate2::Compression;

use super::{crc32, crc32_update};
use crate::{Result, TrainError};

/// The eight bytes every PNG starts with.
pub const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// The largest IDAT chunk written (the stream is split into chunks of at most this many bytes).
const IDAT_CHUNK: usize = 1 << 16;

/// `rgb` (`width * height * 3` bytes, rows top to bottom) as a PNG file's bytes, with `text` as
/// `tEXt` chunks (keyword, text: Latin-1 printable; keywords 1-79 bytes).
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8], text: &[(&str, &str)]) -> Result<Vec<u8>> {
    let invalid = |param: &'static str, msg: String| TrainError::InvalidArgument { param, msg };
    if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(invalid(
            "width/height",
            format!("a PNG is 1 to 2^31-1 pixels a side, not {width}x{height}"),
        ));
    }
    let row = width as usize * 3;
    if rgb.len() != row * height as usize {
        return Err(invalid(
            "rgb",
            format!(
                "{} bytes for a {width}x{height} RGB image (needs {})",
                rgb.len(),
                row * height as usize
            ),
        ));
    }
    let mut out = SIGNATURE.to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // bit depth 8, colour type 2 (RGB), compression 0, filter method 0, interlace 0
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    put_chunk(&mut out, b"IHDR", &ihdr);
    for (keyword, value) in text {
        let ok = |s: &str| s.bytes().all(|b| (32..=126).contains(&b));
        if keyword.is_empty() || keyword.len() > 79 || !ok(keyword) || !ok(value) {
            return Err(invalid(
                "text",
                format!(
                    "`{keyword}`: tEXt keywords are 1-79 printable ASCII bytes, and so is the text"
                ),
            ));
        }
        let mut data = keyword.as_bytes().to_vec();
        data.push(0);
        data.extend_from_slice(value.as_bytes());
        put_chunk(&mut out, b"tEXt", &data);
    }
    let mut z = ZlibEncoder::new(Vec::with_capacity(rgb.len() / 8), Compression::default());
    let zlib = rgb
        .chunks(row)
        .try_for_each(|line| {
            z.write_all(&[0])?;
            z.write_all(line)
        })
        .and_then(|()| z.finish())
        .map_err(|e| invalid("rgb", format!("zlib: {e}")))?;
    for chunk in zlib.chunks(IDAT_CHUNK) {
        put_chunk(&mut out, b"IDAT", chunk);
    }
    put_chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

/// [`encode_rgb`] written to `path` whole or not at all (a hidden file beside it, renamed).
pub fn write_rgb(
    path: impl AsRef<Path>,
    width: u32,
    height: u32,
    rgb: &[u8],
    text: &[(&str, &str)],
) -> Result<()> {
    let bytes = encode_rgb(width, height, rgb, text)?;
    super::write_atomic(path.as_ref(), &bytes)
}

fn put_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32_update(crc32(kind), data).to_be_bytes());
}
