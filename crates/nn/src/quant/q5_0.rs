//! Q5_0 weights times 8-bit activations: candle has no SIMD kernel for this type, which
//! most tensors of llama.cpp's small-model files use. An AVX2 kernel chosen at run time,
//! and a portable one.
//!
//! A Q5_0 block holds 32 weights: an f16 scale `d`, the low 4 bits of each weight in 16
//! bytes (weight `j < 16` in the low nibble of byte `j`, weight `j + 16` in its high
//! nibble) and the fifth bits in a u32 (bit `j` for weight `j`); weight = d · (q − 16).

use rayon::prelude::*;

use super::{drive, QuantRows};

#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// f16 bits.
    d: u16,
    qh: [u8; 4],
    qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// 32 activations as 8-bit integers times a scale.
#[derive(Debug, Clone, Copy)]
pub struct BlockQ8 {
    d: f32,
    qs: [i8; 32],
}

impl BlockQ8 {
    /// Rounds 32 values to the nearest multiple of `max|x| / 127`.
    fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, v) in qs.iter_mut().zip(x) {
            *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
        Self { d, qs }
    }
}

impl BlockQ5_0 {
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

    fn scale(&self) -> f32 {
        half::f16::from_bits(self.d).to_f32()
    }
}

#[derive(Debug)]
pub(super) struct Q5_0Rows(pub(super) Vec<BlockQ5_0>);

impl QuantRows for Q5_0Rows {
    fn matmul(&self, n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
        let nb = k / 32;
        let act: Vec<BlockQ8> = x.par_chunks(32).map(BlockQ8::quantize).collect();
        let dot = kernel();
        drive(n, m, |j, i| {
            dot(&self.0[j * nb..(j + 1) * nb], &act[i * nb..(i + 1) * nb])
        })
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

type DotFn = fn(&[BlockQ5_0], &[BlockQ8]) -> f32;

/// The fastest kernel this CPU runs.
fn kernel() -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return avx2::dot;
    }
    dot_portable
}

fn dot_portable(w: &[BlockQ5_0], a: &[BlockQ8]) -> f32 {
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

    use super::{BlockQ5_0, BlockQ8};

    pub(super) fn dot(w: &[BlockQ5_0], a: &[BlockQ8]) -> f32 {
        // SAFETY: `kernel()` hands this out only when the CPU has AVX2 and FMA.
        unsafe { dot_avx2(w, a) }
    }

    /// 0xFF in byte `j` where bit `j` of `bits` is set.
    #[target_feature(enable = "avx2")]
    fn bit_bytes(bits: u32) -> __m256i {
        // Lane 0 (bytes 0..16) reads source bytes 0 and 1, lane 1 bytes 2 and 3: the u32 is
        // repeated in both lanes, so lane-relative indices 0..4 reach it.
        let spread = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
        let mask = _mm256_set1_epi64x(i64::from_le_bytes([1, 2, 4, 8, 16, 32, 64, -128i8 as u8]));
        _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(w: &[BlockQ5_0], a: &[BlockQ8]) -> f32 {
        let low4 = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let minus16 = _mm256_set1_epi8(-16i8);
        let mut acc = _mm256_setzero_ps();
        for (b, q) in w.iter().zip(a) {
            // SAFETY: the loads read the 16 bytes of `b.qs` and the 32 of `q.qs`.
            let packed = unsafe { _mm_loadu_si128(b.qs.as_ptr().cast()) };
            let lo = _mm_and_si128(packed, low4);
            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
            let nibbles = _mm256_set_m128i(hi, lo);
            // Weight = nibble + 16·bit − 16: the nibble where the bit is set, the nibble
            // with its high four bits set (nibble − 16 as i8) where it is not.
            let set = bit_bytes(u32::from_le_bytes(b.qh));
            let wq = _mm256_or_si256(nibbles, _mm256_andnot_si256(set, minus16));
            let aq = unsafe { _mm256_loadu_si256(q.qs.as_ptr().cast()) };
            // |w| · (a with w's sign): unsigned × signed products, pairs summed to i16
            // (|w| ≤ 16 and |a| ≤ 127, so no saturation), then to i32.
            let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(aq, wq));
            let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
            let scale = _mm256_set1_ps(b.scale() * q.d);
            acc = _mm256_fmadd_ps(scale, sums, acc);
        }
        let quad = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ5_0 as CandleQ5_0, GgmlType};

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

    fn random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn our_layout_reads_as_candle_dequantizes() {
        let w = random(32 * 9, 3);
        let bytes = quantize_q5_0(&w);
        let ours: Vec<BlockQ5_0> = from_bytes(&bytes);
        let theirs: Vec<CandleQ5_0> = from_bytes(&bytes);
        let mut a = vec![0f32; w.len()];
        Q5_0Rows(ours).row_to_f32(0, w.len(), &mut a);
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
            let (x, y) = (dot_portable(&w, &a), kernel()(&w, &a));
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "{blocks} blocks: {x} vs {y}"
            );
        }
    }
}
