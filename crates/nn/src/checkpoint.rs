//! Gradient checkpointing (PyTorch's `torch.utils.checkpoint`, transformers'
//! `gradient_checkpointing_enable()`): a checkpointed layer keeps only its input for the
//! backward pass, and recomputes its forward there. Peak memory drops from every layer's
//! activations to the layers' inputs plus one layer's activations; gradients stay the same.
//!
//! candle has no such primitive, so it is built from a custom op:
//! - the layer runs as usual, then its output is detached, which frees the graph (and the
//!   activations it held) at once;
//! - the detached output joins the graph through [`Recompute`], a unary op on the layer's
//!   input whose forward copies that output and whose backward runs the layer again on a
//!   tracked copy of the input, backpropagates the output's gradient through it, returns
//!   the input's gradient and deposits the parameters' gradients aside;
//! - [`backward`] (what training calls instead of `loss.backward()`) adds what was deposited
//!   to the gradients it returns, under the same `Var` ids, so clipping and the optimizer
//!   see complete gradients.
//!
//! The layer must compute the same function when run again: its dropout masks must be the
//! ones the first run drew. They come from the model's `DropoutStream` (a pure function of
//! seed, step and call number), which [`checkpoint_layer`] rewinds to the layer's first call
//! for the rerun and puts back afterwards.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::backprop::GradStore;
use candle_core::{
    bail, CpuStorage, CudaStorage, CustomOp1, Layout, MetalStorage, Shape, Storage, Tensor, Var,
};

use crate::cache::{KvCache, KvLayout};
use crate::dropout::DropoutStream;
use crate::error::Result;

thread_local! {
    /// Parameter gradients deposited by checkpointed layers during the [`backward`] running
    /// on this thread (candle's backward pass runs on the caller's thread); `None` outside.
    static DEPOSITED: RefCell<Option<GradStore>> = const { RefCell::new(None) };
}

/// `f(x)`, keeping only `x` for the backward pass, where `f` runs again. Returns `f(x)`
/// itself when nothing in it carries gradients (inference). The gradients of parameters
/// used inside `f` reach only [`backward`]'s result, not a plain `loss.backward()`'s.
pub fn checkpoint<F, E>(x: &Tensor, f: F) -> std::result::Result<Tensor, E>
where
    F: Fn(&Tensor) -> std::result::Result<Tensor, E> + Send + Sync + 'static,
    E: std::error::Error + From<candle_core::Error> + Send + Sync + 'static,
{
    // The same path (and kernels) as without checkpointing, so the output is the same.
    let y = f(x)?;
    if !x.track_op() && !y.track_op() {
        return Ok(y);
    }
    let op = Recompute {
        forward: Box::new(move |x| f(x).map_err(candle_core::Error::wrap)),
        input: x.detach(),
        input_grad: x.track_op(),
        output: Mutex::new(Some(y.detach())),
    };
    // The op needs a tracked argument to be in the graph: the input when it carries
    // gradients (layers after the first), else a stand-in leaf (a frozen embedding's output
    // under LoRA).
    let arg = if x.track_op() {
        x.clone()
    } else {
        Var::zeros((), x.dtype(), x.device())?.as_tensor().clone()
    };
    // `y` goes now: its graph, the layer's activations, with it.
    drop(y);
    Ok(arg.apply_op1(op)?)
}

