//! Reports of a training run that other tools read: TensorBoard event files ([`tensorboard`]),
//! named and tagged as transformers' `TensorBoardCallback` writes them, and a loss-curve PNG
//! ([`plot`]). Both formats are written by hand (no TensorFlow, no image library): a TFRecord
//! stream of protobuf `Event`s, and a PNG of RGB pixels whose IDAT is a zlib stream.

pub mod plot;
pub mod png;
pub mod tensorboard;

pub use plot::{losses_from_log, plot_losses, Points, PLOT_HEIGHT, PLOT_WIDTH};
pub use tensorboard::{scalars_from_log, EventWriter};

/// A table-driven reflected CRC-32 over `poly` (the bit-reversed polynomial).
const fn crc_table(poly: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

const CRC32_TABLE: [u32; 256] = crc_table(0xEDB8_8320);
const CRC32C_TABLE: [u32; 256] = crc_table(0x82F6_3B78);

fn crc_update(table: &[u32; 256], crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// CRC-32 (ISO-HDLC, the one PNG and zlib's gzip use): `crc32(b"123456789") == 0xCBF4_3926`.
pub fn crc32(data: &[u8]) -> u32 {
    crc_update(&CRC32_TABLE, 0, data)
}

/// CRC-32 continued over more data: `crc32_update(crc32(a), b) == crc32(a ++ b)`.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    crc_update(&CRC32_TABLE, crc, data)
}

/// CRC-32C (Castagnoli, the one TFRecord uses): `crc32c(b"123456789") == 0xE306_9283`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc_update(&CRC32C_TABLE, 0, data)
}

/// TFRecord's masked CRC-32C: `((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Adler-32, zlib's checksum of the uncompressed data: `adler32(b"Wikipedia") == 0x11E6_0398`.
pub fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most zlib sums before b can overflow a u32.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// `bytes` at `path` whole or not at all: written to a hidden file beside it, then renamed.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> crate::Result<()> {
    use std::io::Write;
    let file_err = |p: &std::path::Path, e: std::io::Error| crate::TrainError::File {
        path: p.into(),
        msg: e.to_string(),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("report");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_err(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_err(path, e)
    })
}
