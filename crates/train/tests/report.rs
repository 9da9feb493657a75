//! The training reports: TensorBoard event files (TFRecord framing, CRC-32C, the protobuf
//! `Event`s byte for byte as TensorBoard's own writer makes them, read back by a reader written
//! here) and the loss-curve PNG (chunks and their CRC-32s, the zlib stream and its Adler-32,
//! the size and the drawn pixels).
//!
//! With `FERRO_REPORT_DIR` set, `example_reports` leaves a log.jsonl, its event file and its
//! loss PNG there, and `degenerate_series_still_make_an_image` its PNGs in degenerate/, for
//! scripts/check_training_reports.py.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::io::Read;
use std::path::{Path, PathBuf};

use ferro_train::report::tensorboard::{
    encode_file_version_event, encode_scalar_event, tfrecord, FILE_VERSION,
};
use ferro_train::report::{
    adler32, crc32, crc32c, losses_from_log, masked_crc32c, plot_losses, scalars_from_log,
    EventWriter, Points, PLOT_HEIGHT, PLOT_WIDTH,
};
use ferro_train::TrainError;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// checksums

#[test]
fn checksums_match_their_check_values() {
    // the "check" values of the CRC catalogue and zlib's documentation
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32c(b""), 0);
    assert_eq!(crc32(b""), 0);
    assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    assert_eq!(adler32(b""), 1);
    // iSCSI's test vector (RFC 3720 B.4): 32 bytes of zeros
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    // masking: ((crc >> 15) | (crc << 17)) + 0xa282ead8
    let crc = crc32c(b"123456789");
    let masked = crc.rotate_right(15).wrapping_add(0xa282_ead8);
    assert_eq!(masked_crc32c(b"123456789"), masked);
    assert_eq!(masked_crc32c(b""), 0xa282_ead8);
    // Adler-32 past zlib's 5552-byte block, against a direct sum
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let (mut a, mut b) = (1u64, 0u64);
    for &x in &data {
        a = (a + u64::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    assert_eq!(adler32(&data), ((b << 16) | a) as u32);
}

// ---------------------------------------------------------------------------------------------
// TensorBoard

/// What TensorBoard 2.21.0's own `RecordWriter` wrote for these four events, serialized by
/// protobuf 7.36.2 (`tensorboard.compat.proto.event_pb2`):
/// Event(wall_time=1700000000.5, file_version="brain.Event:2"),
/// Event(wall_time=1700000001.25, step=3, summary=[Value(tag="train/loss", simple_value=0.25)]),
/// Event(wall_time=1700000002.0, step=0, summary=[Value(tag="eval/accuracy", simple_value=0.0)]),
/// Event(wall_time=1700000003.0, step=-5, summary=[Value(tag="x", simple_value=-1.5)]).
const TENSORBOARD_RECORDS: &str = "1800000000000000a37f4b220900002040fc54d9411a0d627261696e2e4576\
656e743a322b353110200000000000000029eda9500900005040fc54d94110032a130a110a0a747261696e2f6c6f73\
73150000803ec7fb3fdd2100000000000000017becf60900008040fc54d9412a160a140a0d6576616c2f616363757261\
637915000000007b98c2b3200000000000000029eda950090000c040fc54d94110fbffffffffffffffff012a0a0a080a\
0178150000c0bfb7d664ce";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn events_are_byte_for_byte_tensorboards() {
    let mut ours = tfrecord(&encode_file_version_event(1_700_000_000.5));
    ours.extend(tfrecord(&encode_scalar_event(
        1_700_000_001.25,
        3,
        "train/loss",
        0.25,
    )));
    ours.extend(tfrecord(&encode_scalar_event(
        1_700_000_002.0,
        0,
        "eval/accuracy",
        0.0,
    )));
    ours.extend(tfrecord(&encode_scalar_event(
        1_700_000_003.0,
        -5,
        "x",
        -1.5,
    )));
    assert_eq!(ours, hex(TENSORBOARD_RECORDS));
}

/// Reads a TFRecord stream, checking both masked CRC-32Cs of every record.
fn read_records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        assert!(
            bytes.len() - at >= 12,
            "a record header is cut at byte {at}"
        );
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        assert_eq!(len_crc, masked_crc32c(len_bytes), "length CRC at byte {at}");
        let data = &bytes[at + 12..at + 12 + len];
        let data_crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
        assert_eq!(data_crc, masked_crc32c(data), "data CRC at byte {at}");
        records.push(data.to_vec());
        at += 16 + len;
    }
    records
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(Vec<u8>),
    Fixed32([u8; 4]),
}

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = bytes[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
    }
    panic!("varint too long");
}

