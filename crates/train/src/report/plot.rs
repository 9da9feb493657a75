//! A loss curve as a PNG: training loss (blue line) and evaluation loss (orange line with a
//! marker on each point) against the step, on linear axes with "nice" ticks (1, 2 or 5 times a
//! power of ten), light grid lines, numeric tick labels, a title and a legend, drawn with a
//! built-in 3x5 bitmap font (digits, `.`, `-`, `+`, `e`, upper-case letters and a little
//! punctuation; a title is drawn upper-cased, and also stored as the PNG's `Title` text).

use std::path::Path;

use serde_json::Value;

use super::png;
use crate::{Result, TrainError};

/// The width of the image [`plot_losses`] writes, in pixels.
pub const PLOT_WIDTH: u32 = 800;
/// The height of the image [`plot_losses`] writes, in pixels.
pub const PLOT_HEIGHT: u32 = 500;

/// `(step, loss)` points of one series.
pub type Points = Vec<(f64, f64)>;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
const TEXT: Rgb = [40, 40, 40];
/// matplotlib's first two colours (C0, C1).
const TRAIN: Rgb = [31, 119, 180];
const EVAL: Rgb = [255, 127, 14];

/// Values beyond this magnitude are skipped like NaN and inf (their spans would overflow).
const MAX_ABS: f64 = 1e300;
const LABEL_SCALE: i64 = 2;
const TITLE_SCALE: i64 = 3;
const TICK_LEN: i64 = 5;

/// Draws `train` and `eval` (`(step, loss)` points) as a line chart titled `title` into an
/// RGB PNG of [`PLOT_WIDTH`] x [`PLOT_HEIGHT`] at `path`, written whole or not at all (a hidden
/// file beside it, then renamed). Points with a NaN, infinite (or beyond ±1e300) step or loss are
/// skipped; each series is drawn in step order. Either series may be empty; a single point is
/// drawn as a marker, a flat series as a level line. An error when no point at all is left to
/// draw, or the file cannot be written.
pub fn plot_losses(
    path: impl AsRef<Path>,
    train: &[(f64, f64)],
    eval: &[(f64, f64)],
    title: &str,
) -> Result<()> {
    let rgb = render(train, eval, title)?;
    let title_text: String = title
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    let mut text = vec![("Software", "ferroformers")];
    if !title_text.is_empty() {
        text.push(("Title", title_text.as_str()));
    }
    png::write_rgb(path, PLOT_WIDTH, PLOT_HEIGHT, &rgb, &text)
}

/// The `(step, loss)` points of a Trainer's log history: entries with `loss` are training
/// points, entries with `eval_loss` evaluation points; each at the entry's `step` (entries
/// without a numeric `step` are skipped).
pub fn losses_from_log(history: &[Value]) -> (Points, Points) {
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for entry in history {
        let Some(step) = entry.get("step").and_then(Value::as_f64) else {
            continue;
        };
        if let Some(loss) = entry.get("loss").and_then(Value::as_f64) {
            train.push((step, loss));
        }
        if let Some(loss) = entry.get("eval_loss").and_then(Value::as_f64) {
            eval.push((step, loss));
        }
    }
    (train, eval)
}

