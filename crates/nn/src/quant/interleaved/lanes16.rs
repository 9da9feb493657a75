//! The 32-weight interleaved kernel with sixteen input rows in the lanes (AVX-512 VNNI),
//! for decode batches of 9 to 16 sequences and for prompts, 16 rows a pass.
//!
//! The packed kernels (`vnni.rs`) put a band's eight weight rows in the lanes of a 256-bit
//! register and broadcast each input row's activations: per input row and block, 8
//! `vpdpbusd` and about 14 other instructions (broadcasts, the start, the float steps).
//! Here a 512-bit register holds four activations of each of 16 input rows, loaded once
//! per block and band, and each weight row's four bytes are broadcast against it from the
//! expanded band: per weight row and block, 8 broadcast loads and 8 `vpdpbusd` serve all
//! 16 input rows, and so do the start and the float steps. The integer sums are the
//! packed kernels' and each float step is theirs value for value (the weight scale times
//! the activation scale, then one multiply-add per block, in block order), so every input
//! row gets the bits it gets alone (`lanes16_give_the_packed_bits`).

use std::arch::x86_64::*;

use super::{Expanded, Lanes16, LANES};

/// One expanded band (`w`, its `nb` groups of unsigned bytes) times one pass of input rows
/// (`acts`, the same blocks): `out[j][r]` is band row `j` times pass row `r`. The start is
/// −16 Σ a shifted left `SHIFT` bits (3 for Q8_0's w + 128).
pub(in crate::quant) fn band<const SHIFT: u32>(
    w: &[Expanded],
    acts: &[Lanes16],
    out: &mut [[f32; LANES]; 8],
    ahead: &[u8],
) {
    // SAFETY: handed out only where `has_avx512_vnni()`.
    unsafe { dispatch::<SHIFT>(w, acts, out, ahead) }
}

/// # Safety
/// Only where `has_avx512_vnni()`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dispatch<const SHIFT: u32>(
    w: &[Expanded],
    acts: &[Lanes16],
    out: &mut [[f32; LANES]; 8],
    ahead: &[u8],
) {
    // SAFETY: every load and store stays inside `w`, `acts` and `out`, and prefetches only
    // hint at bytes inside `ahead`; the features per the caller.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); 8];
        let mut scales = [0f32; 8];
        // `ahead`'s share per group, in whole cache lines.
        let share = ahead.len().div_ceil(w.len().max(1)).next_multiple_of(64);
        for (b, (g, a)) in w.iter().zip(acts).enumerate() {
            for at in (b * share..((b + 1) * share).min(ahead.len())).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.as_ptr().add(at).cast());
            }
            _mm256_storeu_ps(
                scales.as_mut_ptr(),
                _mm256_cvtph_ps(_mm_loadu_si128(g.d.as_ptr().cast())),
            );
            let start = _mm512_slli_epi32::<SHIFT>(_mm512_load_si512(a.neg_sum16.as_ptr().cast()));
            let mut sums = [start; 8];
            for c in 0..8 {
                let act = _mm512_load_si512(a.q[c].as_ptr().cast());
                for (j, s) in sums.iter_mut().enumerate() {
                    // Row j's four bytes of chunk c, broadcast from memory (a load; the
                    // expansion wrote them in an earlier loop, so this stays a load).
                    let four = g.q[c].as_ptr().add(4 * j).cast::<i32>().read_unaligned();
                    *s = _mm512_dpbusd_epi32(*s, _mm512_set1_epi32(four), act);
                }
            }
            let ad = _mm512_load_ps(a.d.as_ptr());
            for j in 0..8 {
                let scale = _mm512_mul_ps(_mm512_set1_ps(scales[j]), ad);
                acc[j] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums[j]), acc[j]);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a);
        }
    }
}
