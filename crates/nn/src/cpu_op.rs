//! What the fused CPU ops (bias, norms, softmax, GELU, cross-entropy) share: reading a storage
//! as a contiguous f32 slice, and splitting rows into tasks.

use candle_core::{CpuStorage, Layout};

/// An op's error: `op: msg`.
pub(crate) fn op_error(op: &str, msg: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: {msg}"))
}

/// The f32 values a contiguous `layout` of `s` covers; `op` names the op in errors.
pub(crate) fn f32_slice<'a>(
    op: &str,
    s: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        return Err(op_error(op, "the inputs must be f32"));
    };
    let Some((a, b)) = layout.contiguous_offsets() else {
        return Err(op_error(op, "the inputs must be contiguous"));
    };
    Ok(&v[a..b])
}

/// The f32 values a contiguous `layout` of `s` covers, to write in place (`f32_slice`'s twin for in-place ops).
pub(crate) fn f32_slice_mut<'a>(
    op: &str,
    s: &'a mut CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else {
        return Err(op_error(op, "the inputs must be f32"));
    };
    let Some((a, b)) = layout.contiguous_offsets() else {
        return Err(op_error(op, "the inputs must be contiguous"));
    };
    Ok(&mut v[a..b])
}

/// `rows_and_vectors`' answer: the rows' values, the vectors', and `d`.
pub(crate) type RowsAndVectors<'a, const N: usize> = (&'a [f32], [&'a [f32]; N], usize);

/// The rows of `x (..., d)` and per-feature vectors `vectors` (each `(d)`: a weight, a
/// bias) as f32 values, with `d`; `msg` is the error when a vector's length is not `x`'s
/// last dimension (or that is 0).
pub(crate) fn rows_and_vectors<'a, const N: usize>(
    op: &str,
    (xs, xl): (&'a CpuStorage, &Layout),
    vectors: [(&'a CpuStorage, &Layout); N],
    msg: &str,
) -> candle_core::Result<RowsAndVectors<'a, N>> {
    let x = f32_slice(op, xs, xl)?;
    let mut vs = [&[][..]; N];
    for (v, (s, l)) in vs.iter_mut().zip(vectors) {
        *v = f32_slice(op, s, l)?;
    }
    let d = xl.dims().last().copied().unwrap_or(0);
    if d == 0 || vs.iter().any(|v| v.len() != d) {
        return Err(op_error(op, msg));
    }
    Ok((x, vs, d))
}

/// Values per task of whole rows of `d`: about `chunk`, at least one row.
pub(crate) fn rows_task_len(d: usize, chunk: usize) -> usize {
    (chunk / d.max(1)).max(1) * d.max(1)
}
