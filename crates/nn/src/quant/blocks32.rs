//! llama.cpp's 32-weight block types times 8-bit activations, with AVX2 kernels chosen at
//! run time and portable ones: Q5_0 (candle has no SIMD kernel for it, and most tensors of
//! llama.cpp's small-model files use it) and Q8_0 (the output heads; candle's kernel
//! converts each scale through a function call).
//!
//! A Q5_0 block holds 32 weights: an f16 scale `d`, the low 4 bits of each weight in 16
//! bytes (weight `j < 16` in the low nibble of byte `j`, weight `j + 16` in its high
//! nibble) and the fifth bits in a u32 (bit `j` for weight `j`); weight = d · (q − 16).
//! A Q8_0 block holds an f16 scale and 32 signed bytes; weight = d · q.

use std::ops::Range;

use super::{OutColumns, Prepared, QuantRows};

#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// f16 bits.
    pub(super) d: u16,
    pub(super) qh: [u8; 4],
    pub(super) qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// f16 bits.
    pub(super) d: u16,
    pub(super) qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// A Q4_0 block: an f16 scale and 32 four-bit weights (weight `j < 16` in the low nibble
/// of byte `j`, `j + 16` in its high nibble); weight = d · (q − 8). Rows of it are
/// multiplied by candle's kernel or, eight rows interleaved, by `interleaved.rs`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// f16 bits.
    pub(super) d: u16,
    pub(super) qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// 32 activations as 8-bit integers times a scale, with 16 × the sums of each run of four
/// (what Q5_0's kernel subtracts to turn its unsigned weights `q` into `q − 16`).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8 {
    qs: [i8; 32],
    sums16: [i32; 8],
    /// 16 × the sum of all 32.
    sum16: i32,
    d: f32,
}

/// `y.round().clamp(-127.0, 127.0) as i8` for |y| ≤ 127.5 (an activation over its block's
/// scale), without `round`'s library call, so that loops of it vectorize: y + 0.49999997 ·
/// sign(y) truncates to round(y), half away from zero (0.5 itself still reaches 1:
/// 0.99999997 rounds to 1.0 in f32). NaN gives 0, as the cast of a NaN does.
#[inline(always)]
pub(super) fn round_to_i8(y: f32) -> i8 {
    ((y + 0.499_999_97f32.copysign(y)) as i32).clamp(-127, 127) as i8
}

/// `x` rounded to the nearest multiples of `max|x| / 127` into `qs`; returns that scale.
/// With AVX2, 32 values a step (this crate is built for baseline x86-64, where the loop
/// below runs four lanes wide and checks every conversion for NaN: ~4 % of a 16-sequence
/// serving step); the same bits, and the loop below for blocks with a NaN or a scale too
/// small to invert.
pub(super) fn quantize_to_i8(x: &[f32], qs: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && x.len() == qs.len() && x.len().is_multiple_of(32) {
        // SAFETY: AVX2 checked above; the lengths as the function requires.
        #[allow(unsafe_code)]
        if let Some(d) = unsafe { avx2_quantize_to_i8(x, qs) } {
            return d;
        }
    }
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in qs.iter_mut().zip(x) {
        *q = round_to_i8(v * inv);
    }
    d
}

