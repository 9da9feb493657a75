//! The 32-weight interleaved kernels with AVX-512 VNNI (Zen 4, Ice Lake and later).
//!
//! `vpdpbusd` multiplies four unsigned weight bytes by four signed activation bytes and
//! adds the four products to an i32 lane in one instruction, with the activations
//! broadcast from memory, where the AVX2 kernels need a broadcast, `maddubs`, `madd` and
//! an add (and for Q8_0 two sign flips). A 16-sequence serving step spends about half its
//! time in these products. The integer sums are exact either way and the float steps are
//! the AVX2 kernel's (`band_with`), so the results are the AVX2 kernel's bits.

use std::arch::x86_64::*;

use super::avx2::{self, band_with, broadcast, by_rows, nibbles, Kernel};
use super::{BlockQ8, GroupQ4_0, GroupQ5_0, GroupQ8_0};

pub(in crate::quant) fn dots_q5_0(
    w: &[GroupQ5_0],
    acts: &[&[BlockQ8]],
    out: &mut [[f32; 8]],
    ahead: &[u8],
) {
    // SAFETY: handed out only where `has_avx512_vnni()`.
    unsafe { dispatch(w, acts, out, ahead) }
}

pub(in crate::quant) fn dots_q4_0(
    w: &[GroupQ4_0],
    acts: &[&[BlockQ8]],
    out: &mut [[f32; 8]],
    ahead: &[u8],
) {
    // SAFETY: as above.
    unsafe { dispatch(w, acts, out, ahead) }
}

pub(in crate::quant) fn dots_q8_0(
    w: &[GroupQ8_0],
    acts: &[&[BlockQ8]],
    out: &mut [[f32; 8]],
    ahead: &[u8],
) {
    // SAFETY: as above.
    unsafe { dispatch(w, acts, out, ahead) }
}

/// # Safety
/// Only where `has_avx512_vnni()`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dispatch<G: Chunks>(w: &[G], acts: &[&[BlockQ8]], out: &mut [[f32; 8]], ahead: &[u8]) {
    super::prefetch_bytes(ahead);
    // SAFETY: the features per the caller.
    unsafe { by_rows::<_, true>(&Bands(w), acts, out) }
}

struct Bands<'a, G>(&'a [G]);

impl<G: Chunks> Kernel<BlockQ8> for Bands<'_, G> {
    #[inline(always)]
    unsafe fn band<const R: usize>(&self, acts: [&[BlockQ8]; R]) -> [__m256; R] {
        // SAFETY: as the caller's.
        unsafe { band_with(self.0, acts, |g, a| Chunks::dots(g, a)) }
    }
}

/// The integer dot products of one group with `R` activation blocks, a row per lane, by
/// `vpdpbusd` (the scales are the AVX2 kernel's `Chunks::scales`).
trait Chunks: avx2::Chunks {
    /// # Safety
    /// Only where `has_avx512_vnni()` (inlined into `dispatch`).
    unsafe fn dots<const R: usize>(&self, acts: [&BlockQ8; R]) -> [__m256i; R];
}

impl Chunks for GroupQ5_0 {
    #[inline(always)]
    unsafe fn dots<const R: usize>(&self, acts: [&BlockQ8; R]) -> [__m256i; R] {
        // SAFETY: loads inside `qs` and `qh`; the features per the contract.
        unsafe {
            let fifth = self.fifth_bits();
            let start = std::array::from_fn(|r| _mm256_set1_epi32(-acts[r].sum16()));
            unsigned_dots(acts, start, |c| {
                _mm256_or_si256(nibbles(&self.qs, c), fifth[c])
            })
        }
    }
}

impl Chunks for GroupQ4_0 {
    #[inline(always)]
    unsafe fn dots<const R: usize>(&self, acts: [&BlockQ8; R]) -> [__m256i; R] {
        // SAFETY: loads inside `qs`; the features per the contract.
        unsafe {
            // q + 8 (8..=23) less 16 Σ a, as the AVX2 kernel.
            let eight = _mm256_set1_epi8(8);
            let start = std::array::from_fn(|r| _mm256_set1_epi32(-acts[r].sum16()));
            unsigned_dots(acts, start, |c| {
                _mm256_add_epi8(nibbles(&self.qs, c), eight)
            })
        }
    }
}

impl Chunks for GroupQ8_0 {
    #[inline(always)]
    unsafe fn dots<const R: usize>(&self, acts: [&BlockQ8; R]) -> [__m256i; R] {
        // SAFETY: loads inside `qs`; the features per the contract.
        unsafe {
            // w xor 0x80 is w + 128 as an unsigned byte: Σ (w + 128)·a − 128 Σ a.
            let flip = _mm256_set1_epi8(i8::MIN);
            let start = std::array::from_fn(|r| _mm256_set1_epi32(-8 * acts[r].sum16()));
            unsigned_dots(acts, start, |c| {
                let w = _mm256_loadu_si256(self.qs.as_ptr().add(32 * c).cast());
                _mm256_xor_si256(w, flip)
            })
        }
    }
}

/// `start[r]` + Σ u·a per lane over the eight chunks, chunk `c`'s unsigned weights `u`
/// given by `weights(c)`. Even and odd chunks go to separate accumulators, so that each
/// `vpdpbusd` need not wait for the one before.
#[inline(always)]
unsafe fn unsigned_dots<const R: usize>(
    acts: [&BlockQ8; R],
    start: [__m256i; R],
    weights: impl Fn(usize) -> __m256i,
) -> [__m256i; R] {
    // SAFETY: the features per the caller.
    unsafe {
        let mut even = start;
        let mut odd = [_mm256_setzero_si256(); R];
        for c in (0..8).step_by(2) {
            let (w0, w1) = (weights(c), weights(c + 1));
            for r in 0..R {
                even[r] = _mm256_dpbusd_epi32(even[r], w0, broadcast(acts[r], c));
                odd[r] = _mm256_dpbusd_epi32(odd[r], w1, broadcast(acts[r], c + 1));
            }
        }
        std::array::from_fn(|r| _mm256_add_epi32(even[r], odd[r]))
    }
}
