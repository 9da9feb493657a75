//! Q4_K, Q5_K and Q6_K matrices repacked at load with eight rows interleaved, as
//! `interleaved.rs` does for the 32-weight types: lane `l` of every register is row
//! `8g + l`, so a 256-weight super-block of eight rows costs no horizontal sum and its
//! scales are converted once for the eight rows.
//!
//! GGUF formats (per row, 256 weights): Q4_K has f16 `d`, `dmin`, 8 sub-blocks of 32 with
//! 6-bit scale `sc` and min `m` packed in 12 bytes, and 4-bit `q`; weight =
//! `d·sc·q − dmin·m`. Q5_K is Q4_K with a fifth bit of `q` in `qh`. Q6_K has 16 sub-blocks
//! of 16 with i8 scales, 6-bit `q` (low 4 bits in `ql`, high 2 in `qh`) and f16 `d`;
//! weight = `d·sc·(q − 32)`.
//!
//! Chunk `c` of a sub-block is its weights `4c .. 4c + 4`; in a chunk's register byte
//! `4l + j` is weight `4c + j` of row `l`. `maddubs` with four broadcast activations gives
//! each row's pair sums in i16 lanes `2l`, `2l + 1`; `madd` with the sub-block's scale
//! duplicated in both lanes of a row folds them to an i32 per row, already scaled. A group
//! (eight rows' super-block) takes exactly the bytes of the eight file blocks, so bands
//! are repacked in place.

use std::ops::Range;

use super::interleaved::{band_dots, repack_bands, BandDotsFn, PlainBytes};
use super::{OutColumns, Prepared, QuantRows};

/// A GGUF Q4_K block.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct BlockQ4K {
    /// f16 bits.
    d: u16,
    /// f16 bits.
    dmin: u16,
    scales: [u8; 12],
    qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// The 6-bit scales and mins of Q4_K's and Q5_K's 8 sub-blocks (ggml's
/// `get_scale_min_k4`).
fn scales_mins_k4(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, m)
}

impl BlockQ4K {
    /// The 256 `q` (0..=15): sub-block `2i` in the low nibbles of `qs[32i..32i + 32]`,
    /// `2i + 1` in the high ones.
    fn quants(&self) -> [u8; 256] {
        std::array::from_fn(|e| {
            let (s, i) = (e / 32, e % 32);
            (self.qs[32 * (s / 2) + i] >> (4 * (s % 2))) & 0x0F
        })
    }
}

/// A GGUF Q5_K block.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct BlockQ5K {
    /// f16 bits.
    d: u16,
    /// f16 bits.
    dmin: u16,
    scales: [u8; 12],
    qh: [u8; 32],
    qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl BlockQ5K {
    /// The 256 `q` (0..=31): low four bits as Q4_K's, the fifth of weight `32s + i` in
    /// bit `s` of `qh[i]`.
    fn quants(&self) -> [u8; 256] {
        std::array::from_fn(|e| {
            let (s, i) = (e / 32, e % 32);
            let low = (self.qs[32 * (s / 2) + i] >> (4 * (s % 2))) & 0x0F;
            low | (((self.qh[i] >> s) & 1) << 4)
        })
    }
}

/// A GGUF Q6_K block.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct BlockQ6K {
    ql: [u8; 128],
    qh: [u8; 64],
    scales: [i8; 16],
    /// f16 bits.
    d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// The 256 `q` (0..=63). Each half of 128 weights uses 64 bytes of `ql` and 32 of
    /// `qh`; its quarter `t` (32 weights) takes nibble `t / 2` of `ql[32 (t % 2) + i]` and
    /// bits `2t, 2t + 1` of `qh[i]`.
    fn quants(&self) -> [u8; 256] {
        std::array::from_fn(|e| {
            let (n, t, i) = (e / 128, (e % 128) / 32, e % 32);
            let lo = (self.ql[64 * n + 32 * (t % 2) + i] >> (4 * (t / 2))) & 0x0F;
            let hi = (self.qh[32 * n + i] >> (2 * t)) & 3;
            lo | (hi << 4)
        })
    }
}

/// 256 activations as 8-bit integers (`|q| ≤ 127`) times a scale, with the sums of each
/// run of 16 and of 32 (what the kernels subtract for Q6_K's offset and Q4_K's mins).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct BlockQ8K {
    qs: [i8; 256],
    sums16: [i16; 16],
    sums32: [i16; 8],
    d: f32,
}

impl BlockQ8K {
    /// Rounds 256 values to the nearest multiple of `max|x| / 127`.
    fn quantize(x: &[f32]) -> Self {
        let mut qs = [0i8; 256];
        let d = super::blocks32::quantize_to_i8(x, &mut qs);
        // At most 32 · 127 in magnitude: fits an i16.
        let sum = |r: &[i8]| r.iter().map(|&q| i16::from(q)).sum::<i16>();
        Self {
            sums16: std::array::from_fn(|i| sum(&qs[16 * i..16 * i + 16])),
            sums32: std::array::from_fn(|i| sum(&qs[32 * i..32 * i + 32])),
            qs,
            d,
        }
    }
}

/// `x (m, k)` in 256-value blocks, row after row.
fn quantize_activations(x: &[f32], m: usize) -> Vec<BlockQ8K> {
    super::quantize_blocks(x, m, 256, BlockQ8K::quantize)
}

/// Eight rows' Q4_K super-block.
///
/// In `head` (`ScalesK4`), sub-block pair `k` (sub-blocks `2k`, `2k + 1`) keeps its scales
/// at byte `p = 2l + h` of 16: `sm[16k + p]` = `sc[l][2k + h] | (m[l][2k + h] >> 4) << 6`, and the mins' low
/// four bits in `mlo[16 (k % 2) + p]`, low nibble for `k < 2`, high for `k ≥ 2` (the 96
/// bytes of the eight rows' packed scales). Sub-block `s`'s weights are
/// `qs[128s .. 128s + 128]`: register `t` (32 bytes) holds chunk `t` in its low nibbles and
/// chunk `t + 4` in its high ones.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct GroupQ4K {
    head: ScalesK4,
    qs: [u8; 1024],
}
const _: () = assert!(std::mem::size_of::<GroupQ4K>() == 8 * std::mem::size_of::<BlockQ4K>());