/// `quantize_to_i8` for `x.len() == qs.len()`, a multiple of 32; `None` (nothing written
/// that counts) for a block holding a NaN or an infinity or whose scale's inverse is not
/// finite.
///
/// # Safety
/// Only on CPUs with AVX2.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2")]
unsafe fn avx2_quantize_to_i8(x: &[f32], qs: &mut [i8]) -> Option<f32> {
    use std::arch::x86_64::*;
    // SAFETY: the loads read `x[i..i + 8]` and the stores write `qs[i..i + 32]` inside the
    // equal lengths (multiples of 32); AVX2 per the caller.
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        let (mut amax, mut nan) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..x.len()).step_by(8) {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            amax = _mm256_max_ps(_mm256_andnot_ps(sign, v), amax);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        }
        if _mm256_movemask_ps(nan) != 0 {
            return None;
        }
        // The largest |x| (max is exact in any order without NaNs).
        let m = _mm_max_ps(
            _mm256_castps256_ps128(amax),
            _mm256_extractf128_ps::<1>(amax),
        );
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
        let d = _mm_cvtss_f32(m) / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        // An infinite |x| makes every y NaN (y = x · 0), which `round_to_i8` takes to 0.
        if !inv.is_finite() || !d.is_finite() {
            return None;
        }
        let (vinv, half) = (_mm256_set1_ps(inv), _mm256_set1_ps(0.499_999_97));
        let (lo, hi) = (_mm256_set1_epi32(-127), _mm256_set1_epi32(127));
        // `round_to_i8`: y + 0.49999997 · sign(y), truncated (|y| ≤ 127.5 here), clamped.
        let round = |v: __m256| {
            let y = _mm256_mul_ps(v, vinv);
            let t = _mm256_add_ps(y, _mm256_or_ps(_mm256_and_ps(y, sign), half));
            _mm256_min_epi32(_mm256_max_epi32(_mm256_cvttps_epi32(t), lo), hi)
        };
        // The packs interleave 128-bit halves; this puts the 32 bytes back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for i in (0..x.len()).step_by(32) {
            let q: [__m256i; 4] =
                std::array::from_fn(|j| round(_mm256_loadu_ps(x.as_ptr().add(i + 8 * j))));
            let ab = _mm256_packs_epi32(q[0], q[1]);
            let cd = _mm256_packs_epi32(q[2], q[3]);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
            _mm256_storeu_si256(qs.as_mut_ptr().add(i).cast(), bytes);
        }
        Some(d)
    }
}

impl BlockQ8 {
    /// Rounds 32 values to the nearest multiple of `max|x| / 127`.
    fn quantize(x: &[f32]) -> Self {
        let mut qs = [0i8; 32];
        let d = quantize_to_i8(x, &mut qs);
        let sums16 = std::array::from_fn(|l| {
            16 * qs[4 * l..4 * l + 4]
                .iter()
                .map(|&q| i32::from(q))
                .sum::<i32>()
        });
        let sum16 = sums16.iter().sum();
        Self {
            qs,
            sums16,
            sum16,
            d,
        }
    }

    pub(super) fn quants(&self) -> &[i8; 32] {
        &self.qs
    }

    pub(super) fn values(&self) -> [i8; 32] {
        self.qs
    }

    pub(super) fn scale(&self) -> f32 {
        self.d
    }

    pub(super) fn sum16(&self) -> i32 {
        self.sum16
    }
}

/// `x (m, k)` in 32-value blocks of 8-bit activations, row after row.
pub(super) fn quantize_activations(x: &[f32], m: usize) -> Vec<BlockQ8> {
    super::quantize_blocks(x, m, 32, BlockQ8::quantize)
}

/// One weight row against up to 4 activation rows.
pub(super) type DotsFn<B> = fn(&[B], &[&[BlockQ8]], &mut [f32]);

/// What the portable kernel and the row expansion need of a block type.
pub(super) trait Block32: Copy + Send + Sync + std::fmt::Debug {
    /// The 32 integer weights.
    fn values(&self) -> [i8; 32];
    /// The scale.
    fn scale(&self) -> f32 {
        half::f16::from_bits(self.scale_bits()).to_f32()
    }
    /// The scale's f16 bits.
    fn scale_bits(&self) -> u16;
    /// The fastest kernel this CPU runs for the type: one row of weights against up to
    /// four rows of activations (`out[r]` for `acts[r]`); the portable one unless a type
    /// has SIMD ones.
    fn kernel() -> DotsFn<Self> {
        dots_portable
    }
}

impl Block32 for BlockQ4_0 {
    /// The 32 integer weights, `q − 8` in `-8..=7`.
    fn values(&self) -> [i8; 32] {
        std::array::from_fn(|e| ((self.qs[e % 16] >> (4 * (e / 16))) & 0x0F) as i8 - 8)
    }

