//! GGUF writer (version 3, as llama.cpp reads it): metadata, then the tensor directory,
//! then each tensor's bytes at an offset aligned to `general.alignment`.
//!
//! The directory needs every tensor's size before any data, so tensors are declared up
//! front and their bytes streamed in the same order afterwards: a converter holds one
//! tensor in memory at a time, never the whole file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::gguf::GgufValue;

/// The alignment we write (and declare in `general.alignment`): GGUF's default.
pub const ALIGNMENT: u64 = 32;

/// `(elements per block, bytes per block)` of the ggml types a writer checks sizes for.
pub fn ggml_block_layout(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        30 => (1, 2),     // BF16
        _ => return None,
    })
}

/// A tensor declared before writing: its name, dims (innermost first, as GGUF stores
/// them) and ggml type id; its byte size follows from those.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
}

impl TensorDecl {
    /// The byte size of the tensor's data, or why it has none (unknown type, a row that
    /// is not whole blocks).
    pub fn byte_size(&self) -> std::result::Result<u64, String> {
        let (block, bytes) = ggml_block_layout(self.ggml_type)
            .ok_or_else(|| format!("ggml type {} cannot be written", self.ggml_type))?;
        let row = self.dims.first().copied().unwrap_or(1);
        if row % block != 0 {
            return Err(format!(
                "rows of {row} values are not a whole number of {block}-value blocks (ggml type {})",
                self.ggml_type
            ));
        }
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| (n / block).checked_mul(bytes))
            .ok_or_else(|| format!("absurd dimensions {:?}", self.dims))
    }
}

/// Writes one GGUF file: `new` writes the header, `write_tensor` each declared tensor in
/// order, `finish` checks that all were written and flushes.
pub struct GgufWriter<W: Write> {
    out: W,
    path: PathBuf,
    pos: u64,
    /// Declared tensors with their byte sizes; `next` is the one `write_tensor` expects.
    tensors: Vec<(TensorDecl, u64)>,
    next: usize,
}

impl GgufWriter<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes the header.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &[(String, GgufValue)],
        tensors: Vec<TensorDecl>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Self::new(
            BufWriter::with_capacity(1 << 20, file),
            path,
            metadata,
            tensors,
        )
    }
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header to `out`; `path` names the destination in errors. Adds
    /// `general.alignment` when `metadata` lacks it.
    pub fn new(
        out: W,
        path: impl AsRef<Path>,
        metadata: &[(String, GgufValue)],
        tensors: Vec<TensorDecl>,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut sized = Vec::with_capacity(tensors.len());
        for t in tensors {
            let size = t.byte_size().map_err(|msg| Error::Format {
                path: path.clone(),
                msg: format!("tensor `{}`: {msg}", t.name),
            })?;
            sized.push((t, size));
        }
        let mut w = Self {
            out,
            path,
            pos: 0,
            tensors: sized,
            next: 0,
        };
        w.header(metadata)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn put_str(&mut self, s: &str) -> Result<()> {
        let mut buf = Vec::with_capacity(8 + s.len());
        encode_str(&mut buf, s);
        self.put(&buf)
    }

    fn put_value(&mut self, v: &GgufValue) -> Result<()> {
        let mut buf = Vec::new();
        encode_value(&mut buf, v);
        self.put(&buf)
    }

    fn header(&mut self, metadata: &[(String, GgufValue)]) -> Result<()> {
        let has_alignment = metadata.iter().any(|(k, _)| k == "general.alignment");
        self.put(b"GGUF")?;
        self.put(&3u32.to_le_bytes())?;
        self.put(&(self.tensors.len() as u64).to_le_bytes())?;
        let n_kv = metadata.len() + usize::from(!has_alignment);
        self.put(&(n_kv as u64).to_le_bytes())?;
        for (key, value) in metadata {
            if key == "general.alignment" && value.as_i64() != Some(ALIGNMENT as i64) {
                return Err(Error::Format {
                    path: self.path.clone(),
                    msg: format!("general.alignment must be {ALIGNMENT}, got {value:?}"),
                });
            }
            self.put_str(key)?;
            self.put(&type_id(value).to_le_bytes())?;
            self.put_value(value)?;
        }
        if !has_alignment {
            self.put_str("general.alignment")?;
            self.put(&type_id(&GgufValue::U32(0)).to_le_bytes())?;
            self.put(&(ALIGNMENT as u32).to_le_bytes())?;
        }
        let mut offset = 0u64;
        let entries: Vec<(String, Vec<u64>, u32, u64)> = self
            .tensors
            .iter()
            .map(|(t, size)| {
                let at = offset;
                offset = (offset + size).div_ceil(ALIGNMENT) * ALIGNMENT;
                (t.name.clone(), t.dims.clone(), t.ggml_type, at)
            })
            .collect();
        for (name, dims, ty, at) in entries {
            self.put_str(&name)?;
            self.put(&(dims.len() as u32).to_le_bytes())?;
            for d in dims {
                self.put(&d.to_le_bytes())?;
            }
            self.put(&ty.to_le_bytes())?;
            self.put(&at.to_le_bytes())?;
        }
        if !self.tensors.is_empty() {
            self.pad()?;
        }
        Ok(())
    }

    /// Zeros up to the next aligned position.
    fn pad(&mut self) -> Result<()> {
        let to = self.pos.div_ceil(ALIGNMENT) * ALIGNMENT;
        let zeros = [0u8; ALIGNMENT as usize];
        self.put(&zeros[..(to - self.pos) as usize])
    }

    /// Writes the bytes of the next declared tensor, which must be `name` and of its
    /// declared size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let Some((decl, size)) = self.tensors.get(self.next) else {
            return Err(Error::Format {
                path: self.path.clone(),
                msg: format!(
                    "tensor `{name}` was not declared (all {} are written)",
                    self.next
                ),
            });
        };
        if decl.name != name {
            return Err(Error::Format {
                path: self.path.clone(),
                msg: format!("tensor `{name}` written where `{}` was declared", decl.name),
            });
        }
        if data.len() as u64 != *size {
            return Err(Error::Format {
                path: self.path.clone(),
                msg: format!(
                    "tensor `{name}`: {} bytes for a declared size of {size}",
                    data.len()
                ),
            });
        }
        self.next += 1;
        self.put(data)?;
        if self.next < self.tensors.len() {
            self.pad()?;
        }
        Ok(())
    }

    /// Checks that every declared tensor was written, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W> {
        if let Some((decl, _)) = self.tensors.get(self.next) {
            return Err(Error::Format {
                path: self.path.clone(),
                msg: format!("tensor `{}` was declared but never written", decl.name),
            });
        }
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.out)
    }
}