// SAFETY: `#[repr(C)]` integers with no padding (sizes asserted at their definitions).
#[allow(unsafe_code)]
unsafe impl PlainBytes for GroupQ4K {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl PlainBytes for GroupQ5K {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl PlainBytes for GroupQ6K {}

/// Eight rows' Q5_K super-block: scales as Q4_K's; sub-block `s` in five registers
/// `qs[160s + 32i ..]`: chunk `i` (`i` < 5) whole in the low five bits, chunks 5–7 spread
/// over the top three bits as `SPREAD_Q5K` says (5 + 18 operations to expand eight chunks
/// where nibbles plus a plane of fifth bits take 35).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct GroupQ5K {
    head: ScalesK4,
    qs: [u8; 1280],
}

/// Where chunks 5–7 of a Q5_K sub-block live: `(chunk, register, bit in the register's
/// byte, bit of q, bits)`. Each register's bits 5–7 are used once.
const SPREAD_Q5K: [(usize, usize, u32, u32, u32); 7] = [
    (5, 0, 5, 0, 3),
    (5, 1, 6, 3, 2),
    (6, 1, 5, 0, 1),
    (6, 2, 5, 1, 3),
    (6, 3, 5, 4, 1),
    (7, 3, 6, 0, 2),
    (7, 4, 5, 2, 3),
];
const _: () = assert!(std::mem::size_of::<GroupQ5K>() == 8 * std::mem::size_of::<BlockQ5K>());

/// What Q4_K and Q5_K groups share ahead of their weights: eight rows' f16 `d` and `dmin`
/// and their 6-bit scales and mins in the layout `GroupQ4K` describes.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct ScalesK4 {
    d: [u16; 8],
    dmin: [u16; 8],
    sm: [u8; 64],
    mlo: [u8; 32],
}

impl ScalesK4 {
    fn new() -> Self {
        Self {
            d: [0; 8],
            dmin: [0; 8],
            sm: [0; 64],
            mlo: [0; 32],
        }
    }

    /// Row `l`'s `d`, `dmin` and packed 12-byte scales and mins.
    fn pack_lane(&mut self, l: usize, d: u16, dmin: u16, scales: &[u8; 12]) {
        self.d[l] = d;
        self.dmin[l] = dmin;
        let (sc, m) = scales_mins_k4(scales);
        for s in 0..8 {
            let (k, p) = (s / 2, 2 * l + s % 2);
            self.sm[16 * k + p] = sc[s] | ((m[s] >> 4) << 6);
            self.mlo[16 * (k % 2) + p] |= (m[s] & 0x0F) << (4 * (k / 2));
        }
    }

    /// Lane `l`'s scales and mins back.
    fn lane(&self, l: usize) -> ([u8; 8], [u8; 8]) {
        let mut sc = [0u8; 8];
        let mut m = [0u8; 8];
        for s in 0..8 {
            let (k, p) = (s / 2, 2 * l + s % 2);
            let b = self.sm[16 * k + p];
            sc[s] = b & 63;
            m[s] = ((self.mlo[16 * (k % 2) + p] >> (4 * (k / 2))) & 0x0F) | ((b >> 6) << 4);
        }
        (sc, m)
    }

    /// Lane `l`'s weights `d·sc·q − dmin·m` from its `q`, as candle's `to_float`.
    fn weights(&self, l: usize, q: &[u8; 256], out: &mut [f32]) {
        let (sc, m) = self.lane(l);
        to_f32_k4(self.d[l], self.dmin[l], q, sc, m, out);
    }

    /// Lane `l` (with weights `q`) times `a`, in plain Rust.
    fn dot(&self, l: usize, q: &[u8; 256], a: &BlockQ8K) -> f32 {
        let (sc, m) = self.lane(l);
        dot_k4(self.d[l], self.dmin[l], q, sc, m, a)
    }
}

/// Weights `d·sc·q − dmin·m` of one lane, as candle's `to_float` computes them.
fn to_f32_k4(d: u16, dmin: u16, q: &[u8; 256], sc: [u8; 8], m: [u8; 8], out: &mut [f32]) {
    let d = half::f16::from_bits(d).to_f32();
    let dmin = half::f16::from_bits(dmin).to_f32();
    for (s, (o, q)) in out.chunks_mut(32).zip(q.chunks(32)).enumerate() {
        let (d1, m1) = (d * f32::from(sc[s]), dmin * f32::from(m[s]));
        for (v, &q) in o.iter_mut().zip(q) {
            *v = d1 * f32::from(q) - m1;
        }
    }
}

/// One lane of Q4_K / Q5_K times `a`, in plain Rust.
fn dot_k4(d: u16, dmin: u16, q: &[u8; 256], sc: [u8; 8], m: [u8; 8], a: &BlockQ8K) -> f32 {
    let (mut main, mut mins) = (0i32, 0i32);
    for s in 0..8 {
        let sum: i32 = (32 * s..32 * s + 32)
            .map(|e| i32::from(q[e]) * i32::from(a.qs[e]))
            .sum();
        main += i32::from(sc[s]) * sum;
        mins += i32::from(m[s]) * i32::from(a.sums32[s]);
    }
    let d = half::f16::from_bits(d).to_f32();
    let dmin = half::f16::from_bits(dmin).to_f32();
    a.d * (d * main as f32 - dmin * mins as f32)
}

/// Eight rows' Q6_K super-block: `scales[16k + 2l + h]` = scale `2k + h` of row `l`;
/// sub-block `s` (16 weights, 4 chunks) in three registers `qs[96s + 32i ..]`, `i` < 3:
/// chunk `i` in the low six bits, two bits of chunk 3 (bits `2i, 2i + 1`) in the top two.
/// Chunks 0–2 then cost one `and` each, chunk 3 eight operations: 11 for four chunks
/// where nibbles plus a plane of high bits take 17.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct GroupQ6K {
    d: [u16; 8],
    scales: [i8; 128],
    qs: [u8; 1536],
}
const _: () = assert!(std::mem::size_of::<GroupQ6K>() == 8 * std::mem::size_of::<BlockQ6K>());

