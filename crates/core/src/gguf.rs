//! GGUF container reader: header, metadata and tensor directory.
//!
//! Every length read from the file is checked against the bytes that remain
//! before anything is allocated, so a corrupt or hostile header gives an error
//! naming the file and the field, never a panic or an out-of-memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const GGUF_MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// The GGUF value type of arrays.
const ARRAY_TYPE: u32 = 9;

/// Arrays nest at most this deep; real files use depth 1.
const MAX_ARRAY_DEPTH: usize = 4;
const MAX_TENSOR_DIMS: u32 = 8;

/// One metadata value, typed as the file declares it.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The GGUF type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F32(_) => "f32",
            GgufValue::F64(_) => "f64",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
        }
    }

    /// Any integer type as i64 (u64 values above i64::MAX are refused).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Any numeric type as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's entry in the directory; `offset` is relative to `GgufFile::data_offset`.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Dimensions as GGUF stores them: innermost (fastest-varying) first.
    pub dims: Vec<u64>,
    /// The ggml type id (0 = F32, 1 = F16, 8 = Q8_0, 12 = Q4_K, ...).
    pub ggml_type: u32,
    pub offset: u64,
}

/// A parsed GGUF header: metadata and tensor directory. Tensor data stays on disk.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    /// Absolute file offset where tensor data begins.
    pub data_offset: u64,
    /// Lengths of the arrays `open_without_large_arrays` left out of `metadata`.
    pub skipped_arrays: BTreeMap<String, usize>,
}

impl GgufFile {
    /// Reads the header of `path`. Fails with the file name and the field at fault.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::read(path.as_ref(), usize::MAX)
    }

    /// Reads the header but only the lengths of arrays over 1024 elements (the tokenizer's
    /// vocabulary, merges and scores: tens of MB a model's config does not need). The file
    /// is still checked all through.
    pub fn open_without_large_arrays(path: impl AsRef<Path>) -> Result<Self> {
        Self::read(path.as_ref(), 1024)
    }

    fn read(path: &Path, keep_arrays_up_to: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut r = Reader {
            inner: BufReader::with_capacity(1 << 16, file),
            pos: 0,
            len,
            path,
            keep_arrays_up_to,
            skipped: BTreeMap::new(),
        };
        r.read_header()
    }

    /// The number of elements of an array value (also when its contents were skipped).
    pub fn array_len(&self, key: &str) -> Option<usize> {
        match self.metadata.get(key) {
            Some(GgufValue::Array(a)) => Some(a.len()),
            _ => self.skipped_arrays.get(key).copied(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// A string value; `Ok(None)` when absent, an error when of another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "string", GgufValue::as_str)
    }

    pub fn get_i64(&self, key: &str) -> Result<Option<i64>> {
        self.typed(key, "integer", GgufValue::as_i64)
    }

    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "number", GgufValue::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "bool", GgufValue::as_bool)
    }

    /// An array of strings; `Ok(None)` when absent.
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        self.typed_array(key, "string", GgufValue::as_str)
    }

    pub fn get_f64_array(&self, key: &str) -> Result<Option<Vec<f64>>> {
        self.typed_array(key, "number", GgufValue::as_f64)
    }

    pub fn get_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        self.typed_array(key, "integer", GgufValue::as_i64)
    }

    /// `general.architecture`, which prefixes the model's own keys.
    pub fn architecture(&self) -> Result<Option<&str>> {
        self.get_str("general.architecture")
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        want: &'static str,
        f: impl Fn(&'a GgufValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => f(v)
                .map(Some)
                .ok_or_else(|| self.type_error(key, want, v.type_name())),
        }
    }

    fn typed_array<'a, T>(
        &'a self,
        key: &str,
        want: &'static str,
        f: impl Fn(&'a GgufValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(value) = self.metadata.get(key) else {
            return Ok(None);
        };
        let items = value
            .as_array()
            .ok_or_else(|| self.type_error(key, "array", value.type_name()))?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                f(v).ok_or_else(|| self.type_error(&format!("{key}[{i}]"), want, v.type_name()))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn type_error(&self, key: &str, want: &str, got: &str) -> Error {
        Error::Format {
            path: self.path.clone(),
            msg: format!("metadata key `{key}` should be {want} but is {got}"),
        }
    }
}

struct Reader<'p> {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
    path: &'p Path,
    /// Arrays longer than this are read through without being kept.
    keep_arrays_up_to: usize,
    skipped: BTreeMap<String, usize>,
}