    fn scale_bits(&self) -> u16 {
        self.d
    }
}

impl Block32 for BlockQ8_0 {
    fn values(&self) -> [i8; 32] {
        self.qs
    }

    fn scale_bits(&self) -> u16 {
        self.d
    }

    fn kernel() -> DotsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            return avx2::dots_q8_0;
        }
        dots_portable
    }
}

impl Block32 for BlockQ5_0 {
    /// The 32 integer weights, `q − 16` in `-16..=15`.
    fn values(&self) -> [i8; 32] {
        let qh = u32::from_le_bytes(self.qh);
        let mut out = [0i8; 32];
        for j in 0..16 {
            let lo = self.qs[j] & 0x0F;
            let hi = self.qs[j] >> 4;
            let b0 = ((qh >> j) & 1) as u8;
            let b1 = ((qh >> (j + 16)) & 1) as u8;
            out[j] = (lo | (b0 << 4)) as i8 - 16;
            out[j + 16] = (hi | (b1 << 4)) as i8 - 16;
        }
        out
    }

    fn scale_bits(&self) -> u16 {
        self.d
    }

    fn kernel() -> DotsFn<Self> {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            return avx2::dots_q5_0;
        }
        dots_portable
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// Whether the CPU has AVX-512 VNNI (with AVX2, FMA and F16C) for the interleaved kernels'
/// `vpdpbusd` variants.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512_vnni() -> bool {
    has_avx2()
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// Rows of a 32-weight block type.
#[derive(Debug)]
pub(super) struct Rows32<B>(pub(super) Vec<B>);

impl<B: Block32> QuantRows for Rows32<B> {
    fn prepare(&self, x: &[f32], m: usize, _k: usize) -> Prepared {
        Box::new(quantize_activations(x, m))
    }

    fn input_type(&self) -> std::any::TypeId {
        std::any::TypeId::of::<Vec<BlockQ8>>()
    }

    fn dots(
        &self,
        rows: Range<usize>,
        k: usize,
        _m: usize,
        input: &Prepared,
        out: &mut OutColumns<'_>,
    ) {
        let nb = k / 32;
        let Some(act) = input.downcast_ref::<Vec<BlockQ8>>() else {
            return out.fill(f32::NAN);
        };
        let dots = B::kernel();
        let inputs: Vec<&[BlockQ8]> = act.chunks(nb).collect();
        let mut four = [0f32; 4];
        for (jj, j) in rows.enumerate() {
            let w = &self.0[j * nb..(j + 1) * nb];
            // Up to four input rows per pass: each weight block is expanded once for them.
            for (c, group) in inputs.chunks(4).enumerate() {
                dots(w, group, &mut four[..group.len()]);
                for (r, v) in four[..group.len()].iter().enumerate() {
                    out.set(c * 4 + r, jj, std::slice::from_ref(v));
                }
            }
        }
    }