/// One band of groups against up to 4 activation rows: `out[r][l]` is row `8g + l` times
/// `acts[r]`.
pub(super) type GroupDotsFn<G> = BandDotsFn<G, BlockQ8K>;

/// An interleaved layout of a 256-weight block type.
pub(super) trait GroupK: PlainBytes + Send + Sync + std::fmt::Debug + 'static {
    /// The file's block.
    type Row: Copy + Send;
    /// Block `b` of eight rows.
    fn pack(rows: &[Self::Row; 8]) -> Self;
    /// Lane `l`'s 256 weights, computed as candle's `to_float` computes them.
    fn to_f32(&self, l: usize, out: &mut [f32]);
    /// Lane `l` times `a`, in plain Rust.
    fn dot(&self, l: usize, a: &BlockQ8K) -> f32;
    /// The fastest kernel this CPU runs.
    fn kernel() -> GroupDotsFn<Self>;
}

impl GroupQ4K {
    /// Lane `l`'s `q` (0..=15).
    fn lane(&self, l: usize) -> [u8; 256] {
        std::array::from_fn(|e| {
            let (s, c, j) = (e / 32, (e % 32) / 4, e % 4);
            (self.qs[128 * s + 32 * (c % 4) + 4 * l + j] >> (4 * (c / 4))) & 0x0F
        })
    }
}

impl GroupK for GroupQ4K {
    type Row = BlockQ4K;

    fn pack(rows: &[BlockQ4K; 8]) -> Self {
        let mut g = Self {
            head: ScalesK4::new(),
            qs: [0; 1024],
        };
        for (l, row) in rows.iter().enumerate() {
            g.head.pack_lane(l, row.d, row.dmin, &row.scales);
            for (e, q) in row.quants().into_iter().enumerate() {
                let (s, c, j) = (e / 32, (e % 32) / 4, e % 4);
                g.qs[128 * s + 32 * (c % 4) + 4 * l + j] |= q << (4 * (c / 4));
            }
        }
        g
    }

    fn to_f32(&self, l: usize, out: &mut [f32]) {
        self.head.weights(l, &self.lane(l), out);
    }

    fn dot(&self, l: usize, a: &BlockQ8K) -> f32 {
        self.head.dot(l, &self.lane(l), a)
    }

    fn kernel() -> GroupDotsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx512_vnni() {
            return vnni::dots_q4k;
        }
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx2() {
            return avx2::dots_q4k;
        }
        dots_portable
    }
}

impl GroupQ5K {
    /// Lane `l`'s `q` (0..=31).
    fn lane(&self, l: usize) -> [u8; 256] {
        std::array::from_fn(|e| {
            let (s, c, j) = (e / 32, (e % 32) / 4, e % 4);
            let byte = |i: usize| self.qs[160 * s + 32 * i + 4 * l + j];
            if c < 5 {
                byte(c) & 0x1F
            } else {
                SPREAD_Q5K
                    .iter()
                    .filter(|t| t.0 == c)
                    .fold(0, |q, &(_, i, at, to, n)| {
                        q | (((byte(i) >> at) & ((1 << n) - 1)) << to)
                    })
            }
        })
    }
}

impl GroupK for GroupQ5K {
    type Row = BlockQ5K;

    fn pack(rows: &[BlockQ5K; 8]) -> Self {
        let mut g = Self {
            head: ScalesK4::new(),
            qs: [0; 1280],
        };
        for (l, row) in rows.iter().enumerate() {
            g.head.pack_lane(l, row.d, row.dmin, &row.scales);
            for (e, q) in row.quants().into_iter().enumerate() {
                let (s, c, j) = (e / 32, (e % 32) / 4, e % 4);
                let at = 160 * s + 4 * l + j;
                if c < 5 {
                    g.qs[at + 32 * c] |= q;
                } else {
                    for &(_, i, to, from, n) in SPREAD_Q5K.iter().filter(|t| t.0 == c) {
                        g.qs[at + 32 * i] |= ((q >> from) & ((1 << n) - 1)) << to;
                    }
                }
            }
        }
        g
    }

    fn to_f32(&self, l: usize, out: &mut [f32]) {
        self.head.weights(l, &self.lane(l), out);
    }

    fn dot(&self, l: usize, a: &BlockQ8K) -> f32 {
        self.head.dot(l, &self.lane(l), a)
    }

    fn kernel() -> GroupDotsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx512_vnni() {
            return vnni::dots_q5k;
        }
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx2() {
            return avx2::dots_q5k;
        }
        dots_portable
    }
}

impl GroupQ6K {
    /// Lane `l`'s `q` (0..=63) and scales.
    fn lane(&self, l: usize) -> ([u8; 256], [i8; 16]) {
        let q = std::array::from_fn(|e| {
            let (s, c, j) = (e / 16, (e % 16) / 4, e % 4);
            let p = 4 * l + j;
            if c < 3 {
                self.qs[96 * s + 32 * c + p] & 0x3F
            } else {
                (0..3).fold(0, |q, i| {
                    q | ((self.qs[96 * s + 32 * i + p] >> 6) << (2 * i))
                })
            }
        });
        let sc = std::array::from_fn(|s| self.scales[16 * (s / 2) + 2 * l + s % 2]);
        (q, sc)
    }
}

impl GroupK for GroupQ6K {
    type Row = BlockQ6K;

    fn pack(rows: &[BlockQ6K; 8]) -> Self {
        let mut g = Self {
            d: [0; 8],
            scales: [0; 128],
            qs: [0; 1536],
        };
        for (l, row) in rows.iter().enumerate() {
            g.d[l] = row.d;
            for (s, &sc) in row.scales.iter().enumerate() {
                g.scales[16 * (s / 2) + 2 * l + s % 2] = sc;
            }
            for (e, q) in row.quants().into_iter().enumerate() {
                let (s, c, j) = (e / 16, (e % 16) / 4, e % 4);
                let p = 4 * l + j;
                if c < 3 {
                    g.qs[96 * s + 32 * c + p] |= q;
                } else {
                    for i in 0..3 {
                        g.qs[96 * s + 32 * i + p] |= ((q >> (2 * i)) & 3) << 6;
                    }
                }
            }
        }
        g
    }

