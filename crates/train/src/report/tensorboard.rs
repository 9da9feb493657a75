//! TensorBoard event files as PyTorch's `SummaryWriter` writes them, so that `tensorboard
//! --logdir` and its `EventAccumulator` read them: a TFRecord stream whose first record is the
//! `Event{file_version: "brain.Event:2"}` and each next one an `Event{wall_time, step,
//! summary{value{tag, simple_value}}}`. The protobuf is encoded by hand, byte for byte as
//! protobuf's Python serializer does (proto3: a zero `step` or `wall_time` is left out, a zero
//! `simple_value` is kept, being a `oneof` member).
//!
//! A TFRecord is `u64 length (LE)`, `u32 masked CRC-32C of those 8 bytes (LE)`, `data`,
//! `u32 masked CRC-32C of data (LE)`. Each record is written with one `write_all` straight to the
//! file (no buffer), so a run that is killed keeps every record it wrote.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::masked_crc32c;
use crate::{Result, TrainError};

/// The `file_version` of the first event of each file (TensorBoard's `brain.Event:2`).
pub const FILE_VERSION: &str = "brain.Event:2";

/// Writes scalars to one new event file in a log directory.
#[derive(Debug)]
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// A new event file in `log_dir` (made if missing), named as PyTorch's `SummaryWriter` names
    /// it, `events.out.tfevents.<unix secs, 10 digits>.<hostname>.<pid>.<n>` (TensorBoard reads
    /// every file whose name holds `tfevents`; the pid and a per-process counter keep two writers
    /// of the same second apart), holding the `file_version` event. An existing file is never
    /// overwritten.
    pub fn create(log_dir: impl AsRef<Path>) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let log_dir = log_dir.as_ref();
        std::fs::create_dir_all(log_dir).map_err(|e| file_err(log_dir, e))?;
        let now = unix_now();
        let name = format!(
            "events.out.tfevents.{:010}.{}.{}.{}",
            now as u64,
            hostname(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = log_dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| file_err(&path, e))?;
        let mut writer = Self { file, path };
        writer.write_record(&encode_file_version_event(now))?;
        Ok(writer)
    }

    /// The event file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One scalar: `Event{wall_time, step, summary{value{tag, simple_value}}}` (the value is
    /// stored as an f32, as `simple_value` is). `wall_time` is seconds since the Unix epoch; `None`
    /// is now.
    pub fn add_scalar(
        &mut self,
        tag: &str,
        value: impl Into<f64>,
        step: i64,
        wall_time: Option<f64>,
    ) -> Result<()> {
        let event = encode_scalar_event(
            wall_time.unwrap_or_else(unix_now),
            step,
            tag,
            value.into() as f32,
        );
        self.write_record(&event)
    }

    /// Every scalar of a Trainer log entry (see [`scalars_from_log`]), one event each, all with
    /// the same `wall_time` (`None`: now). Returns how many were written.
    pub fn add_log_entry(&mut self, entry: &Value, wall_time: Option<f64>) -> Result<usize> {
        let wall_time = wall_time.unwrap_or_else(unix_now);
        let scalars = scalars_from_log(entry);
        for (tag, value, step) in &scalars {
            self.add_scalar(tag, *value, *step, Some(wall_time))?;
        }
        Ok(scalars.len())
    }

    /// Flushes the file to the operating system (each record already is; this also syncs it to
    /// the disk).
    pub fn flush(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| file_err(&self.path, e))
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let record = tfrecord(data);
        self.file
            .write_all(&record)
            .and_then(|()| self.file.flush())
            .map_err(|e| file_err(&self.path, e))
    }
}

/// The scalars transformers' `TensorBoardCallback` writes for one Trainer log entry, in the
/// entry's order, as `(tag, value, step)`: `eval_x` is `eval/x`, `test_x` is `test/x`, any other
/// key `k` is `train/k` (so an evaluation's `epoch` is `train/epoch`, as there). The step is the
/// entry's `step` (the Trainer's global step; 0 when missing), which is itself not a scalar. Numbers
/// and booleans (Python's `bool` is an `int`) are scalars; strings, nulls (a NaN in JSON), arrays
/// and objects are left out. A non-object entry has none.
pub fn scalars_from_log(entry: &Value) -> Vec<(String, f64, i64)> {
    let Some(map) = entry.as_object() else {
        return Vec::new();
    };
    let step = map
        .get("step")
        .and_then(|s| s.as_i64().or_else(|| s.as_f64().map(|f| f.round() as i64)))
        .unwrap_or(0);
    map.iter()
        .filter(|(k, _)| k.as_str() != "step")
        .filter_map(|(k, v)| {
            let value = match v {
                Value::Number(n) => n.as_f64()?,
                Value::Bool(b) => f64::from(u8::from(*b)),
                _ => return None,
            };
            let tag = if let Some(rest) = k.strip_prefix("eval_") {
                format!("eval/{rest}")
            } else if let Some(rest) = k.strip_prefix("test_") {
                format!("test/{rest}")
            } else {
                format!("train/{k}")
            };
            Some((tag, value, step))
        })
        .collect()
}

/// `data` framed as one TFRecord.
pub fn tfrecord(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The serialized `Event{wall_time, file_version: "brain.Event:2"}`.
pub fn encode_file_version_event(wall_time: f64) -> Vec<u8> {
    let mut out = Vec::new();
    put_double(&mut out, 1, wall_time);
    put_bytes(&mut out, 3, FILE_VERSION.as_bytes());
    out
}

/// The serialized `Event{wall_time, step, summary: Summary{value: [Value{tag, simple_value}]}}`.
pub fn encode_scalar_event(wall_time: f64, step: i64, tag: &str, value: f32) -> Vec<u8> {
    // Summary.Value: tag = 1 (string), simple_value = 2 (float, oneof: always written).
    let mut summary_value = Vec::new();
    if !tag.is_empty() {
        put_bytes(&mut summary_value, 1, tag.as_bytes());
    }
    put_key(&mut summary_value, 2, WIRE_FIXED32);
    summary_value.extend_from_slice(&value.to_le_bytes());
    // Summary: repeated Value value = 1.
    let mut summary = Vec::new();
    put_bytes(&mut summary, 1, &summary_value);
    // Event: wall_time = 1 (double), step = 2 (int64), summary = 5.
    let mut out = Vec::new();
    put_double(&mut out, 1, wall_time);
    if step != 0 {
        put_key(&mut out, 2, WIRE_VARINT);
        put_varint(&mut out, step as u64);
    }
    put_bytes(&mut out, 5, &summary);
    out
}

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from((field << 3) | wire));
}

/// A proto3 double: left out when it is +0.0 (protobuf compares the bits, so -0.0 is written).
fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    if v.to_bits() != 0 {
        put_key(out, field, WIRE_FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Seconds since the Unix epoch, now (0 on a clock set before 1970).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// This machine's name for event file names: the kernel's, else `$HOSTNAME`, else `localhost`;
/// reduced to characters safe in a file name.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

fn file_err(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::File {
        path: path.into(),
        msg: e.to_string(),
    }
}
