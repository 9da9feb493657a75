//! Q5_0 and Q8_0 matrices repacked at load with eight rows interleaved, the layout that
//! lets one AVX2 register hold four weights of each of eight rows.
//!
//! Row by row (`blocks32.rs`), every 32-weight block ends in a horizontal reduction, a
//! scale converted from f16 and a float multiply-add for one output: about 22 instructions
//! per block, which on these CPUs caps decode near 10 GB/s of weights while memory gives
//! 30. Here the eight lanes of an i32 register are eight output rows: a block of eight
//! rows costs 8 × (expand weights, broadcast four activations, `maddubs`, add), then one
//! conversion of eight f16 scales and one multiply-add for all eight rows.
//!
//! A group holds block `b` of rows `8g .. 8g + 8`. Chunk `c` (0..8) of a block is its
//! weights `4c .. 4c + 4`; byte `4l + j` of a chunk's register is weight `4c + j` of row
//! `8g + l`. Groups are stored row band by row band: group `(g, b)` at `g · blocks + b`,
//! so a band takes exactly the bytes its eight rows took in the file and is repacked in
//! place.

use std::ops::Range;

use rayon::prelude::*;

use super::blocks32::{quantize_activations, Block32, BlockQ4_0, BlockQ5_0, BlockQ8, BlockQ8_0};
use super::{OutColumns, Prepared, QuantRows};

/// Eight rows' Q5_0 block: their f16 scales, the low four bits of chunk `k` in the low
/// nibbles of `qs[32k..32k + 32]` and of chunk `k + 4` in the high nibbles, and the fifth
/// bit of chunk `c` as bit `c` of `qh` (byte `4l + j` as in the chunks).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct GroupQ5_0 {
    d: [u16; 8],
    qs: [u8; 128],
    qh: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<GroupQ5_0>() == 8 * std::mem::size_of::<BlockQ5_0>());

/// Eight rows' Q4_0 block: their f16 scales and the four-bit weights laid out as
/// `GroupQ5_0::qs` (chunk `k` in the low nibbles of `qs[32k..32k + 32]`, `k + 4` in the
/// high ones).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct GroupQ4_0 {
    d: [u16; 8],
    qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<GroupQ4_0>() == 8 * std::mem::size_of::<BlockQ4_0>());

/// Eight rows' Q8_0 block: their f16 scales and chunk `c` in `qs[32c..32c + 32]`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct GroupQ8_0 {
    d: [u16; 8],
    qs: [i8; 256],
}
const _: () = assert!(std::mem::size_of::<GroupQ8_0>() == 8 * std::mem::size_of::<BlockQ8_0>());

/// One band of groups against up to 4 activation rows: `out[r][l]` is row `8g + l` times
/// `acts[r]`.
pub(super) type GroupDotsFn<G> = BandDotsFn<G, BlockQ8>;

/// A kernel for one band of groups `G` against up to 8 rows of activation blocks `A`,
/// asking for the bytes `ahead` (a later band's weights) as it goes.
pub(super) type BandDotsFn<G, A> = fn(&[G], &[&[A]], &mut [[f32; 8]], &[u8]);

/// An interleaved layout of a 32-weight block type.
pub(super) trait Group: PlainBytes + Send + Sync + std::fmt::Debug + 'static {
    /// The row-by-row block this groups eight of.
    type Row: Block32;
    /// Block `b` of eight rows.
    fn pack(rows: &[Self::Row; 8]) -> Self;
    /// The 32 integer weights of lane `l`, as `Block32::values` gives them.
    fn values(&self, l: usize) -> [i8; 32];
    /// The f16 scale bits of lane `l`.
    fn scale_bits(&self, l: usize) -> u16;
    /// The fastest kernel this CPU runs.
    fn kernel() -> GroupDotsFn<Self>;
    /// The weights ready for `maddubs` (see `Expanded`), where a kernel for them exists on
    /// this CPU.
    fn expand(&self) -> Option<Expanded> {
        None
    }
    /// That kernel.
    fn expanded_kernel() -> Option<GroupDotsFn<Expanded>> {
        None
    }
    /// `expand` of a run of groups with SIMD, appending to `out`, where this CPU has it.
    fn expand_kernel() -> Option<ExpandFn<Self>> {
        None
    }
    /// The lane kernel (16 input rows a pass) and the expansion it takes the bands in,
    /// where this CPU has them.
    fn lanes_kernel() -> Option<(ExpandFn<Self>, LanesFn)> {
        None
    }
}

/// Appends the `expand` of every group to `out`.
pub(super) type ExpandFn<G> = fn(&[G], &mut Vec<Expanded>);

/// `G::expand` of every group, appended to `out`: the SIMD expansion where the CPU has it.
fn expand_all<G: Group>(groups: &[G], out: &mut Vec<Expanded>) {
    match G::expand_kernel() {
        Some(expand) => expand(groups, out),
        None => out.extend(groups.iter().filter_map(G::expand)),
    }
}

/// A group's weights expanded to the bytes the kernel multiplies (chunk `c` in `q[c]`) and
/// its scales. A prompt's many input rows reuse each group's weights: expanding a task's
/// bands once, instead of once per four input rows, leaves the kernel only the products.
/// The integers and float steps are those of the packed kernel, so results are identical.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct Expanded {
    q: [[u8; 32]; 8],
    d: [u16; 8],
}

/// Input rows in a pass of the lane kernels (`lanes16.rs`).
const LANES: usize = 16;

/// Block `b` of up to 16 input rows for the lane kernels: chunk `c`'s four activations of
/// row `r` at `q[c][4r..4r + 4]`, the start of the unsigned products (−16 × the sum of the
/// row's 32 activations) and the scales; rows past the input's are zero.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Lanes16 {
    q: [[i8; 64]; 8],
    neg_sum16: [i32; LANES],
    d: [f32; LANES],
}

/// `acts` (`m` rows of `nb` blocks) as passes of 16 rows: pass `p`'s block `b` at
/// `p · nb + b`.
fn lay_out(acts: &[BlockQ8], m: usize, nb: usize) -> Vec<Lanes16> {
    let zero = Lanes16 {
        q: [[0; 64]; 8],
        neg_sum16: [0; LANES],
        d: [0.0; LANES],
    };
    let mut out = vec![zero; m.div_ceil(LANES) * nb];
    for (i, row) in acts.chunks(nb.max(1)).take(m).enumerate() {
        let (p, r) = (i / LANES, i % LANES);
        for (l, a) in out[p * nb..(p + 1) * nb].iter_mut().zip(row) {
            for (c, q) in l.q.iter_mut().enumerate() {
                q[4 * r..4 * r + 4].copy_from_slice(&a.quants()[4 * c..4 * c + 4]);
            }
            l.neg_sum16[r] = -a.sum16();
            l.d[r] = a.scale();
        }
    }
    out
}