    fn to_f32(&self, l: usize, out: &mut [f32]) {
        let (q, sc) = self.lane(l);
        let d = half::f16::from_bits(self.d[l]).to_f32();
        for (s, (o, q)) in out.chunks_mut(16).zip(q.chunks(16)).enumerate() {
            let ds = d * f32::from(sc[s]);
            for (v, &q) in o.iter_mut().zip(q) {
                *v = ds * f32::from(q as i8 - 32);
            }
        }
    }

    fn dot(&self, l: usize, a: &BlockQ8K) -> f32 {
        let (q, sc) = self.lane(l);
        let mut total = 0i32;
        for (s, &scale) in sc.iter().enumerate() {
            let sum: i32 = (16 * s..16 * s + 16)
                .map(|e| (i32::from(q[e]) - 32) * i32::from(a.qs[e]))
                .sum();
            total += i32::from(scale) * sum;
        }
        a.d * half::f16::from_bits(self.d[l]).to_f32() * total as f32
    }

    fn kernel() -> GroupDotsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx512_vnni() {
            return vnni::dots_q6k;
        }
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx2() {
            return avx2::dots_q6k;
        }
        dots_portable
    }
}

fn dots_portable<G: GroupK>(w: &[G], acts: &[&[BlockQ8K]], out: &mut [[f32; 8]], _ahead: &[u8]) {
    for (o, a) in out.iter_mut().zip(acts) {
        *o = [0.0; 8];
        for (g, q) in w.iter().zip(a.iter()) {
            for (l, ol) in o.iter_mut().enumerate() {
                *ol += g.dot(l, q);
            }
        }
    }
}

/// A matrix whose row count is a multiple of 8, as bands of interleaved super-blocks.
#[derive(Debug)]
pub(super) struct InterleavedK<G>(Vec<G>);

impl<G: GroupK> InterleavedK<G> {
    /// Repacks, band by band in place, groups whose bytes still hold the file's rows
    /// (`rows × blocks` row-major `G::Row` blocks).
    pub(super) fn repack(mut groups: Vec<G>, blocks: usize) -> Self {
        repack_bands(&mut groups, blocks, G::pack);
        Self(groups)
    }
}

impl<G: GroupK> QuantRows for InterleavedK<G> {
    fn prepare(&self, x: &[f32], m: usize, _k: usize) -> Prepared {
        Box::new(quantize_activations(x, m))
    }

    fn input_type(&self) -> std::any::TypeId {
        std::any::TypeId::of::<Vec<BlockQ8K>>()
    }

    fn dots(
        &self,
        rows: Range<usize>,
        k: usize,
        _m: usize,
        input: &Prepared,
        out: &mut OutColumns<'_>,
    ) {
        let Some(act) = input.downcast_ref::<Vec<BlockQ8K>>() else {
            return out.fill(f32::NAN);
        };
        band_dots(&self.0, k / 256, rows, act, G::kernel(), out)
    }

    fn row_to_f32(&self, row: usize, k: usize, out: &mut [f32]) {
        let nb = k / 256;
        let (g, l) = (row / 8, row % 8);
        for (group, o) in self.0[g * nb..(g + 1) * nb].iter().zip(out.chunks_mut(256)) {
            group.to_f32(l, o);
        }
    }

    /// Prompts expand to f32 for the GEMM although the 8-bit kernel is faster there
    /// (examples/kernel_bench.rs; ~10 % of a Qwen2.5-0.5B prompt): with one scale per 256
    /// activations (llama.cpp's Q8_K), an outlier in a row of `down_proj`'s input leaves
    /// the other values a few steps, and over a whole prompt's KV cache that moved a greedy
    /// token whose top-2 gap in transformers is 0.15 (the GGUF parity test). Decoding reads
    /// one row at a time and keeps the 8-bit kernel, as llama.cpp does.
    fn dense_for_prompts(&self) -> bool {
        true
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vnni;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::interleaved::avx2::{dispatch, Band};
    use super::{BlockQ8K, GroupQ4K, GroupQ5K, GroupQ6K};

    pub(super) fn dots_q4k(
        w: &[GroupQ4K],
        acts: &[&[BlockQ8K]],
        out: &mut [[f32; 8]],
        ahead: &[u8],
    ) {
        // SAFETY: `kernel()` hands this out only when the CPU has AVX2, FMA and F16C.
        unsafe { dispatch(w, acts, out, ahead) }
    }

    pub(super) fn dots_q5k(
        w: &[GroupQ5K],
        acts: &[&[BlockQ8K]],
        out: &mut [[f32; 8]],
        ahead: &[u8],
    ) {
        // SAFETY: as above.
        unsafe { dispatch(w, acts, out, ahead) }
    }

    pub(super) fn dots_q6k(
        w: &[GroupQ6K],
        acts: &[&[BlockQ8K]],
        out: &mut [[f32; 8]],
        ahead: &[u8],
    ) {
        // SAFETY: as above.
        unsafe { dispatch(w, acts, out, ahead) }
    }

    impl<G: Super> Band<BlockQ8K> for G {
        #[inline(always)]
        unsafe fn band<const R: usize>(w: &[G], acts: [&[BlockQ8K]; R]) -> [__m256; R] {
            // SAFETY: AVX2, FMA and F16C per the caller.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); R];
                for (b, g) in w.iter().enumerate() {
                    g.accumulate::<R>(std::array::from_fn(|r| &acts[r][b]), &mut acc);
                }
                acc
            }
        }
    }

    /// Four activations (bytes `at .. at + 4` of the block) in every lane.
    #[inline(always)]
    pub(in crate::quant) unsafe fn broadcast(a: &BlockQ8K, at: usize) -> __m256i {
        // SAFETY: `at + 4 ≤ 256` at every call.
        unsafe { _mm256_set1_epi32(a.qs.as_ptr().add(at).cast::<i32>().read_unaligned()) }
    }

    /// Two i16 sums (`sums[at]`, `sums[at + 1]`) in every i32 lane.
    #[inline(always)]
    unsafe fn broadcast_pair(sums: &[i16], at: usize) -> __m256i {
        assert!(at + 2 <= sums.len());
        // SAFETY: inside `sums`, checked above.
        unsafe { _mm256_set1_epi32(sums.as_ptr().add(at).cast::<i32>().read_unaligned()) }
    }