/// A protobuf message's fields, in order, as (field number, value).
fn fields(bytes: &[u8]) -> Vec<(u64, Field)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at);
        let field = match key & 7 {
            0 => Field::Varint(varint(bytes, &mut at)),
            1 => {
                at += 8;
                Field::Fixed64(bytes[at - 8..at].try_into().unwrap())
            }
            2 => {
                let len = varint(bytes, &mut at) as usize;
                at += len;
                Field::Bytes(bytes[at - len..at].to_vec())
            }
            5 => {
                at += 4;
                Field::Fixed32(bytes[at - 4..at].try_into().unwrap())
            }
            w => panic!("wire type {w}"),
        };
        out.push((key >> 3, field));
    }
    out
}

#[derive(Debug, Default, PartialEq)]
struct Event {
    wall_time: f64,
    step: i64,
    file_version: Option<String>,
    /// (tag, simple_value) of the summary's values
    scalars: Vec<(String, f32)>,
}

fn parse_event(bytes: &[u8]) -> Event {
    let mut e = Event::default();
    for (number, field) in fields(bytes) {
        match (number, field) {
            (1, Field::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => e.step = v as i64,
            (3, Field::Bytes(b)) => e.file_version = Some(String::from_utf8(b).unwrap()),
            (5, Field::Bytes(summary)) => {
                for (n, value) in fields(&summary) {
                    assert_eq!(n, 1);
                    let Field::Bytes(value) = value else {
                        panic!("Summary.value is a message")
                    };
                    let (mut tag, mut simple) = (String::new(), None);
                    for (n, f) in fields(&value) {
                        match (n, f) {
                            (1, Field::Bytes(b)) => tag = String::from_utf8(b).unwrap(),
                            (2, Field::Fixed32(b)) => simple = Some(f32::from_le_bytes(b)),
                            other => panic!("unexpected Summary.Value field {other:?}"),
                        }
                    }
                    e.scalars.push((tag, simple.expect("simple_value")));
                }
            }
            other => panic!("unexpected Event field {other:?}"),
        }
    }
    e
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .contains("tfevents")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn event_writer_writes_what_a_reader_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("runs").join("run-1");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut w = EventWriter::create(&log_dir).unwrap();
    let name = w.path().file_name().unwrap().to_str().unwrap().to_string();
    let parts: Vec<&str> = name.split('.').collect();
    assert_eq!(&parts[..3], ["events", "out", "tfevents"], "{name}");
    assert_eq!(parts[3].len(), 10, "{name}: ten digits of seconds");
    let secs: f64 = parts[3].parse().unwrap();
    assert!((secs - before).abs() < 5.0, "{name}");
    assert_eq!(w.path().parent().unwrap(), log_dir);

    w.add_scalar("train/loss", 0.693_f32, 1, Some(1_700_000_000.0))
        .unwrap();
    w.add_scalar("train/learning_rate", 5e-5, 2, Some(1_700_000_001.5))
        .unwrap();
    // a second reader sees every record while the writer is still open: nothing is buffered
    let records = read_records(&std::fs::read(w.path()).unwrap());
    assert_eq!(records.len(), 3);
    w.add_scalar("eval/loss", -0.0, 0, None).unwrap();
    w.flush().unwrap();
    let path = w.path().to_path_buf();
    drop(w);

    let events: Vec<Event> = read_records(&std::fs::read(&path).unwrap())
        .iter()
        .map(|r| parse_event(r))
        .collect();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
    assert!((events[0].wall_time - before).abs() < 5.0);
    assert!(events[0].scalars.is_empty());
    assert_eq!(
        events[1],
        Event {
            wall_time: 1_700_000_000.0,
            step: 1,
            file_version: None,
            scalars: vec![("train/loss".into(), 0.693)],
        }
    );
    assert_eq!(events[2].step, 2);
    assert_eq!(
        events[2].scalars,
        vec![("train/learning_rate".into(), 5e-5_f32)]
    );
    assert_eq!(events[3].step, 0);
    assert!((events[3].wall_time - before).abs() < 5.0);
    assert_eq!(events[3].scalars[0].0, "eval/loss");

    // a second writer in the same directory and second gets a file of its own
    let w2 = EventWriter::create(&log_dir).unwrap();
    assert_ne!(w2.path(), path);
    assert_eq!(event_files(&log_dir).len(), 2);
    assert_eq!(read_records(&std::fs::read(&path).unwrap()).len(), 4);
}

#[test]
fn log_entries_become_transformers_tags() {
    let train =
        json!({"loss": 0.6523, "grad_norm": 1.25, "learning_rate": 5e-5, "epoch": 0.5, "step": 10});
    assert_eq!(
        scalars_from_log(&train),
        vec![
            ("train/loss".to_string(), 0.6523, 10),
            ("train/grad_norm".to_string(), 1.25, 10),
            ("train/learning_rate".to_string(), 5e-5, 10),
            ("train/epoch".to_string(), 0.5, 10),
        ]
    );
    // an evaluation's epoch is train/epoch, as transformers' rewrite_logs makes it; a step
    // written as a float still counts
    let eval = json!({"eval_loss": 0.5, "eval_accuracy": 0.75, "epoch": 1.0, "step": 20.0});
    assert_eq!(
        scalars_from_log(&eval),
        vec![
            ("eval/loss".to_string(), 0.5, 20),
            ("eval/accuracy".to_string(), 0.75, 20),
            ("train/epoch".to_string(), 1.0, 20),
        ]
    );
    // strings, nulls (a NaN in JSON), arrays are not scalars; booleans are (Python's bool is an int)
    let odd =
        json!({"test_f1": 0.9, "note": "x", "train_loss": null, "v": [1], "flag": true, "step": 3});
    assert_eq!(
        scalars_from_log(&odd),
        vec![
            ("test/f1".to_string(), 0.9, 3),
            ("train/flag".to_string(), 1.0, 3),
        ]
    );
    assert!(scalars_from_log(&json!([1, 2])).is_empty());
    assert_eq!(
        scalars_from_log(&json!({"loss": 1.0})),
        vec![("train/loss".to_string(), 1.0, 0)]
    );

    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path()).unwrap();
    assert_eq!(w.add_log_entry(&train, Some(1.0)).unwrap(), 4);
    assert_eq!(w.add_log_entry(&eval, None).unwrap(), 3);
    let events: Vec<Event> = read_records(&std::fs::read(w.path()).unwrap())
        .iter()
        .map(|r| parse_event(r))
        .collect();
    assert_eq!(events.len(), 8);
    assert_eq!(
        events[1..5]
            .iter()
            .map(|e| (e.scalars[0].0.as_str(), e.step, e.wall_time))
            .collect::<Vec<_>>(),
        [
            ("train/loss", 10, 1.0),
            ("train/grad_norm", 10, 1.0),
            ("train/learning_rate", 10, 1.0),
            ("train/epoch", 10, 1.0)
        ]
    );
    assert_eq!(events[5].scalars, vec![("eval/loss".to_string(), 0.5)]);
    assert_eq!(events[7].step, 20);
}