/// A lane kernel: one expanded band times one pass of 16 input rows, `out[j][r]` for band
/// row `j` and pass row `r`, asking for the bytes `ahead` (weights a later band will
/// read) a share per group as it goes.
pub(super) type LanesFn = fn(&[Expanded], &[Lanes16], &mut [[f32; LANES]; 8], &[u8]);

/// The activations the interleaved kernels take: 8-bit blocks row after row, and, for a
/// batch the lane kernels take, the same as passes of 16 rows.
pub(super) struct Activations {
    rows: Vec<BlockQ8>,
    lanes: Vec<Lanes16>,
}

/// Input rows from which the lane kernels take a product, where the CPU has them: with
/// fewer, most of their lanes would be idle and the packed kernels do better.
const LANES_MIN_ROWS: usize = 9;

/// Bands expanded at a time, at most: 64 rows of 896 weights stay near the core with the
/// inputs.
const EXPAND_BANDS: usize = 8;
/// Bytes of expanded bands at a time, at most (a band of 4864 weights, the MLP's down
/// projection, is 43 KB: one at a time).
const EXPAND_BYTES: usize = 72 << 10;
/// Bands (of `nb` groups) expanded at a time: `EXPAND_BYTES` of them, 1 to `EXPAND_BANDS`.
fn expanded_at_once(nb: usize) -> usize {
    (EXPAND_BYTES / (nb * std::mem::size_of::<Expanded>()).max(1)).clamp(1, EXPAND_BANDS)
}

/// Bytes of packed bands that meet every input row before the next ones, at most.
const TILE_BYTES: usize = 64 << 10;

/// The low four bits of chunk `c`'s byte `p` (= `4l + j`) in a Q4_0 or Q5_0 group's `qs`.
fn nibble(qs: &[u8; 128], c: usize, p: usize) -> u8 {
    (qs[32 * (c % 4) + p] >> (4 * (c / 4))) & 0x0F
}

/// Row `l`'s bytes into a group's chunk registers: the layouts keep each four-byte run of
/// a row, so run `k` lands at `32k + 4l`.
fn place_runs<T: Copy>(dst: &mut [T], l: usize, row: &[T]) {
    for (k, run) in row.chunks_exact(4).enumerate() {
        dst[32 * k + 4 * l..32 * k + 4 * l + 4].copy_from_slice(run);
    }
}

impl Group for GroupQ5_0 {
    type Row = BlockQ5_0;

    /// Straight from the row's bytes: chunk `k < 4`'s low bits are the low nibbles of
    /// the row's `qs[4k..4k + 4]` and chunk `k + 4`'s their high nibbles, so the row's four
    /// bytes land as they are; byte `j` of the fifth bits gathers bits `j, j + 4, ..` of
    /// the row's `qh`.
    fn pack(rows: &[BlockQ5_0; 8]) -> Self {
        let mut g = Self {
            d: [0; 8],
            qs: [0; 128],
            qh: [0; 32],
        };
        for (l, row) in rows.iter().enumerate() {
            g.d[l] = row.d;
            place_runs(&mut g.qs, l, &row.qs);
            let qh = u32::from_le_bytes(row.qh);
            for j in 0..4 {
                g.qh[4 * l + j] =
                    (0..8).fold(0u8, |b, c| b | ((((qh >> (4 * c + j)) & 1) as u8) << c));
            }
        }
        g
    }

    fn values(&self, l: usize) -> [i8; 32] {
        std::array::from_fn(|e| {
            let (c, p) = (e / 4, 4 * l + e % 4);
            let fifth = (self.qh[p] >> c) & 1;
            (nibble(&self.qs, c, p) | (fifth << 4)) as i8 - 16
        })
    }

    fn scale_bits(&self, l: usize) -> u16 {
        self.d[l]
    }

    fn kernel() -> GroupDotsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx512_vnni() {
            return vnni::dots_q5_0;
        }
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx2() {
            return avx2::dots_q5_0;
        }
        dots_portable
    }

    /// Unsigned `q` (0..=31), as the packed kernel builds it.
    fn expand(&self) -> Option<Expanded> {
        Some(Expanded {
            q: std::array::from_fn(|c| {
                std::array::from_fn(|p| nibble(&self.qs, c, p) | (((self.qh[p] >> c) & 1) << 4))
            }),
            d: self.d,
        })
    }

    fn expanded_kernel() -> Option<GroupDotsFn<Expanded>> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx2() {
            return Some(avx2::dots_expanded_q5_0);
        }
        None
    }

    fn expand_kernel() -> Option<ExpandFn<Self>> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx2() {
            return Some(avx2::expand_q5_0);
        }
        None
    }

    fn lanes_kernel() -> Option<(ExpandFn<Self>, LanesFn)> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx512_vnni() {
            return Some((avx2::expand_q5_0, lanes16::band::<0>));
        }
        None
    }
}

impl Group for GroupQ4_0 {
    type Row = BlockQ4_0;

    /// The row's bytes as they are (see `GroupQ5_0::pack`).
    fn pack(rows: &[BlockQ4_0; 8]) -> Self {
        let mut g = Self {
            d: [0; 8],
            qs: [0; 128],
        };
        for (l, row) in rows.iter().enumerate() {
            g.d[l] = row.d;
            place_runs(&mut g.qs, l, &row.qs);
        }
        g
    }

    fn values(&self, l: usize) -> [i8; 32] {
        std::array::from_fn(|e| {
            let (c, p) = (e / 4, 4 * l + e % 4);
            nibble(&self.qs, c, p) as i8 - 8
        })
    }

    fn scale_bits(&self, l: usize) -> u16 {
        self.d[l]
    }

    fn kernel() -> GroupDotsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx512_vnni() {
            return vnni::dots_q4_0;
        }
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx2() {
            return avx2::dots_q4_0;
        }
        dots_portable
    }

    /// `q + 8` (8..=23): the Q5_0 kernel's `q − 16` then gives `q − 8`.
    fn expand(&self) -> Option<Expanded> {
        Some(Expanded {
            q: std::array::from_fn(|c| std::array::from_fn(|p| nibble(&self.qs, c, p) + 8)),
            d: self.d,
        })
    }

    fn expanded_kernel() -> Option<GroupDotsFn<Expanded>> {
        GroupQ5_0::expanded_kernel()
    }

    fn expand_kernel() -> Option<ExpandFn<Self>> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx2() {
            return Some(avx2::expand_q4_0);
        }
        None
    }

    fn lanes_kernel() -> Option<(ExpandFn<Self>, LanesFn)> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx512_vnni() {
            return Some((avx2::expand_q4_0, lanes16::band::<0>));
        }
        None
    }
}

impl Group for GroupQ8_0 {
    type Row = BlockQ8_0;

    fn pack(rows: &[BlockQ8_0; 8]) -> Self {
        let mut g = Self {
            d: [0; 8],
            qs: [0; 256],
        };
        for (l, row) in rows.iter().enumerate() {
            g.d[l] = row.d;
            place_runs(&mut g.qs, l, &row.qs);
        }
        g
    }