    /// An i16 vector whose lane `2l + h` is row `l`'s scale of sub-block `2k + h` →
    /// the scale of sub-block `2k + H` in both lanes of each row.
    #[inline(always)]
    unsafe fn duplicate<const H: usize>(pairs: __m256i) -> __m256i {
        // SAFETY: AVX2 per the caller.
        unsafe {
            let (a, b) = (2 * H as i8, 2 * H as i8 + 1);
            let take = _mm256_setr_epi8(
                a,
                b,
                a,
                b,
                a + 4,
                b + 4,
                a + 4,
                b + 4,
                a + 8,
                b + 8,
                a + 8,
                b + 8,
                a + 12,
                b + 12,
                a + 12,
                b + 12,
                a,
                b,
                a,
                b,
                a + 4,
                b + 4,
                a + 4,
                b + 4,
                a + 8,
                b + 8,
                a + 8,
                b + 8,
                a + 12,
                b + 12,
                a + 12,
                b + 12,
            );
            _mm256_shuffle_epi8(pairs, take)
        }
    }

    /// One super-block of eight rows added to `R` rows' accumulators.
    pub(super) trait Super {
        /// # Safety
        /// Only on CPUs with AVX2, FMA and F16C (inlined into the kernel).
        unsafe fn accumulate<const R: usize>(&self, acts: [&BlockQ8K; R], acc: &mut [__m256; R]);
    }

