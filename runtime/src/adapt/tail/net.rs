//! The float copy of the plan after a cut: its layers, geometry and construction.

use crate::adapt::cache::TapShape;
use crate::error::{Error, Result};
use crate::plan::{DType, Op, Plan, Unary};
use alloc::string::String;
use alloc::vec::Vec;
use edgetune_kernels::pack;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act1 {
    Relu,
    Relu6,
    HardSwish,
}

/// One differentiable op of the tail. Slots index the activations; slot 0 is the cut.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layer {
    /// 1×1 convolution over `tokens` positions: `y = clamp(z·γ + b)`, `z = x·W`
    /// with `W` stored `[cin][cout]` at `frozen[w..]`.
    Pw {
        x: usize,
        y: usize,
        cin: usize,
        cout: usize,
        w: usize,
        b: usize,
        lo: f32,
        hi: f32,
    },
    /// Depthwise convolution, NHWC, weights `[kh·kw][c]` at `frozen[w..]`.
    Dw {
        x: usize,
        y: usize,
        g: DwGeom,
        w: usize,
        b: usize,
        lo: f32,
        hi: f32,
    },
    Add {
        a: usize,
        b: usize,
        y: usize,
    },
    Gap {
        x: usize,
        y: usize,
    },
    Act {
        x: usize,
        y: usize,
        f: Act1,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DwGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub pad: (usize, usize),
    pub oh: usize,
    pub ow: usize,
}

/// The float copy of the plan after a cut.
#[derive(Clone, Debug, PartialEq)]
pub struct TailNet {
    pub cut: String,
    pub layers: Vec<Layer>,
    /// `(tokens, channels)` of every slot.
    pub slots: Vec<(usize, usize)>,
    /// Dequantised weights and biases of the plan's tail.
    pub frozen: Vec<f32>,
    /// Slot of the pooled features.
    pub features: usize,
}

pub(super) fn unsupported(op: &str, why: &str) -> Error {
    Error::UnsupportedOp {
        op: op.into(),
        node: "tail".into(),
        inputs: Vec::new(),
        why: why.into(),
    }
}

/// Output clamp of a fused activation, read off the output quantisation: a zero point of
/// 0 means the op's range starts at 0 (ReLU / ReLU6 folded into the requantisation).
fn fused_clamp(plan: &Plan, y: u32) -> (f32, f32) {
    let t = &plan.tensors[y as usize];
    if t.dtype == DType::U8 && t.zero == 0 {
        (0.0, t.scale * 255.0)
    } else {
        (f32::NEG_INFINITY, f32::INFINITY)
    }
}