    fn row_to_f32(&self, row: usize, k: usize, out: &mut [f32]) {
        let nb = k / 32;
        for (b, o) in self.0[row * nb..(row + 1) * nb]
            .iter()
            .zip(out.chunks_mut(32))
        {
            let d = b.scale();
            for (v, q) in o.iter_mut().zip(b.values()) {
                *v = d * f32::from(q);
            }
        }
    }
}

fn dots_portable<B: Block32>(w: &[B], acts: &[&[BlockQ8]], out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(acts) {
        *o = dot_portable(w, a);
    }
}

fn dot_portable<B: Block32>(w: &[B], a: &[BlockQ8]) -> f32 {
    w.iter()
        .zip(a)
        .map(|(b, q)| {
            let s: i32 = b
                .values()
                .iter()
                .zip(&q.qs)
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum();
            b.scale() * q.d * s as f32
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ5_0, BlockQ8, BlockQ8_0};

    pub(super) fn dots_q5_0(w: &[BlockQ5_0], acts: &[&[BlockQ8]], out: &mut [f32]) {
        // SAFETY: `kernel()` hands this out only when the CPU has AVX2, FMA and F16C.
        unsafe { dots_avx2(w, acts, out) }
    }

    pub(super) fn dots_q8_0(w: &[BlockQ8_0], acts: &[&[BlockQ8]], out: &mut [f32]) {
        // SAFETY: as above.
        unsafe { dots_avx2(w, acts, out) }
    }

    /// Every input row is summed in the same order however many rows come together, so a
    /// token's logits do not depend on the batch it is verified in (speculative decoding
    /// keeps greedy output identical).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dots_avx2<B: Weights>(w: &[B], acts: &[&[BlockQ8]], out: &mut [f32]) {
        // SAFETY: AVX2, FMA and F16C per the caller.
        unsafe {
            match acts {
                [a, b] => out[..2].copy_from_slice(&dot_rows(w, [*a, *b])),
                [a, b, c] => out[..3].copy_from_slice(&dot_rows(w, [*a, *b, *c])),
                [a, b, c, d] => out[..4].copy_from_slice(&dot_rows(w, [*a, *b, *c, *d])),
                _ => {
                    for (o, a) in out.iter_mut().zip(acts) {
                        *o = dot_rows(w, [*a])[0];
                    }
                }
            }
        }
    }

    /// One weight row against `R` activation rows: each block's weights are expanded once.
    #[inline(always)]
    unsafe fn dot_rows<B: Weights, const R: usize>(w: &[B], acts: [&[BlockQ8]; R]) -> [f32; R] {
        // SAFETY: AVX2, FMA and F16C per the caller; the loads read whole blocks.
        unsafe {
            // Even and odd blocks in two accumulators per row: independent chains keep the
            // FMA units busy when there is one row.
            let mut acc = [[_mm256_setzero_ps(); R]; 2];
            let ones = _mm256_set1_epi16(1);
            for (bi, b) in w.iter().enumerate() {
                let (wq, d) = b.weights();
                let wabs = _mm256_sign_epi8(wq, wq);
                let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(d))));
                let acc = &mut acc[bi % 2];
                for r in 0..R {
                    let q = &acts[r][bi];
                    let aq = _mm256_loadu_si256(q.qs.as_ptr().cast());
                    let pairs = if B::OFFSET_16 {
                        // Unsigned weights `q` (0..=31) times signed activations, pairs
                        // summed to i16 (at most 2 · 31 · 127).
                        _mm256_maddubs_epi16(wq, aq)
                    } else {
                        // |w| · (a with w's sign): unsigned × signed products, pairs summed
                        // to i16 (|w|, |a| ≤ 127, so a pair fits: activations are never -128).
                        _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(aq, wq))
                    };
                    let mut quads = _mm256_madd_epi16(pairs, ones);
                    if B::OFFSET_16 {
                        // Σ q·a − 16 Σ a = Σ (q − 16)·a, exactly, lane by lane.
                        quads =
                            _mm256_sub_epi32(quads, _mm256_loadu_si256(q.sums16.as_ptr().cast()));
                    }
                    let sums = _mm256_cvtepi32_ps(quads);
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * q.d), sums, acc[r]);
                }
            }
            std::array::from_fn(|r| hsum(_mm256_add_ps(acc[0][r], acc[1][r])))
        }
    }

    /// The sum of the 8 lanes.
    #[inline(always)]
    unsafe fn hsum(acc: __m256) -> f32 {
        // SAFETY: AVX per the caller.
        unsafe {
            let quad = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
        }
    }

    /// A block's 32 weights as signed bytes in a register, and its f16 scale bits.
    trait Weights {
        /// `weights` gives `q` with weight = `q − 16` (Q5_0) instead of the weight itself.
        const OFFSET_16: bool;
        /// # Safety
        /// Only on CPUs with AVX2 (inlined into the AVX2 kernel).
        unsafe fn weights(&self) -> (__m256i, u16);
    }

    impl Weights for BlockQ8_0 {
        const OFFSET_16: bool = false;
        #[inline(always)]
        unsafe fn weights(&self) -> (__m256i, u16) {
            // SAFETY: reads the 32 bytes of `qs`; AVX2 per the contract.
            (
                unsafe { _mm256_loadu_si256(self.qs.as_ptr().cast()) },
                self.d,
            )
        }
    }

    impl Weights for BlockQ5_0 {
        const OFFSET_16: bool = true;
        #[inline(always)]
        unsafe fn weights(&self) -> (__m256i, u16) {
            // SAFETY: reads the 16 bytes of `qs` and the 4 of `qh`; AVX2 per the contract.
            unsafe {
                let low4 = _mm_set1_epi8(0x0F);
                let packed = _mm_loadu_si128(self.qs.as_ptr().cast());
                let lo = _mm_and_si128(packed, low4);
                let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
                let nibbles = _mm256_set_m128i(hi, lo);
                // q = nibble + 16 · fifth bit (the kernel subtracts the 16).
                let bits = _mm256_set1_epi32(i32::from_le_bytes(self.qh));
                let set = bit_bytes(bits);
                let q = _mm256_or_si256(nibbles, _mm256_and_si256(set, _mm256_set1_epi8(16)));
                (q, self.d)
            }
        }
    }

    /// 0xFF in byte `j` where bit `j` of the u32 repeated in every lane of `bits` is set.
    ///
    /// # Safety
    /// Only on CPUs with AVX2.
    #[inline(always)]
    unsafe fn bit_bytes(bits: __m256i) -> __m256i {
        // Lane 0 (bytes 0..16) reads source bytes 0 and 1, lane 1 bytes 2 and 3: the u32 is
        // repeated in both lanes, so lane-relative indices 0..4 reach it.
        unsafe {
            let spread = _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
            );
            let bytes = _mm256_shuffle_epi8(bits, spread);
            let mask =
                _mm256_set1_epi64x(i64::from_le_bytes([1, 2, 4, 8, 16, 32, 64, -128i8 as u8]));
            _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask)
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::quant::test_random as random;
    use candle_core::quantized::k_quants::{BlockQ5_0 as CandleQ5_0, GgmlType};

    /// Whether the CPU runs the VNNI kernels; a test comparing them with the AVX2 ones says
    /// it is skipped where not.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn vnni_here() -> bool {
        let here = has_avx512_vnni();
        if !here {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
        }
        here
    }

    /// `round_to_i8` is `round` then the clamp, at every half, on either side of it, at
    /// the ends of the range and for NaN.
    #[test]
    fn rounding_without_the_library_call_is_round() {
        let mut ys: Vec<f32> = vec![0.0, -0.0, f32::NAN, 127.0, -127.0, 127.5, -127.5];
        for k in -128..128 {
            let half = k as f32 + 0.5;
            ys.extend([half, half.next_up(), half.next_down(), k as f32]);
        }
        ys.extend(random(10_000, 3).iter().map(|v| v * 60.0));
        for y in ys {
            let want = y.round().clamp(-127.0, 127.0) as i8;
            assert_eq!(round_to_i8(y), want, "{y:e}");
        }
    }

    /// The AVX2 quantization gives the scalar loop's scale and bytes: random blocks of 32
    /// and 256, with values exactly at ±amax, at halves of the step, zeros, a NaN, ±inf,
    /// and scales too small to invert.
    #[test]
    fn quantizing_with_avx2_gives_the_scalar_bits() {
        fn scalar(x: &[f32]) -> (f32, Vec<i8>) {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            (d, x.iter().map(|v| round_to_i8(v * inv)).collect())
        }
        let mut blocks: Vec<Vec<f32>> = Vec::new();
        for (n, seed) in [(32, 1), (256, 2), (32, 3), (256, 4)] {
            for scale in [1.0, 1e-3, 300.0, 1e-38, 1e-44] {
                blocks.push(random(n, seed).iter().map(|v| v * scale).collect());
            }
        }
        // Values at the halves of the step (127 / amax) and at ±amax.
        blocks.push(
            (0..32)
                .map(|i| (i as f32 - 16.0) * 0.5 * (2.0 / 127.0))
                .collect(),
        );
        blocks.push([vec![2.0, -2.0], vec![1.0; 30]].concat());
        blocks.push(vec![0.0; 256]);
        blocks.push([vec![f32::NAN], vec![0.5; 31]].concat());
        blocks.push([vec![f32::INFINITY, -1.0], vec![0.25; 30]].concat());
        for x in blocks {
            let mut qs = vec![0i8; x.len()];
            let d = quantize_to_i8(&x, &mut qs);
            let (want_d, want_qs) = scalar(&x);
            assert_eq!(d.to_bits(), want_d.to_bits(), "scale of {x:?}");
            assert_eq!(qs, want_qs, "bytes of {x:?}");
        }
    }

    /// Quantizes with candle (llama.cpp's Q5_0 quantizer), as GGUF bytes.
    pub(crate) fn quantize_q5_0(w: &[f32]) -> Vec<u8> {
        let mut blocks = vec![CandleQ5_0::zeros(); w.len() / 32];
        CandleQ5_0::from_float(w, &mut blocks);
        let bytes = std::mem::size_of_val(blocks.as_slice());
        // SAFETY: reading plain-data blocks as their bytes.
        #[allow(unsafe_code)]
        unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), bytes) }.to_vec()
    }

    fn from_bytes<T>(bytes: &[u8]) -> Vec<T> {
        super::super::read_blocks(bytes.len(), |b| {
            b.copy_from_slice(bytes);
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn activations_round_half_away_from_zero() {
        let mut x: Vec<f32> = random(32 * 64, 11);
        // Exact halves and near-halves of the step max|x| / 127.
        x[0] = 1.0;
        for (i, f) in [0.5f32, 1.5, -2.5, 0.499_999_97, 126.5, -0.5]
            .iter()
            .enumerate()
        {
            x[1 + i] = f / 127.0;
        }
        for block in x.chunks(32) {
            let q = BlockQ8::quantize(block);
            let inv = 1.0 / q.d;
            for (v, &got) in block.iter().zip(&q.qs) {
                let want = (v * inv).round().clamp(-127.0, 127.0) as i8;
                assert_eq!(got, want, "{v}");
            }
        }
    }

    #[test]
    fn our_layout_reads_as_candle_dequantizes() {
        let w = random(32 * 9, 3);
        let bytes = quantize_q5_0(&w);
        let ours: Vec<BlockQ5_0> = from_bytes(&bytes);
        let theirs: Vec<CandleQ5_0> = from_bytes(&bytes);
        let mut a = vec![0f32; w.len()];
        Rows32(ours).row_to_f32(0, w.len(), &mut a);
        let mut b = vec![0f32; w.len()];
        CandleQ5_0::to_float(&theirs, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn simd_and_portable_kernels_agree() {
        for blocks in [1, 2, 7, 28] {
            let bytes = quantize_q5_0(&random(32 * blocks, blocks as u32));
            let w: Vec<BlockQ5_0> = from_bytes(&bytes);
            let a: Vec<BlockQ8> = random(32 * blocks, 99)
                .chunks(32)
                .map(BlockQ8::quantize)
                .collect();
            let one = |dots: DotsFn<BlockQ5_0>| {
                let mut o = [0f32];
                dots(&w, &[&a], &mut o);
                o[0]
            };
            let (x, y) = (dot_portable(&w, &a), one(BlockQ5_0::kernel()));
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "Q5_0, {blocks} blocks: {x} vs {y}"
            );
            let w8: Vec<BlockQ8_0> = (0..blocks)
                .map(|i| BlockQ8_0 {
                    d: half::f16::from_f32(0.01 + i as f32 * 1e-3).to_bits(),
                    qs: std::array::from_fn(|j| ((i * 31 + j * 17) % 255) as u8 as i8),
                })
                .collect();
            let mut o = [0f32];
            BlockQ8_0::kernel()(&w8, &[&a], &mut o);
            let (x, y) = (dot_portable(&w8, &a), o[0]);
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "Q8_0, {blocks} blocks: {x} vs {y}"
            );
        }
    }
}
