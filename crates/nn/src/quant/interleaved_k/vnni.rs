//! The Q4_K, Q5_K and Q6_K interleaved kernels with AVX-512 VNNI (see
//! `interleaved/vnni.rs`): each sub-block's chunks go through `vpdpbusd` into an i32 per
//! row, multiplied once by the sub-block's scale, where the AVX2 kernels add `maddubs`
//! pairs in i16 lanes and fold them with `madd`. The weights are decoded, and the mins,
//! offsets and float steps finished, by the AVX2 kernels' own code; every integer is
//! exact, so the results are their bits.

use std::arch::x86_64::*;

use super::super::interleaved::avx2::{by_rows, Kernel};
use super::avx2::{add_q6k_offset, broadcast, finish_k4, finish_q6k, scales_k4};
use super::{BlockQ8K, GroupQ4K, GroupQ5K, GroupQ6K, ScalesK4};

pub(in crate::quant) fn dots_q4k(
    w: &[GroupQ4K],
    acts: &[&[BlockQ8K]],
    out: &mut [[f32; 8]],
    ahead: &[u8],
) {
    // SAFETY: handed out only where `has_avx512_vnni()`.
    unsafe { dispatch(w, acts, out, ahead) }
}

pub(in crate::quant) fn dots_q5k(
    w: &[GroupQ5K],
    acts: &[&[BlockQ8K]],
    out: &mut [[f32; 8]],
    ahead: &[u8],
) {
    // SAFETY: as above.
    unsafe { dispatch(w, acts, out, ahead) }
}

pub(in crate::quant) fn dots_q6k(
    w: &[GroupQ6K],
    acts: &[&[BlockQ8K]],
    out: &mut [[f32; 8]],
    ahead: &[u8],
) {
    // SAFETY: as above.
    unsafe { dispatch(w, acts, out, ahead) }
}

/// # Safety
/// Only where `has_avx512_vnni()`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dispatch<G: Super>(w: &[G], acts: &[&[BlockQ8K]], out: &mut [[f32; 8]], ahead: &[u8]) {
    // SAFETY: the features per the caller.
    unsafe { by_rows::<_, true>(&Bands(w, ahead), acts, out) }
}

/// A band and the bytes to ask for while it is multiplied (a later band's weights), a
/// share per super-block: all at once they stalled the products while memory sat idle
/// between bands (as `lanes16.rs` found for the 32-weight types).
struct Bands<'a, G>(&'a [G], &'a [u8]);

impl<G: Super> Kernel<BlockQ8K> for Bands<'_, G> {
    #[inline(always)]
    unsafe fn band<const R: usize>(&self, acts: [&[BlockQ8K]; R]) -> [__m256; R] {
        let ahead = self.1;
        let share = ahead
            .len()
            .div_ceil(self.0.len().max(1))
            .next_multiple_of(64);
        // SAFETY: as the caller's; prefetches only hint at bytes inside `ahead`.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); R];
            for (b, g) in self.0.iter().enumerate() {
                for at in (b * share..((b + 1) * share).min(ahead.len())).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.as_ptr().add(at).cast());
                }
                g.accumulate::<R>(std::array::from_fn(|r| &acts[r][b]), &mut acc);
            }
            acc
        }
    }
}

/// One super-block of eight rows added to `R` rows' accumulators.
trait Super {
    /// # Safety
    /// Only where `has_avx512_vnni()` (inlined into `dispatch`).
    unsafe fn accumulate<const R: usize>(&self, acts: [&BlockQ8K; R], acc: &mut [__m256; R]);
}

/// Lane `l` of an i16 vector whose lane `2l + h` is row `l`'s scale of sub-block `2k + h`
/// → that scale of sub-block `2k + h` as row `l`'s i32.
#[inline(always)]
unsafe fn row_scales(pairs: __m256i, h: usize) -> __m256i {
    // SAFETY: AVX2 per the caller.
    unsafe {
        if h == 0 {
            _mm256_srai_epi32::<16>(_mm256_slli_epi32::<16>(pairs))
        } else {
            _mm256_srai_epi32::<16>(pairs)
        }
    }
}