    fn values(&self, l: usize) -> [i8; 32] {
        std::array::from_fn(|e| self.qs[32 * (e / 4) + 4 * l + e % 4])
    }

    fn scale_bits(&self, l: usize) -> u16 {
        self.d[l]
    }

    fn kernel() -> GroupDotsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx512_vnni() {
            return vnni::dots_q8_0;
        }
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx2() {
            return avx2::dots_q8_0;
        }
        dots_portable
    }

    fn lanes_kernel() -> Option<(ExpandFn<Self>, LanesFn)> {
        #[cfg(target_arch = "x86_64")]
        if super::blocks32::has_avx512_vnni() {
            return Some((avx2::expand_q8_0, lanes16::band::<3>));
        }
        None
    }
}

/// A matrix whose row count is a multiple of 8, as bands of interleaved groups.
#[derive(Debug)]
pub(super) struct Interleaved<G>(Vec<G>);

impl<G: Group> Interleaved<G> {
    /// Repacks, band by band in place, groups whose bytes still hold the file's rows
    /// (`rows × blocks` row-major `G::Row` blocks).
    pub(super) fn repack(mut groups: Vec<G>, blocks: usize) -> Self {
        repack_bands(&mut groups, blocks, G::pack);
        Self(groups)
    }
}

/// Repacks in place, band by band in parallel, `groups` whose bytes still hold the file's
/// rows (`8 · bands` rows of `blocks` row-major `R` blocks): group `b` of a band is `pack`
/// of its eight rows' block `b`. For every interleaved layout (`interleaved_k.rs` too).
pub(super) fn repack_bands<G: Copy + Send, R: Copy + Send>(
    groups: &mut [G],
    blocks: usize,
    pack: impl Fn(&[R; 8]) -> G + Sync,
) {
    const {
        assert!(std::mem::size_of::<G>() == 8 * std::mem::size_of::<R>());
        assert!(std::mem::align_of::<G>() >= std::mem::align_of::<R>());
    }
    if blocks == 0 {
        // Rows of no blocks: nothing to repack (and no chunks of zero groups).
        return;
    }
    super::install(|| {
        groups.par_chunks_mut(blocks).for_each_init(
            || Vec::with_capacity(8 * blocks),
            |band: &mut Vec<R>, chunk| {
                band.clear();
                // SAFETY: `chunk` is `blocks` groups, the bytes of `8 · blocks` row blocks
                // (sizes and alignments asserted above); both are `#[repr(C)]` records of
                // integers for which any bytes are valid. The rows are copied out before
                // `chunk` is written.
                #[allow(unsafe_code)]
                band.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(chunk.as_ptr().cast::<R>(), 8 * blocks)
                });
                for (b, g) in chunk.iter_mut().enumerate() {
                    *g = pack(&std::array::from_fn(|l| band[l * blocks + b]));
                }
            },
        )
    });
}

impl<G: Group> QuantRows for Interleaved<G> {
    fn prepare(&self, x: &[f32], m: usize, k: usize) -> Prepared {
        let rows = quantize_activations(x, m);
        let lanes = if m >= LANES_MIN_ROWS && G::lanes_kernel().is_some() {
            lay_out(&rows, m, k / 32)
        } else {
            Vec::new()
        };
        Box::new(Activations { rows, lanes })
    }

    fn input_type(&self) -> std::any::TypeId {
        std::any::TypeId::of::<Activations>()
    }

    fn dots(
        &self,
        rows: Range<usize>,
        k: usize,
        m: usize,
        input: &Prepared,
        out: &mut OutColumns<'_>,
    ) {
        let Some(input) = input.downcast_ref::<Activations>() else {
            return out.fill(f32::NAN);
        };
        let nb = k / 32;
        if let Some(kernel) = G::lanes_kernel().filter(|_| !input.lanes.is_empty()) {
            return lanes_dots(&self.0, nb, rows, &input.lanes, m, kernel, out);
        }
        let act = &input.rows;
        // More rows than one pass (a prompt, on CPUs without the lane kernels): each task
        // expands its bands once for all of them.
        let Some(dots) = G::expanded_kernel().filter(|_| m > rows_per_pass()) else {
            return band_dots(&self.0, nb, rows, act, G::kernel(), out);
        };
        let inputs: Vec<&[BlockQ8]> = act.chunks(nb).collect();
        let bands = rows.start / 8..rows.end.div_ceil(8);
        let at_once = expanded_at_once(nb);
        let mut buf: Vec<Expanded> = Vec::with_capacity(at_once * nb);
        for first in bands.clone().step_by(at_once) {
            let some = first..(first + at_once).min(bands.end);
            buf.clear();
            expand_all(&self.0[some.start * nb..some.end * nb], &mut buf);
            let buf = &buf;
            multiply_bands(
                some.clone(),
                &rows,
                &inputs,
                out,
                |g, acts, res, ahead| {
                    let at = (g - some.start) * nb;
                    dots(&buf[at..at + nb], acts, res, ahead)
                },
                |g| band_bytes(&self.0, nb, g + at_once, bands.end),
            );
        }
    }

    fn row_to_f32(&self, row: usize, k: usize, out: &mut [f32]) {
        let nb = k / 32;
        let (g, l) = (row / 8, row % 8);
        for (group, o) in self.0[g * nb..(g + 1) * nb].iter().zip(out.chunks_mut(32)) {
            let d = half::f16::from_bits(group.scale_bits(l)).to_f32();
            for (v, q) in o.iter_mut().zip(group.values(l)) {
                *v = d * f32::from(q);
            }
        }
    }

    /// Four input rows against eight weight rows at a time reuse each expanded weight four
    /// times: on a 512-row prompt 1.2–1.35 × the GFLOP/s of expanding to f32 for candle's
    /// GEMM (examples/kernel_bench.rs).
    fn dense_for_prompts(&self) -> bool {
        false
    }
}

/// Input rows a kernel call takes, at most: eight where the kernels have AVX-512's 32
/// registers for their accumulators, else four.
fn rows_per_pass() -> usize {
    #[cfg(target_arch = "x86_64")]
    if super::blocks32::has_avx512_vnni() {
        return 8;
    }
    4
}