#[test]
fn an_unwritable_log_dir_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = EventWriter::create(file.join("runs")).unwrap_err();
    assert!(matches!(err, TrainError::File { .. }), "{err}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// PNG

struct Png {
    width: u32,
    height: u32,
    chunks: Vec<String>,
    text: Vec<(String, String)>,
    /// RGB, rows top to bottom
    pixels: Vec<u8>,
}

/// Reads a PNG as plot_losses writes it, checking the signature, IHDR, every chunk's CRC-32,
/// the zlib header and the Adler-32 of the inflated data, and the filter byte of each row.
fn read_png(path: &Path) -> Png {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let mut at = 8;
    let (mut chunks, mut text, mut idat) = (Vec::new(), Vec::new(), Vec::new());
    let (mut width, mut height) = (0, 0);
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + len];
        let crc = u32::from_be_bytes(bytes[at + 8 + len..at + 12 + len].try_into().unwrap());
        let name = String::from_utf8(kind.to_vec()).unwrap();
        assert_eq!(crc, crc32(&bytes[at + 4..at + 8 + len]), "CRC of {name}");
        match name.as_str() {
            "IHDR" => {
                assert_eq!(len, 13);
                width = u32::from_be_bytes(data[0..4].try_into().unwrap());
                height = u32::from_be_bytes(data[4..8].try_into().unwrap());
                // 8 bits, RGB, deflate, filter method 0, no interlace
                assert_eq!(&data[8..], [8, 2, 0, 0, 0]);
            }
            "tEXt" => {
                let nul = data.iter().position(|&b| b == 0).unwrap();
                text.push((
                    String::from_utf8(data[..nul].to_vec()).unwrap(),
                    String::from_utf8(data[nul + 1..].to_vec()).unwrap(),
                ));
            }
            "IDAT" => idat.extend_from_slice(data),
            "IEND" => assert_eq!(len, 0),
            other => panic!("unexpected chunk {other}"),
        }
        chunks.push(name);
        at += 12 + len;
    }
    assert_eq!(chunks.first().map(String::as_str), Some("IHDR"));
    assert_eq!(chunks.last().map(String::as_str), Some("IEND"));
    // zlib: CM 8 (deflate), a window of at most 32K, FCHECK, no preset dictionary
    let (cmf, flg) = (idat[0], idat[1]);
    assert_eq!(cmf & 0x0f, 8);
    assert!(cmf >> 4 <= 7);
    assert_eq!((u16::from(cmf) << 8 | u16::from(flg)) % 31, 0);
    assert_eq!(flg & 0x20, 0);
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(&idat[2..idat.len() - 4])
        .read_to_end(&mut raw)
        .unwrap();
    let adler = u32::from_be_bytes(idat[idat.len() - 4..].try_into().unwrap());
    assert_eq!(adler, adler32(&raw), "zlib's Adler-32");
    let row = 1 + width as usize * 3;
    assert_eq!(raw.len(), row * height as usize);
    let mut pixels = Vec::with_capacity(raw.len());
    for line in raw.chunks(row) {
        assert_eq!(line[0], 0, "filter type None");
        pixels.extend_from_slice(&line[1..]);
    }
    Png {
        width,
        height,
        chunks,
        text,
        pixels,
    }
}