/// One decoder layer, `forward(x, kv)`, checkpointed when its cache is still empty and a
/// batch's (a training forward, which reads no earlier keys and values and whose own are
/// never read back): the layer then runs on a cache of its own, so `kv` stays empty, as
/// transformers turns `use_cache` off under gradient checkpointing. Otherwise (generation)
/// it just runs. `dropout` is the model's mask stream: the rerun draws the same masks.
pub fn checkpoint_layer<F, E>(
    x: &Tensor,
    kv: &mut KvLayout<'_>,
    dropout: &Arc<DropoutStream>,
    forward: F,
) -> std::result::Result<Tensor, E>
where
    F: Fn(&Tensor, &mut KvLayout<'_>) -> std::result::Result<Tensor, E> + Send + Sync + 'static,
    E: std::error::Error + From<candle_core::Error> + Send + Sync + 'static,
{
    let left_pad = match kv {
        KvLayout::Batch { cache, left_pad } if cache.is_empty() => left_pad.to_vec(),
        _ => return forward(x, kv),
    };
    let (stream, first_call) = (dropout.clone(), dropout.position());
    checkpoint(x, move |x| {
        // The first run starts at `first_call` anyway; a rerun (in the backward pass) goes
        // back there and then returns the stream to where the backward pass found it.
        let resume = stream.position();
        stream.rewind(first_call);
        let mut cache = KvCache::default();
        let y = forward(
            x,
            &mut KvLayout::Batch {
                cache: &mut cache,
                left_pad: &left_pad,
            },
        );
        if resume != first_call {
            stream.rewind(resume);
        }
        y
    })
}

/// `loss.backward()`, with the gradients of parameters inside checkpointed layers added
/// (the same ids: `grads.get(var)` finds them).
pub fn backward(loss: &Tensor) -> Result<GradStore> {
    let outer = DEPOSITED.with(|d| d.replace(Some(GradStore::default())));
    let result = loss.backward();
    let deposited = DEPOSITED.with(|d| d.replace(outer)).unwrap_or_default();
    let mut grads = result?;
    grads.extend(deposited)?;
    Ok(grads)
}

type Forward = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

/// The custom op standing for a checkpointed layer: output = the layer's (already
/// computed) output; backward = the layer run again.
struct Recompute {
    forward: Forward,
    /// The layer's input, detached (the graph holds the tracked one).
    input: Tensor,
    /// Whether the input carries gradients (else only the parameters get some).
    input_grad: bool,
    /// The output, until the op's forward copies it.
    output: Mutex<Option<Tensor>>,
}

impl Recompute {
    fn take_output(&self) -> candle_core::Result<Tensor> {
        match self.output.lock().ok().and_then(|mut y| y.take()) {
            Some(y) => Ok(y),
            None => bail!("checkpoint: the layer's output was already taken"),
        }
    }
}

/// A contiguous copy of the tensor in `storage` at `layout`, on its device.
fn copy<S>(storage: &S, layout: &Layout) -> candle_core::Result<S>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    let mut out = storage
        .device()
        .zeros_impl(layout.shape(), storage.dtype())?;
    storage.copy_strided_src(&mut out, 0, layout)?;
    Ok(out)
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "checkpoint"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = self.take_output()?;
        let (storage, layout) = y.storage_and_layout();
        let Storage::Cpu(s) = &*storage else {
            bail!("checkpoint: the layer's output is not on the input's device")
        };
        Ok((copy(s, layout)?, layout.shape().clone()))
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let y = self.take_output()?;
        let (storage, layout) = y.storage_and_layout();
        let Storage::Cuda(s) = &*storage else {
            bail!("checkpoint: the layer's output is not on the input's device")
        };
        Ok((copy(s, layout)?, layout.shape().clone()))
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
    ) -> candle_core::Result<(MetalStorage, Shape)> {
        let y = self.take_output()?;
        let (storage, layout) = y.storage_and_layout();
        let Storage::Metal(s) = &*storage else {
            bail!("checkpoint: the layer's output is not on the input's device")
        };
        Ok((copy(s, layout)?, layout.shape().clone()))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if DEPOSITED.with(|d| d.borrow().is_none()) {
            bail!(
                "a checkpointed layer's parameter gradients need ferro_nn::checkpoint::backward(&loss) \
                 instead of loss.backward()"
            )
        }
        // A fresh leaf for the input, so that its gradient is found by id.
        let x = if self.input_grad {
            Var::from_tensor(&self.input)?.as_tensor().clone()
        } else {
            self.input.clone()
        };
        let y = (self.forward)(&x)?;
        let params: Vec<Tensor> = y
            .sorted_nodes()
            .into_iter()
            .filter(|n| n.is_variable() && n.id() != x.id())
            .cloned()
            .collect();
        // d(Σ y · grad)/dy = grad: the output's gradient pushed through the layer.
        let grads = (y * grad)?.sum_all()?.backward()?;
        DEPOSITED.with(|d| -> candle_core::Result<()> {
            let mut d = d.borrow_mut();
            let Some(acc) = d.as_mut() else {
                bail!("checkpoint: the gradient store went away during the backward pass")
            };
            for p in &params {
                if let Some(g) = grads.get(p) {
                    let sum = match acc.remove(p) {
                        Some(old) => (old + g)?,
                        None => g.clone(),
                    };
                    acc.insert(p, sum);
                }
            }
            Ok(())
        })?;
        Ok(if self.input_grad {
            grads.get(&x).cloned()
        } else {
            None
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::test_util::max_diff;
    use candle_core::Device;

    /// A residual tanh layer, `layer(x) = tanh(x wᵀ) + x`, `w (4, 4)`.
    fn layer(w: Tensor) -> impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static {
        move |x: &Tensor| Ok((x.broadcast_matmul(&w.t()?)?.tanh()? + x)?)
    }

    fn setup(seed: u32) -> (Var, Var, Tensor) {
        let t = |n: usize, seed: u32, shape: &[usize]| {
            Tensor::from_vec(crate::quant::test_random(n, seed), shape, &Device::Cpu).unwrap()
        };
        let w1 = Var::from_tensor(&t(16, seed, &[4, 4])).unwrap();
        let w2 = Var::from_tensor(&t(16, seed + 1, &[4, 4])).unwrap();
        (w1, w2, t(24, seed + 2, &[2, 3, 4]))
    }

    /// Loss and gradients (weights and a tracked input) are the same with and without
    /// checkpointing; the first layer's input may also be untracked (a frozen embedding).
    #[test]
    fn gradients_equal_without_checkpointing() {
        let (w1, w2, x) = setup(1);
        for tracked_input in [true, false] {
            let xv = Var::from_tensor(&x).unwrap();
            let input = if tracked_input {
                xv.as_tensor().clone()
            } else {
                x.clone()
            };
            let (l1, l2) = (layer(w1.as_tensor().clone()), layer(w2.as_tensor().clone()));
            let plain = l2(&l1(&input).unwrap())
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            let g_plain = plain.backward().unwrap();
            let (l1, l2) = (layer(w1.as_tensor().clone()), layer(w2.as_tensor().clone()));
            let h = checkpoint(&input, l1).unwrap();
            let ckpt = checkpoint(&h, l2)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            assert_eq!(
                ckpt.to_scalar::<f32>().unwrap(),
                plain.to_scalar::<f32>().unwrap()
            );
            let g = backward(&ckpt).unwrap();
            for v in [&w1, &w2] {
                let (a, b) = (
                    g.get(v.as_tensor()).unwrap(),
                    g_plain.get(v.as_tensor()).unwrap(),
                );
                assert!(max_diff(a, b) < 1e-6, "weight gradient differs");
                assert!(max_diff(b, &b.zeros_like().unwrap()) > 1e-3);
            }
            match tracked_input {
                true => {
                    let (a, b) = (
                        g.get(xv.as_tensor()).unwrap(),
                        g_plain.get(xv.as_tensor()).unwrap(),
                    );
                    assert!(max_diff(a, b) < 1e-6, "input gradient differs");
                }
                false => assert!(g.get(xv.as_tensor()).is_none()),
            }
        }
    }

    /// A weight shared by two checkpointed layers gets the sum of both uses.
    #[test]
    fn shared_weights_add_up() {
        let (w1, _, x) = setup(2);
        let l = || layer(w1.as_tensor().clone());
        let plain = l()(&l()(&x).unwrap()).unwrap().sum_all().unwrap();
        let ckpt = checkpoint(&checkpoint(&x, l()).unwrap(), l())
            .unwrap()
            .sum_all()
            .unwrap();
        let (a, b) = (backward(&ckpt).unwrap(), plain.backward().unwrap());
        let diff = max_diff(
            a.get(w1.as_tensor()).unwrap(),
            b.get(w1.as_tensor()).unwrap(),
        );
        assert!(diff < 1e-6, "{diff}");
    }

    /// Nothing tracked: the plain output, no op; and a plain `loss.backward()` through a
    /// checkpointed layer is an error naming `checkpoint::backward`, not missing gradients.
    #[test]
    fn inference_is_untouched_and_plain_backward_is_refused() {
        let (w1, _, x) = setup(3);
        let w = w1.as_tensor().detach();
        let y = checkpoint(&x, layer(w.clone())).unwrap();
        assert!(!y.track_op());
        assert_eq!(max_diff(&y, &layer(w)(&x).unwrap()), 0.0);
        let loss = checkpoint(&x, layer(w1.as_tensor().clone()))
            .unwrap()
            .sum_all()
            .unwrap();
        let e = loss.backward().unwrap_err().to_string();
        assert!(e.contains("checkpoint::backward"), "{e}");
    }
}