impl Reader<'_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Format {
            path: self.path.to_path_buf(),
            msg: msg.into(),
        }
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| self.err(format!("file ends inside {what} at byte {}", self.pos)))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.bytes::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.bytes::<8>(what).map(u64::from_le_bytes)
    }

    /// A count of items each at least `min_item_bytes` long: checked against the bytes left.
    fn count(&mut self, what: &str, min_item_bytes: u64) -> Result<usize> {
        let n = self.u64(what)?;
        let remaining = self.len.saturating_sub(self.pos);
        if n.saturating_mul(min_item_bytes.max(1)) > remaining {
            return Err(self.err(format!(
                "{what} is {n}, more than the {remaining} bytes left in the file can hold (corrupt header?)"
            )));
        }
        usize::try_from(n).map_err(|_| self.err(format!("{what} {n} does not fit in memory")))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(&format!("length of {what}"), 1)?;
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| self.err(format!("file ends inside {what}")))?;
        self.pos += n as u64;
        String::from_utf8(buf).map_err(|_| self.err(format!("{what} is not valid UTF-8")))
    }

    fn read_header(&mut self) -> Result<GgufFile> {
        let magic = self.bytes::<4>("the magic number")?;
        if magic != GGUF_MAGIC {
            return Err(self.err(format!(
                "not a GGUF file: magic is {magic:02x?}, expected \"GGUF\""
            )));
        }
        let version = self.u32("the version")?;
        match version {
            2 | 3 => {}
            1 => return Err(self.err("GGUF version 1 is not supported (only 2 and 3)")),
            v if v.swap_bytes() <= 3 => {
                return Err(self.err("big-endian GGUF files are not supported"))
            }
            v => return Err(self.err(format!("unsupported GGUF version {v} (only 2 and 3)"))),
        }
        // A tensor entry is at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
        let n_tensors = self.count("tensor count", 24)?;
        // A key-value pair is at least 8 (key len) + 4 (type) + 1 bytes.
        let n_kv = self.count("metadata count", 13)?;

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = self.string(&format!("metadata key #{i}"))?;
            let ty = self.u32(&format!("type of `{key}`"))?;
            if ty == ARRAY_TYPE {
                let (items, len) = self.array(&key, 0, self.keep_arrays_up_to)?;
                match items {
                    Some(items) => {
                        metadata.insert(key, GgufValue::Array(items));
                    }
                    None => {
                        self.skipped.insert(key, len);
                    }
                }
            } else {
                let value = self.value(ty, &key, 0)?;
                metadata.insert(key, value);
            }
        }

        let mut tensors = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = self.string(&format!("name of tensor #{i}"))?;
            let n_dims = self.u32(&format!("dimension count of tensor `{name}`"))?;
            if n_dims > MAX_TENSOR_DIMS {
                return Err(self.err(format!(
                    "tensor `{name}` has {n_dims} dimensions (at most {MAX_TENSOR_DIMS})"
                )));
            }
            let dims = (0..n_dims)
                .map(|_| self.u64(&format!("dimensions of tensor `{name}`")))
                .collect::<Result<Vec<_>>>()?;
            let ggml_type = self.u32(&format!("type of tensor `{name}`"))?;
            let offset = self.u64(&format!("offset of tensor `{name}`"))?;
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_i64() {
                Some(a) if a > 0 && (a as u64).is_power_of_two() => a as u64,
                _ => {
                    return Err(self.err(format!(
                        "general.alignment must be a positive power of two, got {v:?}"
                    )))
                }
            },
        };
        let data_offset = self.pos.div_ceil(alignment) * alignment;
        Ok(GgufFile {
            path: self.path.to_path_buf(),
            version,
            metadata,
            tensors,
            data_offset,
            skipped_arrays: std::mem::take(&mut self.skipped),
        })
    }

    /// An array's elements, or `None` (read through, not kept) when it has more than
    /// `keep_up_to`; with its length.
    fn array(
        &mut self,
        key: &str,
        depth: usize,
        keep_up_to: usize,
    ) -> Result<(Option<Vec<GgufValue>>, usize)> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.err(format!("value of `{key}`: arrays nested too deeply")));
        }
        let item_ty = self.u32(&format!("element type of `{key}`"))?;
        let min = match item_ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8..=12 => 8,
            t => return Err(self.err(format!("`{key}`: unknown array element type {t}"))),
        };
        let n = self.count(&format!("length of `{key}`"), min)?;
        if n > keep_up_to {
            for _ in 0..n {
                self.value(item_ty, key, depth + 1)?;
            }
            return Ok((None, n));
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(item_ty, key, depth + 1)?);
        }
        Ok((Some(items), n))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
        let what = format!("value of `{key}`");
        Ok(match ty {
            0 => GgufValue::U8(self.bytes::<1>(&what)?[0]),
            1 => GgufValue::I8(i8::from_le_bytes(self.bytes::<1>(&what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.bytes::<2>(&what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.bytes::<2>(&what)?)),
            4 => GgufValue::U32(self.u32(&what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.bytes::<4>(&what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.bytes::<4>(&what)?)),
            7 => match self.bytes::<1>(&what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format!("{what}: bool byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string(&what)?),
            ARRAY_TYPE => match self.array(key, depth, usize::MAX)? {
                (Some(items), _) => GgufValue::Array(items),
                (None, _) => GgufValue::Array(Vec::new()),
            },
            10 => GgufValue::U64(self.u64(&what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.bytes::<8>(&what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.bytes::<8>(&what)?)),
            t => return Err(self.err(format!("`{key}` has unknown value type {t}"))),
        })
    }
}

/// Writes GGUF bytes in memory with no checks, for tests that need small and deliberately
/// broken files (real files are written by `crate::gguf_writer::GgufWriter`).
pub mod writer {
    use super::GgufValue;
    use crate::gguf_writer::{encode_str as put_str, encode_value as put_value, type_id};

    /// Serializes a version-3 GGUF with the given metadata and no tensors.
    pub fn metadata_only(metadata: &[(&str, GgufValue)]) -> Vec<u8> {
        with_tensors(metadata, &[])
    }

    /// One tensor to write: name, dims (innermost first, as GGUF stores them), ggml type
    /// id, and its raw bytes (written at the next 32-byte boundary).
    pub struct RawTensor<'a> {
        pub name: &'a str,
        pub dims: Vec<u64>,
        pub ggml_type: u32,
        pub data: &'a [u8],
    }

    /// Serializes a version-3 GGUF with metadata and tensors (alignment 32).
    pub fn with_tensors(metadata: &[(&str, GgufValue)], tensors: &[RawTensor]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            put_str(&mut out, key);
            out.extend(type_id(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in tensors {
            put_str(&mut out, t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ggml_type.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len() as u64).div_ceil(32) * 32;
        }
        if tensors.is_empty() {
            return out;
        }
        let data_start = (out.len() as u64).div_ceil(32) * 32;
        out.resize(data_start as usize, 0);
        for (t, off) in tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend(t.data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::writer::metadata_only;
    use super::*;

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn reads_metadata_of_every_type() {
        let meta = vec![
            ("general.architecture", GgufValue::String("qwen2".into())),
            ("a.u8", GgufValue::U8(7)),
            ("a.i32", GgufValue::I32(-3)),
            ("a.f32", GgufValue::F32(0.5)),
            ("a.bool", GgufValue::Bool(true)),
            ("a.u64", GgufValue::U64(1 << 40)),
            (
                "a.strs",
                GgufValue::Array(vec![
                    GgufValue::String("x".into()),
                    GgufValue::String("ü".into()),
                ]),
            ),
        ];
        let f = write(&metadata_only(&meta));
        let g = GgufFile::open(f.path()).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture().unwrap(), Some("qwen2"));
        assert_eq!(g.get_i64("a.u8").unwrap(), Some(7));
        assert_eq!(g.get_i64("a.i32").unwrap(), Some(-3));
        assert_eq!(g.get_f64("a.f32").unwrap(), Some(0.5));
        assert_eq!(g.get_bool("a.bool").unwrap(), Some(true));
        assert_eq!(g.get_i64("a.u64").unwrap(), Some(1 << 40));
        assert_eq!(g.get_str_array("a.strs").unwrap(), Some(vec!["x", "ü"]));
        assert_eq!(g.get_str("missing").unwrap(), None);
        let e = g.get_str("a.u8").unwrap_err().to_string();
        assert!(e.contains("`a.u8` should be string but is u8"), "{e}");
    }

    #[test]
    fn corrupt_headers_give_errors_not_allocations() {
        let good = metadata_only(&[("k", GgufValue::String("v".into()))]);
        // Bad magic.
        let e = GgufFile::open(write(b"GGML\x03\0\0\0").path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a GGUF file"), "{e}");
        // Huge metadata count.
        let mut huge = good.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = GgufFile::open(write(&huge).path()).unwrap_err().to_string();
        assert!(e.contains("metadata count"), "{e}");
        // Huge string length inside a key.
        let mut long = good.clone();
        long[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let e = GgufFile::open(write(&long).path()).unwrap_err().to_string();
        assert!(e.contains("length of metadata key #0"), "{e}");
        // Truncated file.
        let e = GgufFile::open(write(&good[..good.len() - 1]).path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("value of `k`") && e.contains("bytes left"),
            "{e}"
        );
        let e = GgufFile::open(write(&good[..10]).path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("file ends inside tensor count"), "{e}");
        // Unsupported version.
        let mut v9 = good.clone();
        v9[4..8].copy_from_slice(&9u32.to_le_bytes());
        let e = GgufFile::open(write(&v9).path()).unwrap_err().to_string();
        assert!(e.contains("unsupported GGUF version 9"), "{e}");
    }

    #[test]
    fn huge_array_count_is_refused() {
        let mut bytes = metadata_only(&[("arr", GgufValue::Array(vec![GgufValue::U32(1)]))]);
        // key: 8 + 3 bytes, type 4 bytes, elem type 4 bytes, then the count.
        let at = 24 + 8 + 3 + 4 + 4;
        bytes[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        let e = GgufFile::open(write(&bytes).path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("length of `arr`"), "{e}");
    }
}