/// Bands `bands` of the matrix times every input row, into `out` (the columns of `rows`):
/// up to `rows_per_pass()` input rows per kernel call, each group's
/// weights expanded once for them; the input rows outside, so that with a prompt's many
/// rows the bands stay in cache while the inputs stream past.
fn multiply_bands<'a, A>(
    bands: Range<usize>,
    rows: &Range<usize>,
    inputs: &[&[A]],
    out: &mut OutColumns<'_>,
    band_dots: impl Fn(usize, &[&[A]], &mut [[f32; 8]], &[u8]),
    ahead_of: impl Fn(usize) -> &'a [u8],
) {
    let per_pass = rows_per_pass();
    let mut res = [[0f32; 8]; 8];
    // With one pass over the bands the kernel streams them, and the hardware's prefetcher
    // does better alone.
    let ahead = inputs.len() > per_pass;
    for (c, group) in inputs.chunks(per_pass).enumerate() {
        for g in bands.clone() {
            let next: &[u8] = if ahead && c == 0 { ahead_of(g) } else { &[] };
            // The lanes of this band inside `rows` (all eight unless `rows` is unaligned).
            let lanes = rows.start.max(8 * g) - 8 * g..rows.end.min(8 * g + 8) - 8 * g;
            band_dots(g, group, &mut res[..group.len()], next);
            for (r, vals) in res[..group.len()].iter().enumerate() {
                let at = 8 * g + lanes.start - rows.start;
                out.set_band(c * per_pass + r, at, *vals, lanes.clone());
            }
        }
    }
}

/// Matrix rows `rows` (bands of `nb` groups) times every input row (`nb` blocks each),
/// into `out`, with a kernel that takes one band and up to eight input rows.
pub(super) fn band_dots<G: PlainBytes, A>(
    groups: &[G],
    nb: usize,
    rows: Range<usize>,
    act: &[A],
    dots: BandDotsFn<G, A>,
    out: &mut OutColumns<'_>,
) {
    let inputs: Vec<&[A]> = act.chunks(nb).collect();
    let bands = rows.start / 8..rows.end.div_ceil(8);
    // A few bands at a time meet every input row while they are in cache: with the inputs
    // outside a task's whole range, a 150k-row output head came from memory once per four
    // input rows (four times a 16-sequence serving step).
    let at_once = (TILE_BYTES / (nb * std::mem::size_of::<G>()).max(1)).max(1);
    for first in bands.clone().step_by(at_once) {
        let tile = first..(first + at_once).min(bands.end);
        multiply_bands(
            tile,
            &rows,
            &inputs,
            out,
            |g, acts, res, ahead| dots(&groups[g * nb..(g + 1) * nb], acts, res, ahead),
            |g| band_bytes(groups, nb, g + at_once, bands.end),
        );
    }
}

/// Matrix rows `rows` (bands of `nb` groups) times every input row, input row major, by a
/// lane kernel: the bands expanded a few at a time (`expand`), each meeting every pass of
/// 16 input rows (`lanes`, `lay_out`'s) while it is in cache.
fn lanes_dots<G: PlainBytes>(
    groups: &[G],
    nb: usize,
    rows: Range<usize>,
    lanes: &[Lanes16],
    m: usize,
    (expand, kernel): (ExpandFn<G>, LanesFn),
    out: &mut OutColumns<'_>,
) {
    let bands = rows.start / 8..rows.end.div_ceil(8);
    let passes = m.div_ceil(LANES);
    let at_once = expanded_at_once(nb);
    let mut buf: Vec<Expanded> = Vec::with_capacity(at_once * nb);
    let mut res = [[0f32; LANES]; 8];
    for first in bands.clone().step_by(at_once) {
        let some = first..(first + at_once).min(bands.end);
        buf.clear();
        expand(&groups[some.start * nb..some.end * nb], &mut buf);
        for p in 0..passes {
            let acts = &lanes[p * nb..(p + 1) * nb];
            let n = (m - p * LANES).min(LANES);
            for g in some.clone() {
                // The next tile's bands come from memory while this one's products run, a
                // few cache lines per group (16 input rows make the products, not memory,
                // the bound; asking for a whole band at once stalls the products).
                let ahead = if p == 0 {
                    band_bytes(groups, nb, g + at_once, bands.end)
                } else {
                    &[]
                };
                let at = (g - some.start) * nb;
                kernel(&buf[at..at + nb], acts, &mut res, ahead);
                // The lanes of this band inside `rows` (all eight unless `rows` is
                // unaligned).
                let lanes = rows.start.max(8 * g) - 8 * g..rows.end.min(8 * g + 8) - 8 * g;
                let at = 8 * g + lanes.start - rows.start;
                for (r, i) in (p * LANES..p * LANES + n).enumerate() {
                    out.set_band(i, at, std::array::from_fn(|j| res[j][r]), lanes.clone());
                }
            }
        }
    }
}

/// Group types whose values are plain bytes: `#[repr(C)]` records of integers and
/// halves with no padding (their sizes are asserted to be eight rows' blocks).
///
/// # Safety
/// Only for such types: `band_bytes` views them as bytes.
#[allow(unsafe_code)]
pub(super) unsafe trait PlainBytes: Copy {}

