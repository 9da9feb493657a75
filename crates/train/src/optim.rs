//! Optimizers as PyTorch's: AdamW (decoupled weight decay) and SGD with momentum, over
//! named parameters, and global gradient-norm clipping (`clip_grad_norm_`).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use ferro_nn::optim_cpu;

use crate::error::{Result, TrainError};

/// Whether transformers' Trainer decays a parameter: not biases, not norm layers' weights
/// (LayerNorm, RMSNorm: any module whose name says `norm`).
pub fn decays(name: &str) -> bool {
    let mut parts = name.rsplit('.');
    let leaf = parts.next().unwrap_or("");
    let module = parts.next().unwrap_or("").to_lowercase();
    leaf != "bias" && !module.contains("norm")
}

/// One parameter and what the optimizer keeps for it.
struct Slot {
    name: String,
    var: Var,
    weight_decay: f64,
    /// AdamW: first and second moments; SGD: the momentum buffer in `m`.
    m: Option<Tensor>,
    v: Option<Tensor>,
}

fn slots(params: &[(String, Var)], weight_decay: f64) -> Vec<Slot> {
    params
        .iter()
        .map(|(name, var)| Slot {
            name: name.clone(),
            var: var.clone(),
            weight_decay: if decays(name) { weight_decay } else { 0.0 },
            m: None,
            v: None,
        })
        .collect()
}

/// torch.optim.AdamW: `p *= 1 - lr·wd`, then the bias-corrected Adam step.
pub struct AdamW {
    slots: Vec<Slot>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Steps taken (PyTorch's `step` state, shared by all parameters here).
    pub t: u64,
}

impl AdamW {
    /// `params` with `weight_decay` on those Trainer decays (see `decays`).
    pub fn new(
        params: &[(String, Var)],
        weight_decay: f64,
        betas: (f64, f64),
        eps: f64,
    ) -> Result<Self> {
        for (param, v) in [("adam_beta1", betas.0), ("adam_beta2", betas.1)] {
            if !(0.0..1.0).contains(&v) {
                return Err(TrainError::InvalidArgument {
                    param,
                    msg: format!("must be in [0, 1), got {v}"),
                });
            }
        }
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !(non_negative(eps) && non_negative(weight_decay)) {
            return Err(TrainError::InvalidArgument {
                param: "adam_epsilon / weight_decay",
                msg: format!("must be finite and >= 0, got {eps} / {weight_decay}"),
            });
        }
        Ok(Self {
            slots: slots(params, weight_decay),
            beta1: betas.0,
            beta2: betas.1,
            eps,
            t: 0,
        })
    }

    /// One step at learning rate `lr` with the gradients in `grads`; parameters without a
    /// gradient are left alone, as PyTorch skips them.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let bias1 = 1.0 - b1.powi(t);
        let bias2_sqrt = (1.0 - b2.powi(t)).sqrt();
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let p = s.var.as_tensor();
            // A moment not kept yet starts at zero (PyTorch's first step).
            let moment = |x: &Option<Tensor>| x.clone().map_or_else(|| p.zeros_like(), Ok);
            // f32 on the CPU: in place, in three passes (`ferro_nn::optim_cpu`); the zero
            // moments are made only for that path (the tensor formula below needs none).
            let fused = if p.device().is_cpu() {
                Some((moment(&s.m)?, moment(&s.v)?))
                    .filter(|(m, v)| optim_cpu::fused_adamw_fits(p, g, m, v))
            } else {
                None
            };
            if let Some((m, v)) = fused {
                let h = optim_cpu::AdamWStep {
                    lr,
                    weight_decay: s.weight_decay,
                    beta1: b1,
                    beta2: b2,
                    eps: self.eps,
                    bias1,
                    bias2_sqrt,
                };
                optim_cpu::adamw_step(p, g, &m, &v, &h)?;
                s.m = Some(m);
                s.v = Some(v);
                continue;
            }
            let mut p = p.clone();
            if s.weight_decay != 0.0 {
                p = (p * (1.0 - lr * s.weight_decay))?;
            }
            let m = match &s.m {
                Some(m) => ((m * b1)? + (g * (1.0 - b1))?)?,
                None => (g * (1.0 - b1))?,
            };
            let v = match &s.v {
                Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                None => (g.sqr()? * (1.0 - b2))?,
            };
            let denom = ((v.sqrt()? / bias2_sqrt)? + self.eps)?;
            let p = (p - ((&m / denom)? * (lr / bias1))?)?;
            s.var.set(&p.detach())?;
            s.m = Some(m.detach());
            s.v = Some(v.detach());
        }
        Ok(())
    }
}