/// The chart's pixels, `PLOT_WIDTH * PLOT_HEIGHT * 3` bytes.
fn render(train: &[(f64, f64)], eval: &[(f64, f64)], title: &str) -> Result<Vec<u8>> {
    let clean = |points: &[(f64, f64)]| {
        let ok = |v: f64| v.is_finite() && v.abs() <= MAX_ABS;
        let mut kept: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|&(x, y)| ok(x) && ok(y))
            .collect();
        kept.sort_by(|a, b| a.0.total_cmp(&b.0));
        kept
    };
    let (train, eval) = (clean(train), clean(eval));
    let all = || train.iter().chain(eval.iter());
    if all().next().is_none() {
        return Err(TrainError::InvalidArgument {
            param: "train/eval",
            msg: "no point to plot: both series are empty or hold only NaN/inf values".into(),
        });
    }
    let bounds = |f: fn(&(f64, f64)) -> f64| {
        all()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let xs = Axis::new(bounds(|p| p.0));
    let ys = Axis::new(bounds(|p| p.1));
    let x_labels: Vec<String> = xs.ticks().map(|t| xs.label(t)).collect();
    let y_labels: Vec<String> = ys.ticks().map(|t| ys.label(t)).collect();

    let (w, h) = (i64::from(PLOT_WIDTH), i64::from(PLOT_HEIGHT));
    let y_label_w = y_labels
        .iter()
        .map(|l| text_width(l, LABEL_SCALE))
        .max()
        .unwrap_or(0);
    let char_h = 5 * LABEL_SCALE;
    // the plot area: [left, right] x [top, bottom], inclusive
    let left = 12 + y_label_w + 4 + TICK_LEN;
    let right = w - 24;
    let top = 16 + 5 * TITLE_SCALE + 14;
    let bottom = h - (TICK_LEN + 6 + char_h + 10 + char_h + 10);
    let px = |x: f64| left + ((x - xs.lo) / (xs.hi - xs.lo) * (right - left) as f64).round() as i64;
    let py =
        |y: f64| bottom - ((y - ys.lo) / (ys.hi - ys.lo) * (bottom - top) as f64).round() as i64;

    let mut c = Canvas::new(w, h);
    for t in xs.ticks() {
        c.line(px(t), top, px(t), bottom, 1, GRID);
    }
    for t in ys.ticks() {
        c.line(left, py(t), right, py(t), 1, GRID);
    }
    for (points, colour, markers) in [(&train, TRAIN, false), (&eval, EVAL, true)] {
        let pixels: Vec<(i64, i64)> = points.iter().map(|&(x, y)| (px(x), py(y))).collect();
        for pair in pixels.windows(2) {
            c.line(pair[0].0, pair[0].1, pair[1].0, pair[1].1, 2, colour);
        }
        if markers || pixels.len() == 1 {
            for &(x, y) in &pixels {
                c.fill_rect(x - 3, y - 3, 7, 7, colour);
            }
        }
    }
    // the axes' box, its ticks and labels
    c.line(left, top, right, top, 1, BLACK);
    c.line(left, bottom, right, bottom, 1, BLACK);
    c.line(left, top, left, bottom, 1, BLACK);
    c.line(right, top, right, bottom, 1, BLACK);
    for (t, label) in xs.ticks().zip(&x_labels) {
        let x = px(t);
        c.line(x, bottom, x, bottom + TICK_LEN, 1, BLACK);
        let lw = text_width(label, LABEL_SCALE);
        c.text(x - lw / 2, bottom + TICK_LEN + 6, label, LABEL_SCALE, TEXT);
    }
    for (t, label) in ys.ticks().zip(&y_labels) {
        let y = py(t);
        c.line(left - TICK_LEN, y, left, y, 1, BLACK);
        let lw = text_width(label, LABEL_SCALE);
        c.text(
            left - TICK_LEN - 4 - lw,
            y - char_h / 2,
            label,
            LABEL_SCALE,
            TEXT,
        );
    }
    let x_title = "STEP";
    c.text(
        (left + right - text_width(x_title, LABEL_SCALE)) / 2,
        bottom + TICK_LEN + 6 + char_h + 10,
        x_title,
        LABEL_SCALE,
        TEXT,
    );
    // the legend, right-aligned in the top margin
    let mut legend_x = right;
    let legend_y = 16 + (5 * TITLE_SCALE - char_h) / 2;
    for (name, colour, n) in [("EVAL", EVAL, eval.len()), ("TRAIN", TRAIN, train.len())] {
        if n == 0 {
            continue;
        }
        legend_x -= text_width(name, LABEL_SCALE);
        c.text(legend_x, legend_y, name, LABEL_SCALE, TEXT);
        legend_x -= 6 + 20;
        c.line(
            legend_x,
            legend_y + char_h / 2,
            legend_x + 20,
            legend_y + char_h / 2,
            2,
            colour,
        );
        legend_x -= 16;
    }
    // the title, upper-cased and cut to the room left of the legend
    let room = ((legend_x - left - 10) / (4 * TITLE_SCALE)).max(0) as usize;
    let title: String = title.to_uppercase().chars().take(room).collect();
    c.text(left, 16, &title, TITLE_SCALE, BLACK);
    Ok(c.pixels)
}

/// One axis: its range, snapped out to whole ticks, and the tick step.
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    count: usize,
    scientific: bool,
}

impl Axis {
    /// The axis over data from `lo` to `hi` (finite, `lo <= hi`): about 5 ticks at 1, 2 or 5
    /// times a power of ten; a flat range is widened by 5% of its value (or 1 around zero).
    fn new((mut lo, mut hi): (f64, f64)) -> Self {
        let magnitude = lo.abs().max(hi.abs());
        if hi - lo <= magnitude * 1e-9 {
            // (around zero, or so small that 5% of it would vanish: widen by 1)
            let pad = if magnitude > 1e-290 {
                magnitude * 0.05
            } else {
                1.0
            };
            lo -= pad;
            hi += pad;
        }
        let raw = (hi - lo) / 5.0;
        let power = 10f64.powf(raw.log10().floor());
        let norm = raw / power;
        let nice = if norm < 1.5 {
            1.0
        } else if norm < 3.0 {
            2.0
        } else if norm < 7.0 {
            5.0
        } else {
            10.0
        };
        let step = nice * power;
        let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
        let count = (((hi - lo) / step).round() as usize).clamp(1, 20);
        let magnitude = lo.abs().max(hi.abs());
        Self {
            lo,
            hi,
            step,
            count,
            scientific: magnitude >= 1e5 || step < 1e-3,
        }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        (0..=self.count).map(|k| {
            let t = self.lo + k as f64 * self.step;
            // no "-0" from rounding error
            if t.abs() < self.step * 1e-6 {
                0.0
            } else {
                t
            }
        })
    }