fn count_colour(png: &Png, rgb: [u8; 3]) -> usize {
    png.pixels.chunks(3).filter(|p| *p == rgb).count()
}

const TRAIN_RGB: [u8; 3] = [31, 119, 180];
const EVAL_RGB: [u8; 3] = [255, 127, 14];

/// Pixels of the two series' colours below the title and legend (the top 48 rows).
fn series_pixels(png: &Png) -> usize {
    let skip = 48 * png.width as usize * 3;
    png.pixels[skip..]
        .chunks(3)
        .filter(|p| *p == TRAIN_RGB || *p == EVAL_RGB)
        .count()
}

fn non_white(png: &Png) -> usize {
    png.pixels
        .chunks(3)
        .filter(|p| *p != [255, 255, 255])
        .count()
}

/// Files left in `dir` other than `keep` (no temporary file may remain).
fn others(dir: &Path, keep: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != keep)
        .collect()
}

#[test]
fn loss_curve_is_a_valid_png_with_both_series() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    let train: Vec<(f64, f64)> = (1..=200)
        .map(|s| (f64::from(s), 2.0 * (-f64::from(s) / 60.0).exp() + 0.1))
        .collect();
    let eval = [(50.0, 0.9), (100.0, 0.5), (150.0, 0.4), (200.0, 0.38)];
    plot_losses(&path, &train, &eval, "sentiment-minilm: loss").unwrap();
    let png = read_png(&path);
    assert_eq!((png.width, png.height), (PLOT_WIDTH, PLOT_HEIGHT));
    assert!(png.chunks.iter().any(|c| c == "IDAT"));
    assert!(png
        .text
        .contains(&("Title".to_string(), "sentiment-minilm: loss".to_string())));
    let (n_train, n_eval) = (count_colour(&png, TRAIN_RGB), count_colour(&png, EVAL_RGB));
    assert!(n_train > 500, "train pixels: {n_train}");
    assert!(n_eval > 200, "eval pixels: {n_eval}");
    let ink = non_white(&png);
    assert!(
        ink > n_train + n_eval + 1000,
        "axes, ticks and labels: {ink}"
    );
    assert!(ink < png.pixels.len() / 3 / 2, "mostly white: {ink}");
    // the curve falls: the train pixels of the left tenth of the plot sit above those of the
    // right tenth (rows count down)
    let w = png.width as usize;
    let mean_row = |cols: std::ops::Range<usize>| {
        let rows: Vec<usize> = png
            .pixels
            .chunks(3)
            .enumerate()
            .filter(|(i, p)| *p == TRAIN_RGB && cols.contains(&(i % w)))
            .map(|(i, _)| i / w)
            .collect();
        rows.iter().sum::<usize>() as f64 / rows.len() as f64
    };
    assert!(mean_row(100..180) < mean_row(680..760));
    assert!(others(dir.path(), "loss.png").is_empty());

    // written again over itself, whole
    plot_losses(&path, &train[..10], &[], "again").unwrap();
    let again = read_png(&path);
    assert_eq!(count_colour(&again, EVAL_RGB), 0, "no eval series");
    assert!(others(dir.path(), "loss.png").is_empty());
}