/// Adds `scale · Σ_i w[i] · a[at(i) .. at(i) + 4]` to each row's `main` (a sub-block of
/// `N` chunks, `N` even). Two accumulators per row, so that each `vpdpbusd` need not wait
/// for the one before.
#[inline(always)]
unsafe fn add_scaled<const R: usize, const N: usize>(
    w: &[__m256i; N],
    at: impl Fn(usize) -> usize,
    acts: [&BlockQ8K; R],
    scale: __m256i,
    main: &mut [__m256i; R],
) {
    // SAFETY: the features per the caller; `at(i) + 4 ≤ 256`.
    unsafe {
        for r in 0..R {
            let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for i in (0..N).step_by(2) {
                even = _mm256_dpbusd_epi32(even, w[i], broadcast(acts[r], at(i)));
                odd = _mm256_dpbusd_epi32(odd, w[i + 1], broadcast(acts[r], at(i + 1)));
            }
            let sum = _mm256_add_epi32(even, odd);
            main[r] = _mm256_add_epi32(main[r], _mm256_mullo_epi32(sum, scale));
        }
    }
}

/// A Q4_K or Q5_K super-block (`head`'s scales and mins; `chunks(s)` sub-block `s`'s eight
/// chunks of `q`, chunk `i < 4` at activations `32s + 4i` and chunk `i + 4` sixteen further, the
/// AVX2 kernels' order) added to `R` rows' accumulators. Bounds: a sub-block's sum is at most
/// 32 · 31 · 127, times a scale ≤ 63, eight of them 63 M: inside i32.
#[inline(always)]
unsafe fn accumulate_k4<const R: usize>(
    head: &ScalesK4,
    chunks: impl Fn(usize) -> [__m256i; 8],
    acts: [&BlockQ8K; R],
    acc: &mut [__m256; R],
) {
    // SAFETY: the features per the caller.
    unsafe {
        let (sc, mins) = scales_k4(&head.sm, &head.mlo);
        let mut main = [_mm256_setzero_si256(); R];
        for (k, &sck) in sc.iter().enumerate() {
            for h in 0..2 {
                let s = 2 * k + h;
                let at = |i: usize| 32 * s + 4 * (i % 4) + 16 * (i / 4);
                add_scaled(&chunks(s), at, acts, row_scales(sck, h), &mut main);
            }
        }
        finish_k4(&head.d, &head.dmin, &mins, main, acts, acc);
    }
}

impl Super for GroupQ4K {
    #[inline(always)]
    unsafe fn accumulate<const R: usize>(&self, acts: [&BlockQ8K; R], acc: &mut [__m256; R]) {
        // SAFETY: the loads read inside the group's arrays; the features per the contract.
        unsafe {
            let low4 = _mm256_set1_epi8(0x0F);
            let chunks = |s: usize| -> [__m256i; 8] {
                std::array::from_fn(|i| {
                    let packed =
                        _mm256_loadu_si256(self.qs.as_ptr().add(128 * s + 32 * (i % 4)).cast());
                    if i < 4 {
                        _mm256_and_si256(packed, low4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low4)
                    }
                })
            };
            accumulate_k4(&self.head, chunks, acts, acc);
        }
    }
}

impl Super for GroupQ5K {
    #[inline(always)]
    unsafe fn accumulate<const R: usize>(&self, acts: [&BlockQ8K; R], acc: &mut [__m256; R]) {
        // SAFETY: the features per the contract.
        unsafe { accumulate_k4(&self.head, |s| self.chunks(s), acts, acc) }
    }
}

impl Super for GroupQ6K {
    /// The unsigned `q` (0..=63), less 32 · Σ sc · Σ a. Bounds: a sub-block's sum at most
    /// 16 · 63 · 127, times |sc| ≤ 128, sixteen of them 262 M; the offset as AVX2's.
    #[inline(always)]
    unsafe fn accumulate<const R: usize>(&self, acts: [&BlockQ8K; R], acc: &mut [__m256; R]) {
        // SAFETY: the loads read inside the group's arrays; the features per the contract.
        unsafe {
            let mut main = [_mm256_setzero_si256(); R];
            let mut offset = [_mm256_setzero_si256(); R];
            for k in 0..8 {
                let sck = self.scale_pair(k);
                add_q6k_offset(sck, k, acts, &mut offset);
                for h in 0..2 {
                    let s = 2 * k + h;
                    let scale = row_scales(sck, h);
                    add_scaled(&self.chunks(s), |i| 16 * s + 4 * i, acts, scale, &mut main);
                }
            }
            finish_q6k(&self.d, main, offset, acts, acc);
        }
    }
}