    /// The tick's label, with as many digits as the step needs.
    fn label(&self, t: f64) -> String {
        let step_exp = self.step.log10().floor() as i64;
        if t == 0.0 {
            "0".into()
        } else if self.scientific {
            let digits = (t.abs().log10().floor() as i64 - step_exp).clamp(0, 4) as usize;
            format!("{t:.digits$e}")
        } else {
            let decimals = (-step_exp).clamp(0, 6) as usize;
            format!("{t:.decimals$}")
        }
    }
}

/// An RGB image being drawn; pixels outside it are ignored.
struct Canvas {
    w: i64,
    h: i64,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(w: i64, h: i64) -> Self {
        let mut pixels = Vec::with_capacity((w * h * 3) as usize);
        for _ in 0..w * h {
            pixels.extend_from_slice(&WHITE);
        }
        Self { w, h, pixels }
    }

    fn set(&mut self, x: i64, y: i64, colour: Rgb) {
        if (0..self.w).contains(&x) && (0..self.h).contains(&y) {
            let i = ((y * self.w + x) * 3) as usize;
            self.pixels[i..i + 3].copy_from_slice(&colour);
        }
    }

    fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, colour: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, colour);
            }
        }
    }

    /// A line from (x0, y0) to (x1, y1), `width` pixels thick (Bresenham, a square brush).
    fn line(&mut self, mut x0: i64, mut y0: i64, x1: i64, y1: i64, width: i64, colour: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            self.fill_rect(x0, y0, width, width, colour);
            if x0 == x1 && y0 == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x0 += sx;
            }
            if e2 <= dx {
                err += dx;
                y0 += sy;
            }
        }
    }

    /// `s` with its top-left corner at (x, y), each font pixel `scale` x `scale` pixels.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, colour: Rgb) {
        for (i, ch) in s.chars().enumerate() {
            let x0 = x + i as i64 * 4 * scale;
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        let (gx, gy) = (x0 + col * scale, y + row as i64 * scale);
                        self.fill_rect(gx, gy, scale, scale, colour);
                    }
                }
            }
        }
    }
}

/// The width in pixels of `s` drawn at `scale` (3 pixels a glyph, 1 between glyphs).
fn text_width(s: &str, scale: i64) -> i64 {
    let n = s.chars().count() as i64;
    (n * 4 - 1).max(0) * scale
}

/// The 3x5 glyph of `c`, five rows top to bottom, bit 2 the left column. Lower-case letters
/// other than `e` (the exponent of a number) are drawn as capitals; unknown characters as `?`.
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        _ if c == 'e' => [0b000, 0b111, 0b111, 0b100, 0b111],
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b001, 0b001, 0b001],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        '+' => [0b000, 0b010, 0b111, 0b010, 0b000],
        ' ' => [0; 5],
        ':' => [0b000, 0b010, 0b000, 0b010, 0b000],
        ',' => [0b000, 0b000, 0b000, 0b010, 0b100],
        '/' => [0b001, 0b001, 0b010, 0b100, 0b100],
        '_' => [0b000, 0b000, 0b000, 0b000, 0b111],
        '=' => [0b000, 0b111, 0b000, 0b111, 0b000],
        '(' => [0b010, 0b100, 0b100, 0b100, 0b010],
        ')' => [0b010, 0b001, 0b001, 0b001, 0b010],
        '%' => [0b101, 0b001, 0b010, 0b100, 0b101],
        'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
        'B' => [0b110, 0b101, 0b110, 0b101, 0b110],
        'C' => [0b011, 0b100, 0b100, 0b100, 0b011],
        'D' => [0b110, 0b101, 0b101, 0b101, 0b110],
        'E' => [0b111, 0b100, 0b110, 0b100, 0b111],
        'F' => [0b111, 0b100, 0b110, 0b100, 0b100],
        'G' => [0b011, 0b100, 0b101, 0b101, 0b011],
        'H' => [0b101, 0b101, 0b111, 0b101, 0b101],
        'I' => [0b111, 0b010, 0b010, 0b010, 0b111],
        'J' => [0b001, 0b001, 0b001, 0b101, 0b010],
        'K' => [0b101, 0b101, 0b110, 0b101, 0b101],
        'L' => [0b100, 0b100, 0b100, 0b100, 0b111],
        'M' => [0b101, 0b111, 0b111, 0b101, 0b101],
        'N' => [0b101, 0b111, 0b111, 0b111, 0b101],
        'O' => [0b010, 0b101, 0b101, 0b101, 0b010],
        'P' => [0b110, 0b101, 0b110, 0b100, 0b100],
        'Q' => [0b010, 0b101, 0b101, 0b110, 0b011],
        'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
        'S' => [0b011, 0b100, 0b010, 0b001, 0b110],
        'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
        'U' => [0b101, 0b101, 0b101, 0b101, 0b111],
        'V' => [0b101, 0b101, 0b101, 0b101, 0b010],
        'W' => [0b101, 0b101, 0b111, 0b111, 0b101],
        'X' => [0b101, 0b101, 0b010, 0b101, 0b101],
        'Y' => [0b101, 0b101, 0b010, 0b010, 0b010],
        'Z' => [0b111, 0b001, 0b010, 0b100, 0b111],
        _ => [0b111, 0b001, 0b010, 0b000, 0b010],
    }
}