/// An optimizer the Trainer drives, with its state as named tensors for checkpoints
/// (`exp_avg.<param>`, `exp_avg_sq.<param>`, `momentum_buffer.<param>`, and `step`).
pub enum Optimizer {
    AdamW(AdamW),
    Sgd(Sgd),
}

impl Optimizer {
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        match self {
            Optimizer::AdamW(o) => o.step(grads, lr),
            Optimizer::Sgd(o) => o.step(grads, lr),
        }
    }

    /// PyTorch's names of the two per-parameter states (SGD keeps one).
    fn state_names(&self) -> (&'static str, &'static str) {
        match self {
            Optimizer::AdamW(_) => ("exp_avg", "exp_avg_sq"),
            Optimizer::Sgd(_) => ("momentum_buffer", ""),
        }
    }

    fn slots(&mut self) -> &mut Vec<Slot> {
        match self {
            Optimizer::AdamW(o) => &mut o.slots,
            Optimizer::Sgd(o) => &mut o.slots,
        }
    }

    /// The state to checkpoint.
    pub fn state_dict(&mut self) -> Result<Vec<(String, Tensor)>> {
        let t = match self {
            Optimizer::AdamW(o) => o.t,
            Optimizer::Sgd(_) => 0,
        };
        let (m_name, v_name) = self.state_names();
        let mut out = vec![(
            "step".to_string(),
            Tensor::new(&[t as f64], &candle_core::Device::Cpu)?,
        )];
        for s in self.slots().iter() {
            if let Some(m) = &s.m {
                out.push((format!("{m_name}.{}", s.name), m.clone()));
            }
            if let Some(v) = &s.v {
                out.push((format!("{v_name}.{}", s.name), v.clone()));
            }
        }
        Ok(out)
    }

    /// Restores what `state_dict` saved.
    pub fn load_state_dict(
        &mut self,
        state: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        let step = state
            .get("step")
            .map(|t| t.flatten_all()?.to_vec1::<f64>())
            .transpose()?
            .and_then(|v| v.first().copied())
            .unwrap_or(0.0);
        if let Optimizer::AdamW(o) = self {
            o.t = step as u64;
        }
        let (m_name, v_name) = self.state_names();
        for s in self.slots().iter_mut() {
            s.m = state.get(&format!("{m_name}.{}", s.name)).cloned();
            s.v = state.get(&format!("{v_name}.{}", s.name)).cloned();
        }
        Ok(())
    }
}

/// torch.optim.SGD with momentum (dampening 0, not Nesterov) and L2 weight decay.
pub struct Sgd {
    slots: Vec<Slot>,
    pub momentum: f64,
}

impl Sgd {
    pub fn new(params: &[(String, Var)], momentum: f64, weight_decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&momentum) {
            return Err(TrainError::InvalidArgument {
                param: "momentum",
                msg: format!("must be in [0, 1), got {momentum}"),
            });
        }
        Ok(Self {
            slots: slots(params, weight_decay),
            momentum,
        })
    }

    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let p = s.var.as_tensor();
            let mut d = g.clone();
            if s.weight_decay != 0.0 {
                d = (d + (p * s.weight_decay)?)?;
            }
            if self.momentum != 0.0 {
                d = match &s.m {
                    Some(buf) => ((buf * self.momentum)? + d)?,
                    None => d,
                };
                s.m = Some(d.detach());
            }
            s.var.set(&(p - (d * lr)?)?.detach())?;
        }
        Ok(())
    }
}

/// PyTorch's `clip_grad_norm_`: the global L2 norm of the gradients of `params` (returned,
/// before clipping), and when it exceeds `max_norm` every gradient scaled by
/// `max_norm / (norm + 1e-6)`.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    params: &[(String, Var)],
    max_norm: f64,
) -> Result<f64> {
    let mut sum = 0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            sum += optim_cpu::sum_of_squares(g)?;
        }
    }
    let norm = sum.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for (_, var) in params {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * coef)?);
            }
        }
    }
    Ok(norm)
}