/// A GGUF string: u64 length, then the bytes.
pub fn encode_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A metadata value's bytes (without its type id).
pub fn encode_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend(x.to_le_bytes()),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => encode_str(out, s),
        GgufValue::Array(items) => {
            // An empty array still needs an element type; u32 is what gguf-py picks.
            let item_ty = items.first().map_or(4, type_id);
            out.extend(item_ty.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                encode_value(out, item);
            }
        }
    }
}

/// The GGUF value type id.
pub fn type_id(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GgufFile;

    #[test]
    fn written_file_reads_back_with_aligned_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        let meta = vec![
            (
                "general.architecture".to_string(),
                GgufValue::String("llama".into()),
            ),
            (
                "a.list".to_string(),
                GgufValue::Array(vec![GgufValue::I32(-1), GgufValue::I32(2)]),
            ),
        ];
        let decls = vec![
            TensorDecl {
                name: "a".into(),
                dims: vec![3],
                ggml_type: 0,
            },
            TensorDecl {
                name: "b".into(),
                dims: vec![32, 2],
                ggml_type: 8,
            },
        ];
        let mut w = GgufWriter::create(&path, &meta, decls).unwrap();
        w.write_tensor("a", &[1u8; 12]).unwrap();
        w.write_tensor("b", &[2u8; 68]).unwrap();
        w.finish().unwrap();
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.get_i64("general.alignment").unwrap(), Some(32));
        assert_eq!(g.get_i64_array("a.list").unwrap(), Some(vec![-1, 2]));
        assert_eq!(g.data_offset % 32, 0);
        assert_eq!(g.tensors[1].offset, 32);
        let bytes = std::fs::read(&path).unwrap();
        let b = (g.data_offset + 32) as usize;
        assert_eq!(&bytes[b..b + 68], &[2u8; 68]);
        assert_eq!(bytes.len(), b + 68);
    }

    #[test]
    fn misuse_gives_errors_naming_the_tensor() {
        let decl = |name: &str, dims: Vec<u64>, ty| TensorDecl {
            name: name.into(),
            dims,
            ggml_type: ty,
        };
        let e = GgufWriter::new(Vec::new(), "x.gguf", &[], vec![decl("w", vec![33, 2], 8)])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("x.gguf") && e.contains("`w`") && e.contains("33"),
            "{e}"
        );
        let mut w =
            GgufWriter::new(Vec::new(), "x.gguf", &[], vec![decl("w", vec![4], 0)]).unwrap();
        let e = w.write_tensor("v", &[0; 16]).unwrap_err().to_string();
        assert!(e.contains("`v` written where `w`"), "{e}");
        let e = w.write_tensor("w", &[0; 15]).unwrap_err().to_string();
        assert!(e.contains("15 bytes for a declared size of 16"), "{e}");
        let w = GgufWriter::new(Vec::new(), "x.gguf", &[], vec![decl("w", vec![4], 0)]).unwrap();
        let e = w.finish().err().unwrap().to_string();
        assert!(e.contains("`w` was declared but never written"), "{e}");
    }
}