#[test]
fn degenerate_series_still_make_an_image() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = report_dir(tmp.path()).join("degenerate");
    std::fs::create_dir_all(&dir).unwrap();
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let cases: Vec<(&str, Points, Points)> = vec![
        ("single", vec![(1.0, 0.7)], vec![]),
        ("single-eval", vec![], vec![(5.0, 0.7)]),
        ("flat", vec![(1.0, 0.5), (2.0, 0.5), (3.0, 0.5)], vec![]),
        (
            "flat-zero",
            vec![(0.0, 0.0), (10.0, 0.0)],
            vec![(10.0, 0.0)],
        ),
        (
            "non-finite",
            vec![(1.0, 1.0), (2.0, nan), (3.0, inf), (inf, 1.0), (4.0, 0.5)],
            vec![(2.0, -inf), (4.0, 0.6)],
        ),
        ("same-step", vec![(3.0, 1.0), (3.0, 2.0)], vec![]),
        ("tiny", vec![(1.0, 1e-7), (2.0, 3e-7), (3.0, 2e-7)], vec![]),
        ("huge", vec![(1.0, 1e12), (1e6, -3e11)], vec![(5e5, 1e300)]),
        ("unsorted", vec![(3.0, 0.3), (1.0, 0.9), (2.0, 0.5)], vec![]),
    ];
    for (name, train, eval) in cases {
        let path = dir.join(format!("{name}.png"));
        plot_losses(&path, &train, &eval, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let png = read_png(&path);
        assert_eq!((png.width, png.height), (PLOT_WIDTH, PLOT_HEIGHT), "{name}");
        let drawn = series_pixels(&png);
        assert!(drawn >= 40, "{name}: {drawn} series pixels");
        assert!(non_white(&png) > 2000, "{name}");
    }
}