// SAFETY: each is `#[repr(C)]` integers with no padding (sizes asserted at their definitions).
#[allow(unsafe_code)]
unsafe impl PlainBytes for GroupQ5_0 {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl PlainBytes for GroupQ4_0 {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl PlainBytes for GroupQ8_0 {}

/// Band `g`'s bytes (of `nb` groups each), to ask for ahead of their use; none at or past
/// band `end` (another task's).
pub(super) fn band_bytes<G: PlainBytes>(groups: &[G], nb: usize, g: usize, end: usize) -> &[u8] {
    let band = groups
        .get(g * nb..(g + 1) * nb)
        .filter(|_| g < end)
        .unwrap_or(&[]);
    // SAFETY: `PlainBytes` types are plain bytes with no padding.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts(band.as_ptr().cast::<u8>(), std::mem::size_of_val(band))
    }
}

/// Asks for `bytes` ahead of their use (a later band's weights), all at once: the kernels
/// that do not spread the requests over their own loop (see `lanes16.rs`).
pub(super) fn prefetch_bytes(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for at in (0..bytes.len()).step_by(64) {
        // SAFETY: a prefetch only hints the cache and `at` lies inside `bytes`; SSE is part
        // of x86_64.
        #[allow(unsafe_code)]
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            _mm_prefetch::<_MM_HINT_T1>(bytes.as_ptr().add(at).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

fn dots_portable<G: Group>(w: &[G], acts: &[&[BlockQ8]], out: &mut [[f32; 8]], _ahead: &[u8]) {
    for (o, a) in out.iter_mut().zip(acts) {
        *o = [0.0; 8];
        for (g, q) in w.iter().zip(a.iter()) {
            for (l, ol) in o.iter_mut().enumerate() {
                let s: i32 = g
                    .values(l)
                    .iter()
                    .zip(q.values())
                    .map(|(&x, y)| i32::from(x) * i32::from(y))
                    .sum();
                let d = half::f16::from_bits(g.scale_bits(l)).to_f32();
                *ol += d * q.scale() * s as f32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vnni;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod lanes16;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ8, Expanded, GroupQ4_0, GroupQ5_0, GroupQ8_0};

    pub(super) fn dots_q5_0(
        w: &[GroupQ5_0],
        acts: &[&[BlockQ8]],
        out: &mut [[f32; 8]],
        ahead: &[u8],
    ) {
        // SAFETY: `kernel()` hands this out only when the CPU has AVX2, FMA and F16C.
        unsafe { dispatch(w, acts, out, ahead) }
    }

    pub(super) fn dots_q8_0(
        w: &[GroupQ8_0],
        acts: &[&[BlockQ8]],
        out: &mut [[f32; 8]],
        ahead: &[u8],
    ) {
        // SAFETY: as above.
        unsafe { dispatch(w, acts, out, ahead) }
    }

    pub(super) fn dots_q4_0(
        w: &[GroupQ4_0],
        acts: &[&[BlockQ8]],
        out: &mut [[f32; 8]],
        ahead: &[u8],
    ) {
        // SAFETY: as above.
        unsafe { dispatch(w, acts, out, ahead) }
    }

    pub(super) fn dots_expanded_q5_0(
        w: &[Expanded],
        acts: &[&[BlockQ8]],
        out: &mut [[f32; 8]],
        ahead: &[u8],
    ) {
        // SAFETY: as above.
        unsafe { dispatch(w, acts, out, ahead) }
    }

    /// `GroupQ5_0::expand` of every group, with the packed kernel's instructions.
    pub(super) fn expand_q5_0(groups: &[GroupQ5_0], out: &mut Vec<Expanded>) {
        // SAFETY: `expand_kernel` hands this out only when the CPU has AVX2.
        unsafe { expand_q5_0_avx2(groups, out) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn expand_q5_0_avx2(groups: &[GroupQ5_0], out: &mut Vec<Expanded>) {
        // SAFETY: AVX2 per the caller (closures inherit the target features).
        unsafe {
            expand(groups, out, |g| {
                let fifth = g.fifth_bits();
                let c = |c: usize| _mm256_or_si256(nibbles(&g.qs, c), fifth[c]);
                (g.d, [c(0), c(1), c(2), c(3), c(4), c(5), c(6), c(7)])
            })
        }
    }

    /// `GroupQ4_0::expand` of every group (q + 8, as its kernel builds them).
    pub(super) fn expand_q4_0(groups: &[GroupQ4_0], out: &mut Vec<Expanded>) {
        // SAFETY: as above.
        unsafe { expand_q4_0_avx2(groups, out) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn expand_q4_0_avx2(groups: &[GroupQ4_0], out: &mut Vec<Expanded>) {
        // SAFETY: AVX2 per the caller.
        unsafe {
            expand(groups, out, |g| {
                let eight = _mm256_set1_epi8(8);
                let c = |c: usize| _mm256_add_epi8(nibbles(&g.qs, c), eight);
                (g.d, [c(0), c(1), c(2), c(3), c(4), c(5), c(6), c(7)])
            })
        }
    }

    /// Q8_0 groups as unsigned bytes (w + 128, `w xor 0x80`) for the lane kernel, whose
    /// start for them is −128 Σ a.
    pub(super) fn expand_q8_0(groups: &[GroupQ8_0], out: &mut Vec<Expanded>) {
        // SAFETY: as above.
        unsafe { expand_q8_0_avx2(groups, out) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn expand_q8_0_avx2(groups: &[GroupQ8_0], out: &mut Vec<Expanded>) {
        // SAFETY: AVX2 per the caller; the loads read inside `qs`.
        unsafe {
            expand(groups, out, |g| {
                let flip = _mm256_set1_epi8(i8::MIN);
                let c = |c: usize| {
                    let w = _mm256_loadu_si256(g.qs.as_ptr().add(32 * c).cast());
                    _mm256_xor_si256(w, flip)
                };
                (g.d, [c(0), c(1), c(2), c(3), c(4), c(5), c(6), c(7)])
            })
        }
    }

    /// Appends `chunks(g)`'s scales and chunk registers for every group.
    #[inline(always)]
    unsafe fn expand<G>(
        groups: &[G],
        out: &mut Vec<Expanded>,
        chunks: impl Fn(&G) -> ([u16; 8], [__m256i; 8]),
    ) {
        out.reserve(groups.len());
        for g in groups {
            let (d, regs) = chunks(g);
            let mut e = Expanded { q: [[0; 32]; 8], d };
            for (q, r) in e.q.iter_mut().zip(regs) {
                // SAFETY: the store writes the 32 bytes of `q`; AVX2 per the caller.
                unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), r) };
            }
            out.push(e);
        }
    }

    /// A band of groups against up to four activation rows, for every interleaved type
    /// (`interleaved_k.rs` too): lane `l` of `result[r]` is row `l` times row `r`.
    pub(in crate::quant) trait Band<A>: Sized {
        /// # Safety
        /// Only on CPUs with AVX2, FMA and F16C (inlined into `dispatch`).
        unsafe fn band<const R: usize>(w: &[Self], acts: [&[A]; R]) -> [__m256; R];
    }

    /// Each input row goes through the same instructions in the same order however many
    /// rows come together, so a token's logits do not depend on the batch it is verified
    /// in (speculative decoding keeps greedy output identical).
    ///
    /// `ahead` is asked for all at once before the band's products.
    ///
    /// # Safety
    /// Only on CPUs with AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::quant) unsafe fn dispatch<A, G: Band<A>>(
        w: &[G],
        acts: &[&[A]],
        out: &mut [[f32; 8]],
        ahead: &[u8],
    ) {
        super::prefetch_bytes(ahead);
        // SAFETY: AVX2, FMA and F16C per the caller.
        unsafe { by_rows::<_, false>(&Bands(w), acts, out) }
    }

    /// A band kernel with the band bound: what `by_rows` calls for 1 to 8 input rows.
    pub(in crate::quant) trait Kernel<A> {
        /// # Safety
        /// Only on CPUs with the kernel's features (inlined into its `dispatch`).
        unsafe fn band<const R: usize>(&self, acts: [&[A]; R]) -> [__m256; R];
    }

    /// The AVX2 kernel of groups `G`.
    struct Bands<'a, G>(&'a [G]);

    impl<A, G: Band<A>> Kernel<A> for Bands<'_, G> {
        #[inline(always)]
        unsafe fn band<const R: usize>(&self, acts: [&[A]; R]) -> [__m256; R] {
            // SAFETY: as the caller's.
            unsafe { G::band(self.0, acts) }
        }
    }

    /// `kernel` for every input row into `out`: two to four rows in one pass over the
    /// band (to eight if `WIDE`), else one at a time.
    ///
    /// # Safety
    /// Only on CPUs with AVX and the kernel's features (inlined into a `dispatch`).
    #[inline(always)]
    pub(in crate::quant) unsafe fn by_rows<A, const WIDE: bool>(
        kernel: &impl Kernel<A>,
        acts: &[&[A]],
        out: &mut [[f32; 8]],
    ) {
        // SAFETY: per the caller.
        unsafe {
            if WIDE {
                match acts {
                    [a, b, c, d, e] => return store(&kernel.band([*a, *b, *c, *d, *e]), out),
                    [a, b, c, d, e, f] => {
                        return store(&kernel.band([*a, *b, *c, *d, *e, *f]), out);
                    }
                    [a, b, c, d, e, f, g] => {
                        return store(&kernel.band([*a, *b, *c, *d, *e, *f, *g]), out);
                    }
                    [a, b, c, d, e, f, g, h] => {
                        return store(&kernel.band([*a, *b, *c, *d, *e, *f, *g, *h]), out);
                    }
                    _ => {}
                }
            }
            match acts {
                [a, b] => store(&kernel.band([*a, *b]), out),
                [a, b, c] => store(&kernel.band([*a, *b, *c]), out),
                [a, b, c, d] => store(&kernel.band([*a, *b, *c, *d]), out),
                _ => {
                    for (o, a) in out.iter_mut().zip(acts) {
                        store(&kernel.band([*a]), std::slice::from_mut(o));
                    }
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn store<const R: usize>(acc: &[__m256; R], out: &mut [[f32; 8]]) {
        for (o, a) in out.iter_mut().zip(acc) {
            // SAFETY: `o` is 8 floats; AVX per the caller.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *a) };
        }
    }

    impl<G: Chunks> Band<BlockQ8> for G {
        #[inline(always)]
        unsafe fn band<const R: usize>(w: &[G], acts: [&[BlockQ8]; R]) -> [__m256; R] {
            // SAFETY: as the caller's.
            unsafe { band(w, acts) }
        }
    }

    /// A band of groups against `R` activation rows: lane `l` of `result[r]` is row `l`
    /// times row `r`.
    #[inline(always)]
    unsafe fn band<G: Chunks, const R: usize>(w: &[G], acts: [&[BlockQ8]; R]) -> [__m256; R] {
        // SAFETY: as the caller's.
        unsafe { band_with(w, acts, |g, a| g.dots(a)) }
    }

    /// `band` with the integer dot products of a group and `R` activation blocks given by
    /// `dots` (one i32 lane per row): the float steps every 32-weight kernel shares, so that
    /// kernels whose integers agree give the same bits.
    ///
    /// # Safety
    /// Only on CPUs with AVX2, FMA and F16C (inlined into a kernel).
    #[inline(always)]
    pub(super) unsafe fn band_with<G: Chunks, const R: usize>(
        w: &[G],
        acts: [&[BlockQ8]; R],
        dots: impl Fn(&G, [&BlockQ8; R]) -> [__m256i; R],
    ) -> [__m256; R] {
        // SAFETY: AVX2, FMA and F16C per the caller; the loads read inside the blocks.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); R];
            for (b, g) in w.iter().enumerate() {
                let d = _mm256_cvtph_ps(_mm_loadu_si128(g.scales().as_ptr().cast()));
                let sums = dots(g, std::array::from_fn(|r| &acts[r][b]));
                for r in 0..R {
                    let a = &acts[r][b];
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.scale()));
                    acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums[r]), acc[r]);
                }
            }
            acc
        }
    }

    /// Four activations (chunk `c` of the block) in every lane.
    #[inline(always)]
    pub(super) unsafe fn broadcast(a: &BlockQ8, c: usize) -> __m256i {
        let q = a.quants();
        // SAFETY: bytes `4c .. 4c + 4` of the 32 quants.
        unsafe { _mm256_set1_epi32(q.as_ptr().add(4 * c).cast::<i32>().read_unaligned()) }
    }

    /// The integer dot products of one group with `R` activation blocks, a row per lane.
    pub(super) trait Chunks {
        fn scales(&self) -> &[u16; 8];
        /// # Safety
        /// Only on CPUs with AVX2 (inlined into the AVX2 kernel).
        unsafe fn dots<const R: usize>(&self, acts: [&BlockQ8; R]) -> [__m256i; R];
    }

    impl Chunks for GroupQ5_0 {
        fn scales(&self) -> &[u16; 8] {
            &self.d
        }

        #[inline(always)]
        unsafe fn dots<const R: usize>(&self, acts: [&BlockQ8; R]) -> [__m256i; R] {
            // SAFETY: loads inside `qs`; AVX2 per the contract.
            unsafe {
                let fifth = self.fifth_bits();
                unsigned_dots(acts, |c| _mm256_or_si256(nibbles(&self.qs, c), fifth[c]))
            }
        }
    }

    impl GroupQ5_0 {
        /// Chunk `c`'s fifth bits as 16s, to OR onto its low nibbles: q = low nibble | fifth
        /// bit · 16, for the unsigned-weight `maddubs`.
        #[inline(always)]
        pub(super) unsafe fn fifth_bits(&self) -> [__m256i; 8] {
            // SAFETY: the load reads the 32 bytes of `qh`; AVX2 per the caller.
            unsafe {
                let bit4 = _mm256_set1_epi8(0x10);
                let qh = _mm256_loadu_si256(self.qh.as_ptr().cast());
                [
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bit4),
                    _mm256_and_si256(_mm256_slli_epi16::<3>(qh), bit4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), bit4),
                    _mm256_and_si256(_mm256_slli_epi16::<1>(qh), bit4),
                    _mm256_and_si256(qh, bit4),
                    _mm256_and_si256(_mm256_srli_epi16::<1>(qh), bit4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), bit4),
                    _mm256_and_si256(_mm256_srli_epi16::<3>(qh), bit4),
                ]
            }
        }
    }

    /// Chunk `c`'s low four bits from a Q4_0 or Q5_0 group's `qs` (the SIMD `nibble`).
    #[inline(always)]
    pub(super) unsafe fn nibbles(qs: &[u8; 128], c: usize) -> __m256i {
        // SAFETY: the load reads `qs[32 (c % 4) ..][..32]`, inside the 128 bytes; AVX2 per
        // the caller.
        unsafe {
            let low4 = _mm256_set1_epi8(0x0F);
            let packed = _mm256_loadu_si256(qs.as_ptr().add(32 * (c % 4)).cast());
            if c < 4 {
                _mm256_and_si256(packed, low4)
            } else {
                _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low4)
            }
        }
    }

    impl Chunks for GroupQ4_0 {
        fn scales(&self) -> &[u16; 8] {
            &self.d
        }

        #[inline(always)]
        unsafe fn dots<const R: usize>(&self, acts: [&BlockQ8; R]) -> [__m256i; R] {
            // SAFETY: loads inside `qs`; AVX2 per the contract.
            unsafe {
                let eight = _mm256_set1_epi8(8);
                // q + 8 (8..=23, pairs at most 2 · 23 · 127), so that the shared kernel's
                // − 16 Σ a leaves Σ (q − 8)·a.
                unsigned_dots(acts, |c| _mm256_add_epi8(nibbles(&self.qs, c), eight))
            }
        }
    }

    impl Chunks for Expanded {
        fn scales(&self) -> &[u16; 8] {
            &self.d
        }

        #[inline(always)]
        unsafe fn dots<const R: usize>(&self, acts: [&BlockQ8; R]) -> [__m256i; R] {
            // SAFETY: loads inside `q`; AVX2 per the contract.
            unsafe { unsigned_dots(acts, |c| _mm256_load_si256(self.q[c].as_ptr().cast())) }
        }
    }

    /// Σ (q − 16)·a per lane for `R` activation blocks, chunk `c`'s unsigned weights `q`
    /// (0..=31) given by `weights(c)`.
    #[inline(always)]
    unsafe fn unsigned_dots<const R: usize>(
        acts: [&BlockQ8; R],
        weights: impl Fn(usize) -> __m256i,
    ) -> [__m256i; R] {
        // SAFETY: AVX2 per the caller.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut out = [_mm256_setzero_si256(); R];
            for half in 0..2 {
                // Four chunks' pair sums (each at most 2 · 31 · 127) fit an i16 lane.
                let mut pairs = [_mm256_setzero_si256(); R];
                for k in 0..4 {
                    let c = 4 * half + k;
                    let wq = weights(c);
                    for r in 0..R {
                        let p = _mm256_maddubs_epi16(wq, broadcast(acts[r], c));
                        pairs[r] = _mm256_add_epi16(pairs[r], p);
                    }
                }
                for r in 0..R {
                    out[r] = _mm256_add_epi32(out[r], _mm256_madd_epi16(pairs[r], ones));
                }
            }
            // Σ q·a − 16 Σ a = Σ (q − 16)·a.
            for r in 0..R {
                out[r] = _mm256_sub_epi32(out[r], _mm256_set1_epi32(acts[r].sum16()));
            }
            out
        }
    }