impl TailNet {
    /// Builds the tail of `plan` after the tap `cut`.
    pub fn from_plan(plan: &Plan, cut: &str) -> Result<TailNet> {
        let port = plan
            .taps
            .iter()
            .chain(&plan.outputs)
            .find(|p| p.name == cut)
            .ok_or_else(|| Error::Invalid {
                what: alloc::format!("cut point '{cut}' is not a tap of the plan"),
            })?;
        let tc = port.tensor;
        let start = plan
            .ops
            .iter()
            .position(|o| o.io().1.contains(&tc))
            .map_or(0, |i| i + 1);
        let t0 = &plan.tensors[tc as usize];
        if t0.shape.len() != 4 {
            return Err(Error::Invalid {
                what: alloc::format!("cut point '{cut}' is not a feature map"),
            });
        }
        let dims = |t: u32| {
            let s = &plan.tensors[t as usize].shape;
            let c = s.last().copied().unwrap_or(1).max(1);
            (plan.tensors[t as usize].len() / c, c)
        };
        // Plan tensor -> slot.
        let mut slot_of: Vec<(u32, usize)> = alloc::vec![(tc, 0)];
        let mut net = TailNet {
            cut: cut.into(),
            layers: Vec::new(),
            slots: alloc::vec![dims(tc)],
            frozen: Vec::new(),
            features: 0,
        };
        let find = |s: &[(u32, usize)], t: u32| s.iter().find(|e| e.0 == t).map(|e| e.1);
        for op in &plan.ops[start..] {
            let (ins, outs) = op.io();
            let live: heapless::Vec<Option<usize>, 2> =
                ins.iter().map(|&t| find(&slot_of, t)).collect();
            if live.iter().all(|s| s.is_none()) {
                continue;
            }
            if live.iter().any(|s| s.is_none()) {
                return Err(unsupported(
                    op.name(),
                    "reads a tensor computed before the cut point (the cut is inside a \
                     residual block); cut at a block boundary",
                ));
            }
            let xs: heapless::Vec<usize, 2> = live.iter().map(|s| s.unwrap_or(0)).collect();
            let y = net.slots.len();
            let yt = outs[0];
            let mut map_to = |net: &mut TailNet, l: Option<Layer>| {
                match l {
                    Some(l) => {
                        net.slots.push(dims(yt));
                        net.layers.push(l);
                        slot_of.push((yt, y));
                    }
                    // Identity in float: the slot is the input's.
                    None => slot_of.push((yt, xs[0])),
                }
            };
            match *op {
                Op::Quantize { .. } | Op::Dequantize { .. } => map_to(&mut net, None),
                Op::ConvI8 {
                    x,
                    y: yo,
                    ref geom,
                    w,
                    bias,
                    scale,
                    ..
                } => {
                    if geom.kh != 1 || geom.kw != 1 || geom.stride_h != 1 || geom.stride_w != 1 {
                        return Err(unsupported(
                            "ConvI8",
                            "a k×k dense convolution; the tail trainer differentiates 1×1 and \
                             depthwise convolutions",
                        ));
                    }
                    let (cin, cout) = (geom.ic, geom.oc);
                    let sx = plan.tensors[x as usize].scale;
                    let yt = &plan.tensors[yo as usize];
                    let sy = if yt.dtype == DType::F32 {
                        1.0
                    } else {
                        yt.scale
                    };
                    let wq: &[i8] = plan.blob(w);
                    let bq: &[i32] = plan.blob(bias);
                    let ms: &[f32] = plan.blob(scale);
                    if ms.len() < cout
                        || bq.len() < cout
                        || wq.len() < pack::packed_i8_len(cin, cout)
                    {
                        return Err(crate::plan::bad("convolution weights out of range"));
                    }
                    let wo = net.frozen.len();
                    for kk in 0..cin {
                        for c in 0..cout {
                            let m = ms[c] * sy;
                            net.frozen
                                .push(wq[pack::i8_index(cin, kk, c)] as f32 * m / sx);
                        }
                    }
                    let bo = net.frozen.len();
                    net.frozen
                        .extend((0..cout).map(|c| bq[c] as f32 * ms[c] * sy));
                    let (lo, hi) = fused_clamp(plan, yo);
                    map_to(
                        &mut net,
                        Some(Layer::Pw {
                            x: xs[0],
                            y,
                            cin,
                            cout,
                            w: wo,
                            b: bo,
                            lo,
                            hi,
                        }),
                    );
                }
                Op::DwI8 {
                    x,
                    y: yo,
                    ref geom,
                    w,
                    bias,
                    scale,
                    ..
                } => {
                    let c = geom.oc;
                    let sx = plan.tensors[x as usize].scale;
                    let sy = plan.tensors[yo as usize].scale;
                    let wq: &[i16] = plan.blob(w);
                    let bq: &[i32] = plan.blob(bias);
                    let ms: &[f32] = plan.blob(scale);
                    let taps = geom.kh * geom.kw;
                    if ms.len() < c
                        || bq.len() < c
                        || wq.len() < taps * c
                        || geom.dil_h != 1
                        || geom.dil_w != 1
                    {
                        return Err(crate::plan::bad("depthwise weights out of range"));
                    }
                    let wo = net.frozen.len();
                    for t in 0..taps {
                        for ch in 0..c {
                            net.frozen.push(wq[t * c + ch] as f32 * ms[ch] * sy / sx);
                        }
                    }
                    let bo = net.frozen.len();
                    net.frozen
                        .extend((0..c).map(|ch| bq[ch] as f32 * ms[ch] * sy));
                    let (lo, hi) = fused_clamp(plan, yo);
                    let g = DwGeom {
                        c,
                        h: geom.h,
                        w: geom.w,
                        kh: geom.kh,
                        kw: geom.kw,
                        stride: (geom.stride_h, geom.stride_w),
                        pad: (geom.pad_top, geom.pad_left),
                        oh: geom.oh(),
                        ow: geom.ow(),
                    };
                    map_to(
                        &mut net,
                        Some(Layer::Dw {
                            x: xs[0],
                            y,
                            g,
                            w: wo,
                            b: bo,
                            lo,
                            hi,
                        }),
                    );
                }
                Op::AddU8 { .. } | Op::AddF32 { .. } => map_to(
                    &mut net,
                    Some(Layer::Add {
                        a: xs[0],
                        b: xs[1],
                        y,
                    }),
                ),
                Op::GapU8 { .. } | Op::GapF32 { .. } => {
                    map_to(&mut net, Some(Layer::Gap { x: xs[0], y }));
                    net.features = y;
                    break;
                }
                Op::UnaryF32 { f, .. } => {
                    let f = match f {
                        Unary::Relu => Act1::Relu,
                        Unary::Relu6 => Act1::Relu6,
                        Unary::HardSwish => Act1::HardSwish,
                        _ => {
                            return Err(unsupported(
                                "UnaryF32",
                                "an activation the tail trainer cannot differentiate",
                            ))
                        }
                    };
                    map_to(&mut net, Some(Layer::Act { x: xs[0], y, f }));
                }
                Op::MaxPoolU8 { .. }
                | Op::LutU8 { .. }
                | Op::MulChanU8 { .. }
                | Op::LutF32 { .. }
                | Op::Concat { .. }
                | Op::Slice { .. }
                | Op::Pad { .. }
                | Op::Upsample { .. }
                | Op::Dilate { .. }
                | Op::BinF32 { .. }
                | Op::ChainF32 { .. }
                | Op::ClampF32 { .. }
                | Op::SumF32 { .. }
                | Op::MaxF32 { .. }
                | Op::ResizeLinearF32 { .. }
                | Op::WhereF32 { .. }
                | Op::Take { .. }
                | Op::PoolF32 { .. }
                | Op::GroupConvF32 { .. }
                | Op::DwF32 { .. }
                | Op::LayerNormF32 { .. }
                | Op::SoftmaxF32 { .. }
                | Op::TransposeF32 { .. }
                | Op::MatMulF32 { .. }
                | Op::MatMulDynI8 { .. }
                | Op::GatherF32 { .. } => {
                    return Err(unsupported(
                        op.name(),
                        "an op the tail trainer does not differentiate",
                    ))
                }
                Op::ConvF32 { .. } => {
                    return Err(unsupported(
                        "ConvF32",
                        "float convolutions in a tail are not supported yet",
                    ))
                }
            }
        }
        if net.features == 0 {
            return Err(Error::Invalid {
                what: alloc::format!(
                    "no global pooling after the cut point '{cut}': nothing to classify"
                ),
            });
        }
        for l in &net.layers {
            let bad = match *l {
                Layer::Pw {
                    x, y, cin, cout, ..
                } => {
                    net.slots[x].1 != cin
                        || net.slots[y].1 != cout
                        || net.slots[x].0 != net.slots[y].0
                }
                Layer::Dw { x, y, g, .. } => {
                    net.slots[x] != (g.h * g.w, g.c) || net.slots[y] != (g.oh * g.ow, g.c)
                }
                Layer::Add { a, b, y } => {
                    net.slots[a] != net.slots[b] || net.slots[a] != net.slots[y]
                }
                Layer::Gap { x, y } => net.slots[y] != (1, net.slots[x].1),
                Layer::Act { x, y, .. } => net.slots[x] != net.slots[y],
            };
            if bad {
                return Err(crate::plan::bad("tail shapes do not chain"));
            }
        }
        Ok(net)
    }

    pub fn cut_dims(&self) -> TapShape {
        TapShape {
            tokens: self.slots[0].0,
            dim: self.slots[0].1,
        }
    }

    pub fn feature_dim(&self) -> usize {
        self.slots[self.features].1
    }

    /// Whether slot `i` is read by one 1×1 layer and nothing else.
    pub fn pw_sole_reader(&self, i: usize) -> bool {
        self.readers(i) == 1
            && self
                .layers
                .iter()
                .any(|l| matches!(*l, Layer::Pw { x, .. } if x == i))
    }

    /// Layers that read slot `i`.
    pub fn readers(&self, i: usize) -> usize {
        self.layers
            .iter()
            .map(|l| match *l {
                Layer::Pw { x, .. } | Layer::Dw { x, .. } | Layer::Gap { x, .. } => {
                    (x == i) as usize
                }
                Layer::Act { x, .. } => (x == i) as usize,
                Layer::Add { a, b, .. } => (a == i) as usize + (b == i) as usize,
            })
            .sum()
    }
}
