//! Parquet files as dataset rows: what Hugging Face datasets ship (`refs/convert/parquet`,
//! `*.parquet` shards) becomes the same JSON objects a JSONL file gives, so every tokenizer
//! of [`crate::data`] takes them unchanged. Strings, integers, floats, booleans and nulls
//! map to their JSON values, lists to arrays and structs to objects (pyarrow's
//! `Table.to_pylist()`): `tokens`/`ner_tags` lists for token classification, chat
//! `messages` as a list of `{role, content}`. Pages may be snappy (pyarrow's default), gzip
//! or zstd; binary, decimal, date, time, timestamp and map columns are refused by name.
//! NaN and infinite floats become null, as JSON has no such numbers.

use std::path::Path;

use parquet::basic::{Compression, ConvertedType, LogicalType, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use parquet::schema::types::Type;
use serde_json::{Map, Value};

use crate::error::{Result, TrainError};

/// The rows of the Parquet file at `path`, every row group in order.
pub(crate) fn read_rows(path: &Path) -> Result<Vec<Map<String, Value>>> {
    // The parquet crate's row reader still panics on some corrupt pages (an `expect` on a
    // missing dictionary, seen by flipping bytes of a file): such a file is an error here.
    std::panic::catch_unwind(|| read(path)).unwrap_or_else(|panic| {
        let cause = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(TrainError::File {
            path: path.into(),
            msg: format!("corrupt Parquet file: the reader failed ({cause})"),
        })
    })
}

fn read(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let bad = |msg: String| TrainError::File {
        path: path.into(),
        msg,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    // The footer is checked against the file's length before anything is allocated, so a
    // truncated or foreign file fails here, without reading on.
    let reader = SerializedFileReader::new(file)
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema();
    for column in schema.get_fields() {
        check_type(column, column.name()).map_err(bad)?;
    }
    // Codecs left out of the build are named before any page is read.
    let chunks = reader
        .metadata()
        .row_groups()
        .iter()
        .flat_map(|g| g.columns());
    for chunk in chunks {
        let codec = match chunk.compression() {
            Compression::UNCOMPRESSED
            | Compression::SNAPPY
            | Compression::GZIP(_)
            | Compression::ZSTD(_) => continue,
            Compression::BROTLI(_) => "brotli",
            Compression::LZO => "lzo",
            Compression::LZ4 | Compression::LZ4_RAW => "lz4",
        };
        return Err(bad(format!(
            "column `{}` is compressed with {codec}; Parquet pages are read uncompressed, \
             snappy, gzip or zstd (pyarrow: write_table(..., compression=\"zstd\"))",
            chunk.column_path().string()
        )));
    }
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| bad(format!("reading the rows: {e}")))?;
    rows.enumerate()
        .map(|(i, row)| {
            let row = row.map_err(|e| bad(format!("row {}: {e}", i + 1)))?;
            object(&row, "").map_err(|msg| bad(format!("row {}: {msg}", i + 1)))
        })
        .collect()
}

/// Refuses a column (`path` names it, dotted) whose values have no JSON form here, before
/// any row is read.
fn check_type(ty: &Type, path: &str) -> std::result::Result<(), String> {
    let info = ty.get_basic_info();
    let unsupported = |what: String| {
        Err(format!(
            "column `{path}` is {what}, which has no dataset value (only strings, numbers, \
             booleans, nulls, lists and structs do)"
        ))
    };
    if ty.is_group() {
        let is_map = matches!(info.logical_type_ref(), Some(LogicalType::Map))
            || matches!(
                info.converted_type(),
                ConvertedType::MAP | ConvertedType::MAP_KEY_VALUE
            );
        if is_map {
            return unsupported("a map".into());
        }
        return ty
            .get_fields()
            .iter()
            .try_for_each(|f| check_type(f, &format!("{path}.{}", f.name())));
    }
    let physical = ty.get_physical_type();
    let logical = info.logical_type_ref();
    let converted = info.converted_type();
    let ok = match physical {
        PhysicalType::BOOLEAN | PhysicalType::FLOAT | PhysicalType::DOUBLE => {
            matches!(logical, None | Some(LogicalType::Unknown))
        }
        // Plain integers, sized and unsigned ones, and Arrow's null type (INT32 `Unknown`).
        PhysicalType::INT32 | PhysicalType::INT64 => match logical {
            Some(l) => matches!(l, LogicalType::Integer(_) | LogicalType::Unknown),
            None => matches!(
                converted,
                ConvertedType::NONE
                    | ConvertedType::INT_8
                    | ConvertedType::INT_16
                    | ConvertedType::INT_32
                    | ConvertedType::INT_64
                    | ConvertedType::UINT_8
                    | ConvertedType::UINT_16
                    | ConvertedType::UINT_32
                    | ConvertedType::UINT_64
            ),
        },
        PhysicalType::BYTE_ARRAY => match logical {
            Some(l) => matches!(
                l,
                LogicalType::String | LogicalType::Enum | LogicalType::Json
            ),
            None => matches!(
                converted,
                ConvertedType::UTF8 | ConvertedType::ENUM | ConvertedType::JSON
            ),
        },
        PhysicalType::FIXED_LEN_BYTE_ARRAY => matches!(logical, Some(LogicalType::Float16)),
        PhysicalType::INT96 => false,
    };
    if ok {
        return Ok(());
    }
    let annotation = match (logical, physical) {
        (Some(LogicalType::Decimal(_)), _) => " (a decimal)".into(),
        (Some(LogicalType::Date), _) => " (a date)".into(),
        (Some(LogicalType::Time(_)), _) => " (a time)".into(),
        (Some(LogicalType::Timestamp(_)), _) => " (a timestamp)".into(),
        (Some(l), _) => format!(" ({l:?})"),
        (None, _) if converted != ConvertedType::NONE => format!(" ({converted})"),
        (None, PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY) => " (binary)".into(),
        (None, PhysicalType::INT96) => " (a legacy timestamp)".into(),
        (None, _) => String::new(),
    };
    unsupported(format!("{physical}{annotation}"))
}

/// A row (or struct) as a JSON object; `at` is the dotted path of the struct, for errors.
fn object(row: &Row, at: &str) -> std::result::Result<Map<String, Value>, String> {
    row.get_column_iter()
        .map(|(name, field)| {
            let path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            Ok((name.clone(), value(field, &path)?))
        })
        .collect()
}

/// A value as JSON, as pyarrow's `to_pylist` gives it (floats widened to f64).
fn value(field: &Field, at: &str) -> std::result::Result<Value, String> {
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::from(*b),
        Field::Byte(x) => Value::from(*x),
        Field::Short(x) => Value::from(*x),
        Field::Int(x) => Value::from(*x),
        Field::Long(x) => Value::from(*x),
        Field::UByte(x) => Value::from(*x),
        Field::UShort(x) => Value::from(*x),
        Field::UInt(x) => Value::from(*x),
        Field::ULong(x) => Value::from(*x),
        Field::Float16(x) => Value::from(f64::from(*x)),
        Field::Float(x) => Value::from(f64::from(*x)),
        Field::Double(x) => Value::from(*x),
        Field::Str(s) => Value::from(s.as_str()),
        Field::Group(row) => Value::Object(object(row, at)?),
        Field::ListInternal(list) => list
            .elements()
            .iter()
            .map(|f| value(f, at))
            .collect::<std::result::Result<_, _>>()?,
        // check_type refuses these columns; a value of one is still an error, not a panic.
        Field::Bytes(_) => return Err(format!("column `{at}` holds binary values")),
        Field::Decimal(_) => return Err(format!("column `{at}` holds decimals")),
        Field::MapInternal(_) => return Err(format!("column `{at}` holds maps")),
        Field::Date(_)
        | Field::TimeMillis(_)
        | Field::TimeMicros(_)
        | Field::TimestampMillis(_)
        | Field::TimestampMicros(_) => return Err(format!("column `{at}` holds dates or times")),
    })
}