    /// Q4_K's and Q5_K's scales and mins of sub-block pair `k` as i16, lane `2l + h` for
    /// sub-block `2k + h` of row `l` (the layout of `GroupQ4K`).
    #[inline(always)]
    pub(in crate::quant) unsafe fn scales_k4(
        sm: &[u8; 64],
        mlo: &[u8; 32],
    ) -> ([__m256i; 4], [__m256i; 4]) {
        // SAFETY: the loads read inside `sm` and `mlo`; AVX2 per the caller.
        unsafe {
            let low4 = _mm256_set1_epi8(0x0F);
            let six = _mm256_set1_epi8(0x3F);
            let bits45 = _mm256_set1_epi8(0x30);
            let sm01 = _mm256_loadu_si256(sm.as_ptr().cast());
            let sm23 = _mm256_loadu_si256(sm.as_ptr().add(32).cast());
            let mlo = _mm256_loadu_si256(mlo.as_ptr().cast());
            // Scales: the low six bits; mins: four bits from `mlo`, two from the top of `sm`
            // (moved from bits 6, 7 to 4, 5).
            let sc01 = _mm256_and_si256(sm01, six);
            let sc23 = _mm256_and_si256(sm23, six);
            let m01 = _mm256_or_si256(
                _mm256_and_si256(mlo, low4),
                _mm256_and_si256(_mm256_srli_epi16::<2>(sm01), bits45),
            );
            let m23 = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(mlo), low4),
                _mm256_and_si256(_mm256_srli_epi16::<2>(sm23), bits45),
            );
            let lo = |v: __m256i| _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v));
            let hi = |v: __m256i| _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(v));
            (
                [lo(sc01), hi(sc01), lo(sc23), hi(sc23)],
                [lo(m01), hi(m01), lo(m23), hi(m23)],
            )
        }
    }

    /// Adds `d · a.d · main − dmin · a.d · Σ_s m_s · (Σ a over sub-block s)` to each row's
    /// accumulator (Q4_K, Q5_K).
    #[inline(always)]
    pub(in crate::quant) unsafe fn finish_k4<const R: usize>(
        d: &[u16; 8],
        dmin: &[u16; 8],
        mins: &[__m256i; 4],
        main: [__m256i; R],
        acts: [&BlockQ8K; R],
        acc: &mut [__m256; R],
    ) {
        // SAFETY: the loads read inside `d` and `dmin`; AVX2, FMA, F16C per the caller.
        unsafe {
            let d = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().cast()));
            let dmin = _mm256_cvtph_ps(_mm_loadu_si128(dmin.as_ptr().cast()));
            for r in 0..R {
                // Two sub-blocks per `madd`.
                let mut m = _mm256_setzero_si256();
                for (k, &mk) in mins.iter().enumerate() {
                    let sums = broadcast_pair(&acts[r].sums32, 2 * k);
                    m = _mm256_add_epi32(m, _mm256_madd_epi16(mk, sums));
                }
                let ad = _mm256_set1_ps(acts[r].d);
                acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, ad), _mm256_cvtepi32_ps(main[r]), acc[r]);
                acc[r] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, ad), _mm256_cvtepi32_ps(m), acc[r]);
            }
        }
    }

    impl Super for GroupQ4K {
        /// Bounds (activations `|a| ≤ 127`, `q ≤ 15`, `sc, m ≤ 63`): a `maddubs` pair is at
        /// most 2 · 15 · 127 = 3810, a sub-block's eight chunks 30480 < 32767 in an i16
        /// lane; `madd` by the scale gives at most 2 · 30480 · 63 per sub-block, 8 of them
        /// 31 M; the mins' term at most 8 · 4064 · 63. All far inside i32.
        #[inline(always)]
        unsafe fn accumulate<const R: usize>(&self, acts: [&BlockQ8K; R], acc: &mut [__m256; R]) {
            // SAFETY: the loads read inside the group's arrays; AVX2, FMA, F16C per the
            // contract.
            unsafe {
                let low4 = _mm256_set1_epi8(0x0F);
                let (sc, mins) = scales_k4(&self.head.sm, &self.head.mlo);
                let mut main = [_mm256_setzero_si256(); R];
                for (k, &sck) in sc.iter().enumerate() {
                    for h in 0..2 {
                        let s = 2 * k + h;
                        let scale = if h == 0 {
                            duplicate::<0>(sck)
                        } else {
                            duplicate::<1>(sck)
                        };
                        let mut pairs = [_mm256_setzero_si256(); R];
                        for t in 0..4 {
                            let packed =
                                _mm256_loadu_si256(self.qs.as_ptr().add(128 * s + 32 * t).cast());
                            let lo = _mm256_and_si256(packed, low4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low4);
                            for r in 0..R {
                                let at = 32 * s + 4 * t;
                                let p = _mm256_maddubs_epi16(lo, broadcast(acts[r], at));
                                pairs[r] = _mm256_add_epi16(pairs[r], p);
                                let p = _mm256_maddubs_epi16(hi, broadcast(acts[r], at + 16));
                                pairs[r] = _mm256_add_epi16(pairs[r], p);
                            }
                        }
                        for r in 0..R {
                            main[r] = _mm256_add_epi32(main[r], _mm256_madd_epi16(pairs[r], scale));
                        }
                    }
                }
                finish_k4(&self.head.d, &self.head.dmin, &mins, main, acts, acc);
            }
        }
    }

    impl Super for GroupQ5K {
        /// Bounds (`|a| ≤ 127`, `q ≤ 31`, `sc, m ≤ 63`): a `maddubs` pair is at most
        /// 2 · 31 · 127 = 7874, four chunks 31496 < 32767 in an i16 lane (so two i16 sums
        /// per sub-block); `madd` by the scale at most 2 · 31496 · 63 each, 16 of them
        /// 64 M; the mins' term as Q4_K's. All inside i32.
        #[inline(always)]
        unsafe fn accumulate<const R: usize>(&self, acts: [&BlockQ8K; R], acc: &mut [__m256; R]) {
            // SAFETY: the loads read inside the group's arrays; AVX2, FMA, F16C per the
            // contract.
            unsafe {
                let (sc, mins) = scales_k4(&self.head.sm, &self.head.mlo);
                let mut main = [_mm256_setzero_si256(); R];
                for (k, &sck) in sc.iter().enumerate() {
                    for h in 0..2 {
                        let s = 2 * k + h;
                        let scale = if h == 0 {
                            duplicate::<0>(sck)
                        } else {
                            duplicate::<1>(sck)
                        };
                        let w = self.chunks(s);
                        let mut low = [_mm256_setzero_si256(); R];
                        let mut high = [_mm256_setzero_si256(); R];
                        for t in 0..4 {
                            for r in 0..R {
                                let at = 32 * s + 4 * t;
                                let p = _mm256_maddubs_epi16(w[t], broadcast(acts[r], at));
                                low[r] = _mm256_add_epi16(low[r], p);
                                let p = _mm256_maddubs_epi16(w[t + 4], broadcast(acts[r], at + 16));
                                high[r] = _mm256_add_epi16(high[r], p);
                            }
                        }
                        for r in 0..R {
                            let both = _mm256_add_epi32(
                                _mm256_madd_epi16(low[r], scale),
                                _mm256_madd_epi16(high[r], scale),
                            );
                            main[r] = _mm256_add_epi32(main[r], both);
                        }
                    }
                }
                finish_k4(&self.head.d, &self.head.dmin, &mins, main, acts, acc);
            }
        }
    }

    impl GroupQ5K {
        /// Sub-block `s`'s eight chunks of `q` (0..=31).
        ///
        /// # Safety
        /// Only on CPUs with AVX2 (inlined into a kernel).
        #[inline(always)]
        pub(in crate::quant) unsafe fn chunks(&self, s: usize) -> [__m256i; 8] {
            // SAFETY: the loads read the sub-block's 160 bytes; AVX2 per the caller.
            unsafe {
                let at = self.qs.as_ptr().add(160 * s);
                let v: [__m256i; 5] =
                    std::array::from_fn(|i| _mm256_loadu_si256(at.add(32 * i).cast()));
                // Chunks 5–7 from the top bits (`SPREAD_Q5K`; 16-bit shifts, the masks keep
                // only bits that came from the same byte).
                let bits = |x: __m256i, mask: i8| _mm256_and_si256(x, _mm256_set1_epi8(mask));
                let w5 = _mm256_or_si256(
                    bits(_mm256_srli_epi16::<5>(v[0]), 0x07),
                    bits(_mm256_srli_epi16::<3>(v[1]), 0x18),
                );
                let w6 = _mm256_or_si256(
                    _mm256_or_si256(
                        bits(_mm256_srli_epi16::<5>(v[1]), 0x01),
                        bits(_mm256_srli_epi16::<4>(v[2]), 0x0E),
                    ),
                    bits(_mm256_srli_epi16::<1>(v[3]), 0x10),
                );
                let w7 = _mm256_or_si256(
                    bits(_mm256_srli_epi16::<6>(v[3]), 0x03),
                    bits(_mm256_srli_epi16::<3>(v[4]), 0x1C),
                );
                [
                    bits(v[0], 0x1F),
                    bits(v[1], 0x1F),
                    bits(v[2], 0x1F),
                    bits(v[3], 0x1F),
                    bits(v[4], 0x1F),
                    w5,
                    w6,
                    w7,
                ]
            }
        }
    }

    impl GroupQ6K {
        /// Sub-block `s`'s four chunks of unsigned `q` (0..=63).
        ///
        /// # Safety
        /// Only on CPUs with AVX2 (inlined into a kernel).
        #[inline(always)]
        pub(in crate::quant) unsafe fn chunks(&self, s: usize) -> [__m256i; 4] {
            // SAFETY: the loads read the sub-block's 96 bytes; AVX2 per the caller.
            unsafe {
                let six = _mm256_set1_epi8(0x3F);
                let at = self.qs.as_ptr().add(96 * s);
                let a = _mm256_loadu_si256(at.cast());
                let b = _mm256_loadu_si256(at.add(32).cast());
                let c = _mm256_loadu_si256(at.add(64).cast());
                // Chunk 3 from the top bits of the three bytes (16-bit shifts: the masks
                // keep only bits that came from the same byte).
                let w3 = _mm256_or_si256(
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<6>(a), _mm256_set1_epi8(0x03)),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(b), _mm256_set1_epi8(0x0C)),
                    ),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(c), _mm256_set1_epi8(0x30)),
                );
                [
                    _mm256_and_si256(a, six),
                    _mm256_and_si256(b, six),
                    _mm256_and_si256(c, six),
                    w3,
                ]
            }
        }

        /// Row `l`'s i8 scales of sub-blocks `2k`, `2k + 1` as i16, lane `2l + h`.
        ///
        /// # Safety
        /// Only on CPUs with AVX2 (inlined into a kernel).
        #[inline(always)]
        pub(in crate::quant) unsafe fn scale_pair(&self, k: usize) -> __m256i {
            // SAFETY: the load reads `scales[16k..16k + 16]`; AVX2 per the caller.
            unsafe {
                _mm256_cvtepi8_epi16(_mm_loadu_si128(self.scales.as_ptr().add(16 * k).cast()))
            }
        }
    }

    impl Super for GroupQ6K {
        /// The kernel multiplies the unsigned `q` (0..=63) and subtracts 32 · Σ sc · Σ a.
        /// Bounds (`|a| ≤ 127`, `|sc| ≤ 128`): a `maddubs` pair is at most 2 · 63 · 127 =
        /// 16002, two chunks 32004 < 32767 in an i16 lane; each `madd` by the scale at most
        /// 2 · 32004 · 128 = 8.2 M, 32 of them 262 M; the offset term at most
        /// 32 · 16 · 2032 · 128 = 133 M. All inside i32.
        #[inline(always)]
        unsafe fn accumulate<const R: usize>(&self, acts: [&BlockQ8K; R], acc: &mut [__m256; R]) {
            // SAFETY: the loads read inside the group's arrays; AVX2, FMA, F16C per the
            // contract.
            unsafe {
                let mut main = [_mm256_setzero_si256(); R];
                let mut offset = [_mm256_setzero_si256(); R];
                for k in 0..8 {
                    let sck = self.scale_pair(k);
                    add_q6k_offset(sck, k, acts, &mut offset);
                    for h in 0..2 {
                        let s = 2 * k + h;
                        let scale = if h == 0 {
                            duplicate::<0>(sck)
                        } else {
                            duplicate::<1>(sck)
                        };
                        let w = self.chunks(s);
                        for t in 0..2 {
                            for r in 0..R {
                                let at = 16 * s + 8 * t;
                                let p0 = _mm256_maddubs_epi16(w[2 * t], broadcast(acts[r], at));
                                let p1 =
                                    _mm256_maddubs_epi16(w[2 * t + 1], broadcast(acts[r], at + 4));
                                let p = _mm256_madd_epi16(_mm256_add_epi16(p0, p1), scale);
                                main[r] = _mm256_add_epi32(main[r], p);
                            }
                        }
                    }
                }
                finish_q6k(&self.d, main, offset, acts, acc);
            }
        }
    }

    /// Adds `Σ sc · Σ a` of sub-blocks `2k`, `2k + 1` (scales `sck` as `scale_pair`) to
    /// each row's `offset` (Q6_K's `q − 32`).
    ///
    /// # Safety
    /// Only on CPUs with AVX2 (inlined into a kernel).
    #[inline(always)]
    pub(in crate::quant) unsafe fn add_q6k_offset<const R: usize>(
        sck: __m256i,
        k: usize,
        acts: [&BlockQ8K; R],
        offset: &mut [__m256i; R],
    ) {
        // SAFETY: AVX2 per the caller.
        unsafe {
            for r in 0..R {
                let sums = broadcast_pair(&acts[r].sums16, 2 * k);
                offset[r] = _mm256_add_epi32(offset[r], _mm256_madd_epi16(sck, sums));
            }
        }
    }

    /// Adds `d · a.d · (main − 32 · offset)` to each row's accumulator (Q6_K).
    ///
    /// # Safety
    /// Only on CPUs with AVX2, FMA and F16C (inlined into a kernel).
    #[inline(always)]
    pub(in crate::quant) unsafe fn finish_q6k<const R: usize>(
        d: &[u16; 8],
        main: [__m256i; R],
        offset: [__m256i; R],
        acts: [&BlockQ8K; R],
        acc: &mut [__m256; R],
    ) {
        // SAFETY: the load reads inside `d`; AVX2, FMA and F16C per the caller.
        unsafe {
            let d = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().cast()));
            for r in 0..R {
                // Σ sc · Σ (q − 32) a = Σ sc · Σ q a − 32 Σ sc · Σ a, exactly.
                let total = _mm256_sub_epi32(main[r], _mm256_slli_epi32::<5>(offset[r]));
                let ad = _mm256_set1_ps(acts[r].d);
                acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, ad), _mm256_cvtepi32_ps(total), acc[r]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::interleaved::band_bytes;
    use crate::quant::test_random as random;
    use candle_core::quantized::k_quants::{
        BlockQ4K as CandleQ4K, BlockQ5K as CandleQ5K, BlockQ6K as CandleQ6K, GgmlType,
    };

    fn from_bytes<T>(bytes: &[u8]) -> Vec<T> {
        super::super::read_blocks(bytes.len(), |b| {
            b.copy_from_slice(bytes);
            Ok(())
        })
        .unwrap()
    }

    /// `w` quantized by candle (llama.cpp's quantizers), as GGUF bytes.
    fn quantize<T: GgmlType>(w: &[f32]) -> Vec<u8> {
        let mut blocks = vec![T::zeros(); w.len() / 256];
        T::from_float(w, &mut blocks);
        let bytes = std::mem::size_of_val(blocks.as_slice());
        // SAFETY: reading plain-data blocks as their bytes.
        #[allow(unsafe_code)]
        unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), bytes) }.to_vec()
    }

    /// Random bytes: every scale, min and high bit pattern, with f16 scales kept finite
    /// and small.
    fn raw_bytes<T>(blocks: usize, seed: u64, scale_at: &[usize]) -> Vec<u8> {
        let size = std::mem::size_of::<T>();
        let mut s = seed;
        let mut out: Vec<u8> = (0..blocks * size)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect();
        for b in 0..blocks {
            for &at in scale_at {
                let v = half::f16::from_f32(0.001 + (b % 7) as f32 * 3e-4).to_le_bytes();
                out[b * size + at..b * size + at + 2].copy_from_slice(&v);
            }
        }
        out
    }

    /// Packing keeps every row's weights (read back exactly as candle dequantizes the
    /// file's bytes); SIMD and portable kernels agree; a row's result does not depend on
    /// the rows multiplied with it.
    fn check<G: GroupK>(bytes: &[u8], rows: usize, blocks: usize, to_float: fn(&[u8], &mut [f32])) {
        let k = 256 * blocks;
        let packed = InterleavedK::<G>::repack(from_bytes(bytes), blocks);
        let row_bytes = bytes.len() / rows;
        for r in 0..rows {
            let (mut ours, mut theirs) = (vec![0f32; k], vec![0f32; k]);
            packed.row_to_f32(r, k, &mut ours);
            to_float(&bytes[r * row_bytes..(r + 1) * row_bytes], &mut theirs);
            let same = ours
                .iter()
                .zip(&theirs)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "row {r} of {rows}, {blocks} blocks");
        }
        let acts: Vec<Vec<BlockQ8K>> = (0..8)
            .map(|i| quantize_activations(&random(k, 7 + i), 1))
            .collect();
        for n in 1..=8 {
            let a: Vec<&[BlockQ8K]> = acts[..n].iter().map(|v| v.as_slice()).collect();
            for g in 0..rows / 8 {
                let band = &packed.0[g * blocks..(g + 1) * blocks];
                let (mut fast, mut slow) = (vec![[0f32; 8]; n], vec![[0f32; 8]; n]);
                G::kernel()(band, &a, &mut fast, &[]);
                dots_portable(band, &a, &mut slow, &[]);
                for (x, y) in fast.iter().flatten().zip(slow.iter().flatten()) {
                    assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{x} vs {y}");
                }
                for r in 0..n {
                    let mut alone = [[0f32; 8]];
                    G::kernel()(band, &a[r..r + 1], &mut alone, &[]);
                    assert_eq!(alone[0], fast[r], "row {r} of {n}");
                }
            }
        }
    }

    fn candle_to_float<T: GgmlType>(bytes: &[u8], out: &mut [f32]) {
        T::to_float(&from_bytes::<T>(bytes), out);
    }

    #[test]
    fn q4k_groups_pack_and_multiply() {
        for (rows, blocks) in [(8, 1), (16, 3), (24, 5), (8, 19)] {
            let w = random(rows * blocks * 256, rows as u32 + blocks as u32);
            let f: fn(&[u8], &mut [f32]) = candle_to_float::<CandleQ4K>;
            check::<GroupQ4K>(&quantize::<CandleQ4K>(&w), rows, blocks, f);
            // Raw bytes reach every 6-bit scale and min (candle's quantizer rarely does).
            check::<GroupQ4K>(
                &raw_bytes::<BlockQ4K>(rows * blocks, 3, &[0, 2]),
                rows,
                blocks,
                f,
            );
        }
    }

    #[test]
    fn q5k_groups_pack_and_multiply() {
        for (rows, blocks) in [(8, 1), (16, 3), (24, 5), (8, 19)] {
            let w = random(rows * blocks * 256, rows as u32 + blocks as u32);
            let f: fn(&[u8], &mut [f32]) = candle_to_float::<CandleQ5K>;
            check::<GroupQ5K>(&quantize::<CandleQ5K>(&w), rows, blocks, f);
            let raw = raw_bytes::<BlockQ5K>(rows * blocks, 9, &[0, 2]);
            check::<GroupQ5K>(&raw, rows, blocks, f);
        }
    }

    #[test]
    fn q6k_groups_pack_and_multiply() {
        for (rows, blocks) in [(8, 1), (16, 3), (24, 5), (8, 19)] {
            let w = random(rows * blocks * 256, rows as u32 + blocks as u32);
            let f: fn(&[u8], &mut [f32]) = candle_to_float::<CandleQ6K>;
            check::<GroupQ6K>(&quantize::<CandleQ6K>(&w), rows, blocks, f);
            check::<GroupQ6K>(
                &raw_bytes::<BlockQ6K>(rows * blocks, 5, &[208]),
                rows,
                blocks,
                f,
            );
        }
    }

    /// The AVX-512 VNNI kernels give the AVX2 kernels' bits, over every scale, min and
    /// weight pattern (raw bytes) and activations at ±127.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vnni_kernels_give_the_avx2_bits() {
        if !crate::quant::blocks32::tests::vnni_here() {
            return;
        }
        fn same<G: GroupK>(bytes: &[u8], rows: usize, blocks: usize, avx2: GroupDotsFn<G>) {
            let packed = InterleavedK::<G>::repack(from_bytes(bytes), blocks);
            let mut x = random(8 * 256 * blocks, 13);
            x[5] = 40.0;
            x[256 * blocks + 300 % (256 * blocks)] = -40.0;
            let acts = quantize_activations(&x, 8);
            let acts: Vec<&[BlockQ8K]> = acts.chunks(blocks).collect();
            for n in 1..=8 {
                for g in 0..rows / 8 {
                    let band = &packed.0[g * blocks..(g + 1) * blocks];
                    let (mut want, mut got) = (vec![[0f32; 8]; n], vec![[0f32; 8]; n]);
                    avx2(band, &acts[..n], &mut want, &[]);
                    G::kernel()(
                        band,
                        &acts[..n],
                        &mut got,
                        band_bytes(band, band.len(), 0, 1),
                    );
                    assert_eq!(got, want, "{n} rows, band {g}");
                }
            }
        }
        let (rows, blocks) = (16, 3);
        same::<GroupQ4K>(
            &raw_bytes::<BlockQ4K>(rows * blocks, 3, &[0, 2]),
            rows,
            blocks,
            avx2::dots_q4k,
        );
        same::<GroupQ5K>(
            &raw_bytes::<BlockQ5K>(rows * blocks, 9, &[0, 2]),
            rows,
            blocks,
            avx2::dots_q5k,
        );
        same::<GroupQ6K>(
            &raw_bytes::<BlockQ6K>(rows * blocks, 5, &[208]),
            rows,
            blocks,
            avx2::dots_q6k,
        );
    }

    #[test]
    fn activation_sums_match_their_quants() {
        let a = BlockQ8K::quantize(&random(256, 11));
        for i in 0..16 {
            let s: i32 = a.qs[16 * i..16 * i + 16]
                .iter()
                .map(|&q| i32::from(q))
                .sum();
            assert_eq!(i32::from(a.sums16[i]), s);
        }
        for i in 0..8 {
            assert_eq!(a.sums32[i], a.sums16[2 * i] + a.sums16[2 * i + 1]);
        }
        assert!(a.qs.iter().any(|&q| q.abs() == 127));
    }
}