#[test]
fn nothing_to_plot_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    for (train, eval) in [
        (vec![], vec![]),
        (
            vec![(1.0, f64::NAN), (f64::NAN, 1.0)],
            vec![(2.0, f64::INFINITY)],
        ),
    ] {
        let err = plot_losses(&path, &train, &eval, "t").unwrap_err();
        assert!(matches!(err, TrainError::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("no point"), "{err}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    let err =
        plot_losses(dir.path().join("missing/loss.png"), &[(1.0, 1.0)], &[], "t").unwrap_err();
    assert!(matches!(err, TrainError::File { .. }), "{err}");
}

#[test]
fn losses_come_from_a_log_history() {
    let history = [
        json!({"loss": 0.9, "grad_norm": 1.0, "learning_rate": 1e-4, "epoch": 0.5, "step": 5}),
        json!({"loss": 0.7, "grad_norm": 1.0, "learning_rate": 1e-4, "epoch": 1.0, "step": 10}),
        json!({"eval_loss": 0.8, "eval_accuracy": 0.5, "epoch": 1.0, "step": 10.0}),
        json!({"loss": null, "step": 15}),
        json!({"loss": 0.1}),
    ];
    let (train, eval) = losses_from_log(&history);
    assert_eq!(train, [(5.0, 0.9), (10.0, 0.7)]);
    assert_eq!(eval, [(10.0, 0.8)]);
}

// ---------------------------------------------------------------------------------------------
// files for scripts/check_training_reports.py

/// `$FERRO_REPORT_DIR` (made if missing) when set, else `tmp`.
fn report_dir(tmp: &Path) -> PathBuf {
    let dir = std::env::var_os("FERRO_REPORT_DIR").map_or_else(|| tmp.to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A made-up run of 60 steps (logging every 5, evaluating every 20): its log entries as
/// `log.jsonl`, their event file under `runs/` and `loss.png`, in `$FERRO_REPORT_DIR` when set
/// (kept), else in a temporary directory.
#[test]
fn example_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let out = report_dir(tmp.path());
    let mut history = Vec::new();
    for step in (5..=60).step_by(5) {
        let s = f64::from(step);
        history.push(json!({
            "loss": 0.7 * (-s / 25.0).exp() + 0.05,
            "grad_norm": 2.0 / (1.0 + s / 10.0),
            "learning_rate": 5e-5 * (1.0 - s / 60.0),
            "epoch": s / 20.0,
            "step": step,
        }));
        if step % 20 == 0 {
            history.push(json!({
                "eval_loss": 0.6 * (-s / 30.0).exp() + 0.1,
                "eval_accuracy": 0.5 + s / 150.0,
                "epoch": s / 20.0,
                "step": step,
            }));
        }
    }
    let log: String = history.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(out.join("log.jsonl"), log).unwrap();
    let mut w = EventWriter::create(out.join("runs")).unwrap();
    let mut n = 0;
    for (i, entry) in history.iter().enumerate() {
        n += w
            .add_log_entry(entry, Some(1_700_000_000.0 + i as f64))
            .unwrap();
    }
    assert_eq!(n, 12 * 4 + 3 * 3);
    let (train, eval) = losses_from_log(&history);
    plot_losses(out.join("loss.png"), &train, &eval, "example run: loss").unwrap();
    let png = read_png(&out.join("loss.png"));
    assert!(count_colour(&png, EVAL_RGB) > 0);
    let events = read_records(&std::fs::read(w.path()).unwrap());
    assert_eq!(events.len(), 1 + n);
    eprintln!(
        "wrote {} and {}",
        w.path().display(),
        out.join("loss.png").display()
    );
}