    impl Chunks for GroupQ8_0 {
        fn scales(&self) -> &[u16; 8] {
            &self.d
        }

        #[inline(always)]
        unsafe fn dots<const R: usize>(&self, acts: [&BlockQ8; R]) -> [__m256i; R] {
            // SAFETY: loads inside `qs`; AVX2 per the contract.
            unsafe {
                let ones = _mm256_set1_epi16(1);
                let mut out = [_mm256_setzero_si256(); R];
                for c in 0..8 {
                    let wq = _mm256_loadu_si256(self.qs.as_ptr().add(32 * c).cast());
                    let wabs = _mm256_sign_epi8(wq, wq);
                    for r in 0..R {
                        // |w| · (a with w's sign): a pair is at most 2 · 127 · 127.
                        let a = _mm256_sign_epi8(broadcast(acts[r], c), wq);
                        let p = _mm256_maddubs_epi16(wabs, a);
                        out[r] = _mm256_add_epi32(out[r], _mm256_madd_epi16(p, ones));
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blocks32::tests::quantize_q5_0;
    use crate::quant::test_random as random;

    fn from_bytes<T>(bytes: &[u8]) -> Vec<T> {
        super::super::read_blocks(bytes.len(), |b| {
            b.copy_from_slice(bytes);
            Ok(())
        })
        .unwrap()
    }

    fn q8_0_bytes(rows: usize, blocks: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..rows * blocks {
            out.extend(half::f16::from_f32(0.01 + (i % 13) as f32 * 1e-3).to_le_bytes());
            out.extend((0..32).map(|j| ((i * 31 + j * 17) % 255) as u8));
        }
        out
    }

    /// Packing keeps every row's weights and scale; SIMD and portable kernels agree.
    fn check<G: Group>(bytes: &[u8], rows: usize, blocks: usize) {
        let plain: Vec<G::Row> = from_bytes(bytes);
        let packed = Interleaved::<G>::repack(from_bytes(bytes), blocks);
        for r in 0..rows {
            for b in 0..blocks {
                let g = &packed.0[(r / 8) * blocks + b];
                let want = &plain[r * blocks + b];
                assert_eq!(g.values(r % 8), want.values(), "row {r} block {b}");
                assert_eq!(g.scale_bits(r % 8), want.scale_bits());
            }
        }
        let acts: Vec<Vec<BlockQ8>> = (0..8)
            .map(|i| quantize_activations(&random(32 * blocks, 7 + i), 1))
            .collect();
        for n in 1..=8 {
            let a: Vec<&[BlockQ8]> = acts[..n].iter().map(|v| v.as_slice()).collect();
            for g in 0..rows / 8 {
                let band = &packed.0[g * blocks..(g + 1) * blocks];
                let (mut fast, mut slow) = (vec![[0f32; 8]; n], vec![[0f32; 8]; n]);
                G::kernel()(band, &a, &mut fast, &[]);
                dots_portable(band, &a, &mut slow, &[]);
                for (x, y) in fast.iter().flatten().zip(slow.iter().flatten()) {
                    assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{x} vs {y}");
                }
                // A row's result does not depend on the rows it came with.
                let mut alone = [[0f32; 8]];
                G::kernel()(band, &a[n - 1..], &mut alone, &[]);
                assert_eq!(alone[0], fast[n - 1]);
                // Expanded once for a prompt's rows: the very same results.
                if let Some(expanded) = G::expanded_kernel() {
                    let x: Vec<Expanded> = band.iter().filter_map(G::expand).collect();
                    let mut simd = Vec::new();
                    expand_all(band, &mut simd);
                    assert!(x.iter().zip(&simd).all(|(a, b)| a.q == b.q && a.d == b.d));
                    assert_eq!(simd.len(), x.len());
                    let mut same = vec![[0f32; 8]; n];
                    expanded(&x, &a, &mut same, &[]);
                    assert_eq!(same, fast);
                }
            }
        }
    }

    /// Q4_0 blocks of every nibble pattern: an f16 scale, then 16 bytes.
    fn q4_0_bytes(rows: usize, blocks: usize) -> Vec<u8> {
        (0..rows * blocks)
            .flat_map(|i| {
                let d = half::f16::from_f32(0.01 + (i % 5) as f32 * 1e-3).to_le_bytes();
                d.into_iter()
                    .chain((0..16).map(move |j| ((i * 37 + j * 29) % 256) as u8))
            })
            .collect()
    }

    /// The AVX-512 VNNI kernels give the AVX2 kernels' bits, with every weight byte (Q8_0's
    /// −128 too, every Q4_0 nibble) and activations at ±127.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vnni_kernels_give_the_avx2_bits() {
        if !crate::quant::blocks32::tests::vnni_here() {
            return;
        }
        let (rows, blocks) = (24, 7);
        let mut x = random(8 * 32 * blocks, 11);
        x[3] = 50.0;
        x[32 * blocks + 8] = -50.0;
        let acts = quantize_activations(&x, 8);
        let acts: Vec<&[BlockQ8]> = acts.chunks(blocks).collect();
        let q8 = Interleaved::<GroupQ8_0>::repack(from_bytes(&q8_0_bytes(rows, blocks)), blocks);
        let q5 = Interleaved::<GroupQ5_0>::repack(
            from_bytes(&quantize_q5_0(&random(rows * blocks * 32, 3))),
            blocks,
        );
        let q4 = Interleaved::<GroupQ4_0>::repack(from_bytes(&q4_0_bytes(rows, blocks)), blocks);
        // Up to eight rows a pass (the AVX2 kernels take more one at a time).
        for n in 1..=8 {
            for g in 0..rows / 8 {
                let (mut want, mut got) = (vec![[0f32; 8]; n], vec![[0f32; 8]; n]);
                let band = &q8.0[g * blocks..(g + 1) * blocks];
                avx2::dots_q8_0(band, &acts[..n], &mut want, &[]);
                vnni::dots_q8_0(band, &acts[..n], &mut got, &[]);
                assert_eq!(got, want, "Q8_0, {n} rows, band {g}");
                let band = &q5.0[g * blocks..(g + 1) * blocks];
                avx2::dots_q5_0(band, &acts[..n], &mut want, &[]);
                vnni::dots_q5_0(band, &acts[..n], &mut got, &[]);
                assert_eq!(got, want, "Q5_0, {n} rows, band {g}");
                let q4_band = &q4.0[g * blocks..(g + 1) * blocks];
                avx2::dots_q4_0(q4_band, &acts[..n], &mut want, &[]);
                vnni::dots_q4_0(q4_band, &acts[..n], &mut got, &[]);
                assert_eq!(got, want, "Q4_0, {n} rows, band {g}");
            }
        }
    }

    /// The lane kernels give each input row the packed VNNI kernels' bits, for every pass
    /// size, with every weight byte and activations at ±127.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn lanes16_give_the_packed_bits() {
        if !crate::quant::blocks32::tests::vnni_here() {
            return;
        }
        let (rows, blocks) = (24, 7);
        let mut x = random(LANES * 32 * blocks, 13);
        x[5] = 60.0;
        x[32 * blocks + 9] = -60.0;
        let q8 = Interleaved::<GroupQ8_0>::repack(from_bytes(&q8_0_bytes(rows, blocks)), blocks);
        let q5 = Interleaved::<GroupQ5_0>::repack(
            from_bytes(&quantize_q5_0(&random(rows * blocks * 32, 4))),
            blocks,
        );
        let q4 = Interleaved::<GroupQ4_0>::repack(from_bytes(&q4_0_bytes(rows, blocks)), blocks);
        for n in 1..=LANES {
            let acts = quantize_activations(&x[..n * 32 * blocks], n);
            let lanes = lay_out(&acts, n, blocks);
            let acts: Vec<&[BlockQ8]> = acts.chunks(blocks).collect();
            for g in 0..rows / 8 {
                let band = g * blocks..(g + 1) * blocks;
                let mut expanded = Vec::new();
                expand_all(&q5.0[band.clone()], &mut expanded);
                type Case<'a> = (&'a str, Vec<[f32; 8]>, [[f32; LANES]; 8]);
                let cases: [Case; 4] = [
                    (
                        "Q8_0",
                        packed(&q8.0[band.clone()], &acts, GroupQ8_0::kernel()),
                        by_lanes(&q8.0[band.clone()], &lanes),
                    ),
                    (
                        "Q5_0",
                        packed(&q5.0[band.clone()], &acts, GroupQ5_0::kernel()),
                        by_lanes(&q5.0[band.clone()], &lanes),
                    ),
                    (
                        "Q4_0",
                        packed(&q4.0[band.clone()], &acts, GroupQ4_0::kernel()),
                        by_lanes(&q4.0[band.clone()], &lanes),
                    ),
                    (
                        "expanded Q5_0",
                        packed(&expanded, &acts, avx2::dots_expanded_q5_0),
                        by_lanes(&q5.0[band.clone()], &lanes),
                    ),
                ];
                for (name, want, got) in cases {
                    for (r, w) in want.iter().enumerate() {
                        let got_r: [f32; 8] = std::array::from_fn(|j| got[j][r]);
                        assert_eq!(
                            got_r.map(f32::to_bits),
                            w.map(f32::to_bits),
                            "{name}, {n} rows, band {g}, row {r}"
                        );
                    }
                }
            }
        }
    }

    /// A band times one pass of input rows by its type's lane kernel.
    #[cfg(target_arch = "x86_64")]
    fn by_lanes<G: Group>(band: &[G], lanes: &[Lanes16]) -> [[f32; LANES]; 8] {
        let (expand, kernel) = G::lanes_kernel().expect("a VNNI CPU has the lane kernels");
        let mut expanded = Vec::new();
        expand(band, &mut expanded);
        let mut out = [[0.0; LANES]; 8];
        kernel(&expanded, lanes, &mut out, &[]);
        out
    }

    /// A band times each activation row alone by a packed kernel.
    #[cfg(target_arch = "x86_64")]
    fn packed<G>(band: &[G], acts: &[&[BlockQ8]], kernel: GroupDotsFn<G>) -> Vec<[f32; 8]> {
        acts.iter()
            .map(|a| {
                let mut o = [[0f32; 8]];
                kernel(band, std::slice::from_ref(a), &mut o, &[]);
                o[0]
            })
            .collect()
    }

    #[test]
    fn q5_0_groups_pack_and_multiply() {
        for (rows, blocks) in [(8, 1), (16, 3), (24, 28)] {
            check::<GroupQ5_0>(&quantize_q5_0(&random(rows * blocks * 32, 5)), rows, blocks);
        }
    }

    #[test]
    fn q4_0_groups_pack_and_multiply() {
        use candle_core::quantized::k_quants::{BlockQ4_0 as CandleQ4_0, GgmlType};
        for (rows, blocks) in [(8, 1), (16, 3), (24, 28)] {
            let w = random(rows * blocks * 32, 9);
            let mut q = vec![CandleQ4_0::zeros(); w.len() / 32];
            CandleQ4_0::from_float(&w, &mut q);
            // SAFETY: reading plain-data blocks as their bytes.
            #[allow(unsafe_code)]
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    q.as_ptr().cast::<u8>(),
                    std::mem::size_of_val(q.as_slice()),
                )
            };
            check::<GroupQ4_0>(bytes, rows, blocks);
            // Our reading of the row layout is candle's.
            let mut want = vec![0f32; w.len()];
            CandleQ4_0::to_float(&q, &mut want);
            let ours: Vec<BlockQ4_0> = from_bytes(bytes);
            for (b, chunk) in ours.iter().zip(want.chunks(32)) {
                let d = half::f16::from_bits(b.scale_bits()).to_f32();
                let got: Vec<f32> = b.values().iter().map(|&v| d * f32::from(v)).collect();
                assert_eq!(got, chunk);
            }
        }
    }

    #[test]
    fn q8_0_groups_pack_and_multiply() {
        for (rows, blocks) in [(8, 1), (16, 3), (24, 28)] {
            check::<GroupQ8_0>(&q8_0_bytes(rows, blocks), rows, blocks);
        }
    }
}
