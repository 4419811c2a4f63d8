//! Tuning the backbone's last blocks from the tap cache.
//!
//! The ops of the plan after a cut tap, up to the global pooling that makes the features,
//! become a float copy ([`TailNet`]): 1×1 and depthwise convolutions with their fused
//! clamps (ReLU6 as quantised), residual adds, activations and the pooling, weights
//! dequantised from the int8 plan. A cosine classifier on the pooled features, initialised
//! from the class prototypes, sits on top. Three variants train different parts of it:
//!
//! * `tail` — every weight and bias of the copy, and the classifier;
//! * `bias` (after TinyTL) — per-channel biases and scales of every convolution;
//! * `lora` — rank-`r` updates `ΔW = A·B·(2/r)` of the 1×1 convolutions.
//!
//! Everything before the cut stays the frozen int8 plan: its output at the cut is what the
//! tap cache holds, so a training step never runs the backbone.

use super::heads::TapDims;
use super::rng::Rng;
use super::train::Head;
use crate::error::{Error, Result};
use crate::plan::{DType, Op, Plan, Unary};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ops::Range;
use edgetune_kernels::ops::{I8Dst, I8Quant};
use edgetune_kernels::reference::ConvGeom;
use edgetune_kernels::{ops as kops, pack, Act, Kernels};

/// Which parameters of the tail are trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Full,
    Bias,
    Lora { rank: usize },
}

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

fn unsupported(op: &str, why: &str) -> Error {
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
                | Op::BinF32 { .. }
                | Op::ClampF32 { .. }
                | Op::SumF32 { .. }
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

    pub fn cut_dims(&self) -> TapDims {
        TapDims {
            tokens: self.slots[0].0,
            dim: self.slots[0].1,
        }
    }

    pub fn feature_dim(&self) -> usize {
        self.slots[self.features].1
    }
}

/// Where each trained tensor of a layer lives in the flat parameter vector.
#[derive(Clone, Debug, Default, PartialEq)]
struct PRanges {
    w: Option<Range<usize>>,
    b: Option<Range<usize>>,
    g: Option<Range<usize>>,
    a: Option<Range<usize>>,
    bb: Option<Range<usize>>,
}

/// The trainable tail with its classifier: a [`Head`] over the cut tap.
pub struct Tail {
    pub net: Arc<TailNet>,
    pub variant: Variant,
    pub classes: usize,
    /// Cosine classifier temperature.
    pub scale: f32,
    /// Learning-rate multiplier of the tail's own weights (the classifier gets 1).
    pub body_lr: f32,
    /// Unit-norm class prototypes (`classes × features`) that initialise the classifier.
    pub proto: Vec<f32>,
    /// Which of the taps passed to `forward` is the cut.
    pub tap: usize,
    pr: Vec<PRanges>,
    head: Range<usize>,
    n_params: usize,
    /// Per 1×1 layer: packed `W` (forward) and packed `Wᵀ` (input gradient).
    packs: Vec<(Range<usize>, Range<usize>)>,
    prep: RefCell<Vec<f32>>,
    sc: Scratch,
    kern: Kernels,
}

impl core::fmt::Debug for Tail {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Tail {{ cut: {}, variant: {:?}, classes: {}, params: {} }}",
            self.net.cut, self.variant, self.classes, self.n_params
        )
    }
}

impl Clone for Tail {
    fn clone(&self) -> Tail {
        let mut t = Tail::new(self.net.clone(), self.variant, self.classes);
        t.scale = self.scale;
        t.body_lr = self.body_lr;
        t.proto = self.proto.clone();
        t.tap = self.tap;
        t
    }
}

impl PartialEq for Tail {
    fn eq(&self, o: &Tail) -> bool {
        self.net == o.net
            && self.variant == o.variant
            && self.classes == o.classes
            && self.scale == o.scale
    }
}

/// Offsets of the per-example scratch.
#[derive(Clone, Debug, Default)]
struct Scratch {
    val: Vec<Range<usize>>,
    grad: Vec<Range<usize>>,
    z: Vec<Range<usize>>,
    fhat: Range<usize>,
    dw: Range<usize>,
    xt: Range<usize>,
    zpack: Range<usize>,
    dx: Range<usize>,
    len: usize,
}

struct Alloc(usize);
impl Alloc {
    fn take(&mut self, n: usize) -> Range<usize> {
        let r = self.0..self.0 + n;
        self.0 += n;
        r
    }
}

fn clamp_mask(y: f32, lo: f32, hi: f32) -> bool {
    y > lo && y < hi
}

fn act1(f: Act1, x: f32) -> (f32, f32) {
    match f {
        Act1::Relu => (x.max(0.0), (x > 0.0) as u8 as f32),
        Act1::Relu6 => (x.clamp(0.0, 6.0), (x > 0.0 && x < 6.0) as u8 as f32),
        Act1::HardSwish => {
            if x <= -3.0 {
                (0.0, 0.0)
            } else if x >= 3.0 {
                (x, 1.0)
            } else {
                (x * (x + 3.0) / 6.0, (2.0 * x + 3.0) / 6.0)
            }
        }
    }
}

impl Tail {
    pub fn new(net: Arc<TailNet>, variant: Variant, classes: usize) -> Tail {
        let mut a = Alloc(0);
        let mut pr = Vec::new();
        let mut packs = Vec::new();
        let mut pa = Alloc(0);
        for l in &net.layers {
            let mut r = PRanges::default();
            match (*l, variant) {
                (Layer::Pw { cin, cout, .. }, v) => {
                    match v {
                        Variant::Full => {
                            r.w = Some(a.take(cin * cout));
                            r.b = Some(a.take(cout));
                        }
                        Variant::Bias => {
                            r.g = Some(a.take(cout));
                            r.b = Some(a.take(cout));
                        }
                        Variant::Lora { rank } => {
                            r.a = Some(a.take(cin * rank));
                            r.bb = Some(a.take(rank * cout));
                        }
                    }
                    packs.push((
                        pa.take(pack::packed_f32_len(cin, cout)),
                        pa.take(pack::packed_f32_len(cout, cin)),
                    ));
                }
                (Layer::Dw { g, .. }, Variant::Full) => {
                    r.w = Some(a.take(g.kh * g.kw * g.c));
                    r.b = Some(a.take(g.c));
                }
                (Layer::Dw { g, .. }, Variant::Bias) => {
                    r.g = Some(a.take(g.c));
                    r.b = Some(a.take(g.c));
                }
                _ => {}
            }
            if packs.len() < pr.len() + 1 {
                packs.push((0..0, 0..0));
            }
            pr.push(r);
        }
        let head = a.take(classes * net.feature_dim());
        // Largest 1×1 weight, for the transposition / low-rank product buffer.
        let wmax = net
            .layers
            .iter()
            .map(|l| match *l {
                Layer::Pw { cin, cout, .. } => cin * cout,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let prep_len = pa.0 + 2 * wmax;
        let rank = match variant {
            Variant::Lora { rank } => rank,
            _ => 0,
        };
        let sc = Tail::scratch_layout(&net, wmax, rank);
        Tail {
            net,
            variant,
            classes,
            scale: 10.0,
            body_lr: 0.1,
            proto: Vec::new(),
            tap: 0,
            pr,
            head,
            n_params: a.0,
            packs,
            prep: RefCell::new(alloc::vec![0.0; prep_len]),
            sc,
            kern: Kernels::detect(),
        }
    }

    fn scratch_layout(net: &TailNet, wmax: usize, rank: usize) -> Scratch {
        let mut a = Alloc(0);
        let mut s = Scratch::default();
        for (i, &(t, c)) in net.slots.iter().enumerate() {
            s.val.push(if i == 0 { 0..0 } else { a.take(t * c) });
        }
        for (i, &(t, c)) in net.slots.iter().enumerate() {
            s.grad.push(if i == 0 { 0..0 } else { a.take(t * c) });
        }
        let (mut xt, mut zp, mut dx) = (0, 0, 0);
        for l in &net.layers {
            s.z.push(match *l {
                Layer::Pw { y, cin, cout, .. } => {
                    let t = net.slots[y].0;
                    // The low-rank gradient keeps dZ·Bᵀ and X·A (t × rank each) in xt.
                    xt = xt.max(cin * t).max(2 * t * rank);
                    zp = zp.max(pack::packed_f32_len(t, cout));
                    dx = dx.max(t * cin);
                    a.take(t * cout)
                }
                Layer::Dw { y, .. } => a.take(net.slots[y].0 * net.slots[y].1),
                _ => 0..0,
            });
        }
        s.fhat = a.take(net.feature_dim() + 1);
        // Order matters: `dweight` splits xt | zpack | dw.
        s.xt = a.take(xt);
        s.zpack = a.take(zp);
        s.dw = a.take(wmax);
        s.dx = a.take(dx);
        s.len = a.0;
        s
    }

    /// Bytes the tail holds besides parameters and scratch: the frozen weights and the
    /// packed weights of every step.
    pub fn fixed_bytes(&self) -> usize {
        4 * (self.net.frozen.len() + self.prep.borrow().len())
    }

    /// Unit-norm pooled features of the last `forward`.
    pub fn features<'a>(&self, s: &'a [f32]) -> &'a [f32] {
        &s[self.sc.fhat.start..self.sc.fhat.end - 1]
    }

    fn lora_scale(&self) -> f32 {
        match self.variant {
            Variant::Lora { rank } => 2.0 / rank.max(1) as f32,
            _ => 0.0,
        }
    }

    /// Effective weights of 1×1 layer `i` into `out` (`[cin][cout]`).
    fn weff(&self, i: usize, p: &[f32], out: &mut [f32]) {
        let Layer::Pw { cin, cout, w, .. } = self.net.layers[i] else {
            return;
        };
        let f = &self.net.frozen[w..w + cin * cout];
        match (self.variant, &self.pr[i]) {
            (Variant::Full, r) => out.copy_from_slice(&p[r.w.clone().unwrap_or(0..0)]),
            (
                Variant::Lora { rank },
                PRanges {
                    a: Some(ra),
                    bb: Some(rb),
                    ..
                },
            ) => {
                let (am, bm, s) = (&p[ra.clone()], &p[rb.clone()], self.lora_scale());
                out.copy_from_slice(f);
                for i in 0..cin {
                    let row = &mut out[i * cout..(i + 1) * cout];
                    for j in 0..rank {
                        let a = am[i * rank + j] * s;
                        if a != 0.0 {
                            let br = &bm[j * cout..(j + 1) * cout];
                            row.iter_mut().zip(br).for_each(|(o, b)| *o += a * b);
                        }
                    }
                }
            }
            _ => out.copy_from_slice(f),
        }
    }

    fn wdw<'a>(&'a self, i: usize, p: &'a [f32]) -> &'a [f32] {
        match (&self.pr[i].w, &self.net.layers[i]) {
            (Some(r), _) => &p[r.clone()],
            (None, Layer::Dw { g, w, .. }) => &self.net.frozen[*w..*w + g.kh * g.kw * g.c],
            _ => &[],
        }
    }

    fn bias<'a>(&'a self, i: usize, p: &'a [f32]) -> &'a [f32] {
        match (&self.pr[i].b, &self.net.layers[i]) {
            (Some(r), _) => &p[r.clone()],
            (None, Layer::Pw { b, cout, .. }) => &self.net.frozen[*b..*b + cout],
            (None, Layer::Dw { b, g, .. }) => &self.net.frozen[*b..*b + g.c],
            _ => &[],
        }
    }

    fn clamp_bounds(l: &Layer) -> (f32, f32) {
        match *l {
            Layer::Pw { lo, hi, .. } | Layer::Dw { lo, hi, .. } => (lo, hi),
            _ => (f32::NEG_INFINITY, f32::INFINITY),
        }
    }

    fn gemm(&self, mnk: (usize, usize, usize), a: &[f32], b: &[f32], c: &mut [f32]) {
        let (m, n, k) = mnk;
        // The lengths are sized by `scratch_layout` and `new`; a mismatch is a bug here.
        kops::gemm_f32(&self.kern, mnk, a, k, b, None, c, n, Act::None)
            .unwrap_or_else(|e| panic!("tail gemm {m}×{n}×{k}: {e}"));
    }
}

fn dw_forward(g: &DwGeom, x: &[f32], w: &[f32], z: &mut [f32]) {
    let c = g.c;
    z.fill(0.0);
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let zo = &mut z[(oy * g.ow + ox) * c..][..c];
            for ky in 0..g.kh {
                let iy = (oy * g.stride.0 + ky) as isize - g.pad.0 as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                for kx in 0..g.kw {
                    let ix = (ox * g.stride.1 + kx) as isize - g.pad.1 as isize;
                    if ix < 0 || ix >= g.w as isize {
                        continue;
                    }
                    let xi = &x[(iy as usize * g.w + ix as usize) * c..][..c];
                    let wk = &w[(ky * g.kw + kx) * c..][..c];
                    for ((o, a), b) in zo.iter_mut().zip(xi).zip(wk) {
                        *o += a * b;
                    }
                }
            }
        }
    }
}

/// Accumulates `dx` (when given) and `dw` (when given) of a depthwise convolution.
fn dw_backward(
    g: &DwGeom,
    x: &[f32],
    w: &[f32],
    dz: &[f32],
    mut dx: Option<&mut [f32]>,
    mut dw: Option<&mut [f32]>,
) {
    let c = g.c;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let d = &dz[(oy * g.ow + ox) * c..][..c];
            for ky in 0..g.kh {
                let iy = (oy * g.stride.0 + ky) as isize - g.pad.0 as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                for kx in 0..g.kw {
                    let ix = (ox * g.stride.1 + kx) as isize - g.pad.1 as isize;
                    if ix < 0 || ix >= g.w as isize {
                        continue;
                    }
                    let xo = (iy as usize * g.w + ix as usize) * c;
                    let wo = (ky * g.kw + kx) * c;
                    if let Some(dw) = dw.as_deref_mut() {
                        let (xi, dwk) = (&x[xo..xo + c], &mut dw[wo..wo + c]);
                        for ((o, a), b) in dwk.iter_mut().zip(xi).zip(d) {
                            *o += a * b;
                        }
                    }
                    if let Some(dx) = dx.as_deref_mut() {
                        let (wk, dxi) = (&w[wo..wo + c], &mut dx[xo..xo + c]);
                        for ((o, a), b) in dxi.iter_mut().zip(wk).zip(d) {
                            *o += a * b;
                        }
                    }
                }
            }
        }
    }
}

/// Two disjoint ranges of one buffer, the first read-only.
fn two<'a>(s: &'a mut [f32], r: &Range<usize>, w: &Range<usize>) -> (&'a [f32], &'a mut [f32]) {
    if r.end <= w.start {
        let (a, b) = s.split_at_mut(w.start);
        (&a[r.clone()], &mut b[..w.len()])
    } else {
        let (a, b) = s.split_at_mut(r.start);
        (&b[..r.len()], &mut a[w.clone()])
    }
}

impl Head for Tail {
    fn classes(&self) -> usize {
        self.classes
    }
    fn n_params(&self) -> usize {
        self.n_params
    }
    fn scratch_len(&self) -> usize {
        self.sc.len
    }
    fn fixed_bytes(&self) -> usize {
        Tail::fixed_bytes(self)
    }

    fn init(&self, rng: &mut Rng, p: &mut [f32]) {
        for (i, l) in self.net.layers.iter().enumerate() {
            let r = &self.pr[i];
            match *l {
                Layer::Pw {
                    cin, cout, w, b, ..
                } => {
                    if let Some(rw) = &r.w {
                        p[rw.clone()].copy_from_slice(&self.net.frozen[w..w + cin * cout]);
                    }
                    if let Some(rb) = &r.b {
                        p[rb.clone()].copy_from_slice(&self.net.frozen[b..b + cout]);
                    }
                    if let Some(rg) = &r.g {
                        p[rg.clone()].fill(1.0);
                    }
                    if let Some(ra) = &r.a {
                        let bound = 1.0 / libm::sqrtf(cin as f32);
                        p[ra.clone()]
                            .iter_mut()
                            .for_each(|v| *v = (2.0 * rng.f32() - 1.0) * bound);
                    }
                    if let Some(rb) = &r.bb {
                        p[rb.clone()].fill(0.0);
                    }
                }
                Layer::Dw { g, w, b, .. } => {
                    if let Some(rw) = &r.w {
                        p[rw.clone()].copy_from_slice(&self.net.frozen[w..w + g.kh * g.kw * g.c]);
                    }
                    if let Some(rb) = &r.b {
                        p[rb.clone()].copy_from_slice(&self.net.frozen[b..b + g.c]);
                    }
                    if let Some(rg) = &r.g {
                        p[rg.clone()].fill(1.0);
                    }
                }
                _ => {}
            }
        }
        let hw = &mut p[self.head.clone()];
        if self.proto.len() == hw.len() {
            hw.copy_from_slice(&self.proto);
        } else {
            hw.iter_mut()
                .for_each(|v| *v = (2.0 * rng.f32() - 1.0) * 0.01);
        }
    }

    fn lr_scales(&self, out: &mut [f32]) -> bool {
        out.fill(self.body_lr);
        out[self.head.clone()].fill(1.0);
        true
    }

    fn prepare(&self, p: &[f32]) {
        let mut prep = self.prep.borrow_mut();
        let n = prep.len();
        let wmax = (n - self
            .packs
            .iter()
            .map(|(a, b)| a.len() + b.len())
            .sum::<usize>())
            / 2;
        for (i, l) in self.net.layers.iter().enumerate() {
            let Layer::Pw { cin, cout, .. } = *l else {
                continue;
            };
            let (fr, br) = self.packs[i].clone();
            let (packs, tmp) = prep.split_at_mut(n - 2 * wmax);
            let (we, wt) = tmp.split_at_mut(wmax);
            let (we, wt) = (&mut we[..cin * cout], &mut wt[..cin * cout]);
            self.weff(i, p, we);
            pack::pack_f32(we, cin, cout, &mut packs[fr]);
            for r in 0..cin {
                for c in 0..cout {
                    wt[c * cin + r] = we[r * cout + c];
                }
            }
            pack::pack_f32(wt, cout, cin, &mut packs[br]);
        }
    }

    fn forward(&self, p: &[f32], x: &[&[f32]], s: &mut [f32], logits: &mut [f32]) {
        let prep = self.prep.borrow();
        let sc = &self.sc;
        let input = x[self.tap];
        for (i, l) in self.net.layers.iter().enumerate() {
            match *l {
                Layer::Pw {
                    x: xi,
                    y,
                    cin,
                    cout,
                    ..
                } => {
                    let t = self.net.slots[y].0;
                    let zr = sc.z[i].clone();
                    {
                        let (xv, z) = if xi == 0 {
                            (input, &mut s[zr.clone()])
                        } else {
                            two(s, &sc.val[xi], &zr)
                        };
                        self.gemm((t, cout, cin), xv, &prep[self.packs[i].0.clone()], z);
                    }
                    self.affine(i, p, s, y);
                }
                Layer::Dw { x: xi, y, g, .. } => {
                    let zr = sc.z[i].clone();
                    {
                        let (xv, z) = if xi == 0 {
                            (input, &mut s[zr.clone()])
                        } else {
                            two(s, &sc.val[xi], &zr)
                        };
                        dw_forward(&g, xv, self.wdw(i, p), z);
                    }
                    self.affine(i, p, s, y);
                }
                Layer::Add { a, b, y } => {
                    let yr = sc.val[y].clone();
                    for k in 0..yr.len() {
                        let va = if a == 0 {
                            input[k]
                        } else {
                            s[sc.val[a].start + k]
                        };
                        let vb = if b == 0 {
                            input[k]
                        } else {
                            s[sc.val[b].start + k]
                        };
                        s[yr.start + k] = va + vb;
                    }
                }
                Layer::Gap { x: xi, y } => {
                    let (t, c) = self.net.slots[xi];
                    let yr = sc.val[y].clone();
                    s[yr.clone()].fill(0.0);
                    for tok in 0..t {
                        for ch in 0..c {
                            let v = if xi == 0 {
                                input[tok * c + ch]
                            } else {
                                s[sc.val[xi].start + tok * c + ch]
                            };
                            s[yr.start + ch] += v;
                        }
                    }
                    s[yr].iter_mut().for_each(|v| *v /= t as f32);
                }
                Layer::Act { x: xi, y, f } => {
                    let yr = sc.val[y].clone();
                    for k in 0..yr.len() {
                        let v = if xi == 0 {
                            input[k]
                        } else {
                            s[sc.val[xi].start + k]
                        };
                        s[yr.start + k] = act1(f, v).0;
                    }
                }
            }
        }
        // Cosine classifier.
        let fdim = self.net.feature_dim();
        let (f, fh) = two(s, &sc.val[self.net.features], &sc.fhat);
        let norm = libm::sqrtf(f.iter().map(|v| v * v).sum::<f32>()) + 1e-6;
        for (o, v) in fh.iter_mut().zip(f) {
            *o = v / norm;
        }
        fh[fdim] = norm;
        let hw = &p[self.head.clone()];
        for (k, l) in logits.iter_mut().enumerate().take(self.classes) {
            let row = &hw[k * fdim..(k + 1) * fdim];
            *l = self.scale * row.iter().zip(&fh[..fdim]).map(|(a, b)| a * b).sum::<f32>();
        }
    }

    fn backward(&self, p: &[f32], x: &[&[f32]], s: &mut [f32], dl: &[f32], g: &mut [f32]) {
        let prep = self.prep.borrow();
        let sc = &self.sc;
        let input = x[self.tap];
        let fdim = self.net.feature_dim();
        for r in &sc.grad {
            s[r.clone()].fill(0.0);
        }
        // Classifier and the normalisation.
        {
            let hw = &p[self.head.clone()];
            let fh = &s[sc.fhat.clone()];
            let norm = fh[fdim];
            let gh = &mut g[self.head.clone()];
            let mut dot = 0.0;
            for k in 0..self.classes {
                let d = self.scale * dl[k];
                for i in 0..fdim {
                    gh[k * fdim + i] += d * fh[i];
                }
            }
            let gr = sc.grad[self.net.features].clone();
            for i in 0..fdim {
                let mut v = 0.0;
                for k in 0..self.classes {
                    v += self.scale * dl[k] * hw[k * fdim + i];
                }
                s[gr.start + i] = v;
                dot += v * s[sc.fhat.start + i];
            }
            for i in 0..fdim {
                let fhi = s[sc.fhat.start + i];
                s[gr.start + i] = (s[gr.start + i] - fhi * dot) / norm;
            }
        }
        for (i, l) in self.net.layers.iter().enumerate().rev() {
            match *l {
                Layer::Gap { x: xi, y } => {
                    if xi == 0 {
                        continue;
                    }
                    let (t, c) = self.net.slots[xi];
                    let (dy, dx) = two(s, &sc.grad[y], &sc.grad[xi]);
                    for tok in 0..t {
                        for ch in 0..c {
                            dx[tok * c + ch] += dy[ch] / t as f32;
                        }
                    }
                }
                Layer::Add { a, b, y } => {
                    for src in [a, b] {
                        if src != 0 {
                            let (dy, dx) = two(s, &sc.grad[y], &sc.grad[src]);
                            dx.iter_mut().zip(dy).for_each(|(o, v)| *o += v);
                        }
                    }
                }
                Layer::Act { x: xi, y, f } => {
                    if xi == 0 {
                        continue;
                    }
                    let (n, gy, gx, vx) = (
                        sc.val[y].len(),
                        sc.grad[y].start,
                        sc.grad[xi].start,
                        sc.val[xi].start,
                    );
                    for k in 0..n {
                        s[gx + k] += s[gy + k] * act1(f, s[vx + k]).1;
                    }
                }
                Layer::Pw {
                    x: xi,
                    y,
                    cin,
                    cout,
                    ..
                } => {
                    let t = self.net.slots[y].0;
                    self.affine_back(i, p, s, g, y);
                    // Now grad[y] holds dz.
                    let dzr = sc.grad[y].clone();
                    if self.pr[i].w.is_some() || self.pr[i].a.is_some() {
                        self.dweight(i, p, input, s, g, (t, cin, cout));
                    }
                    if xi != 0 {
                        let (dz, dx) = two(s, &dzr, &sc.dx);
                        let dx = &mut dx[..t * cin];
                        self.gemm((t, cin, cout), dz, &prep[self.packs[i].1.clone()], dx);
                        let gx = sc.grad[xi].start;
                        let dxs = sc.dx.start;
                        for k in 0..t * cin {
                            s[gx + k] += s[dxs + k];
                        }
                    }
                }
                Layer::Dw {
                    x: xi, y, g: geo, ..
                } => {
                    self.affine_back(i, p, s, g, y);
                    let dzr = sc.grad[y].clone();
                    let w = self.wdw(i, p);
                    if let Some(rw) = self.pr[i].w.clone() {
                        let xv: &[f32] = if xi == 0 {
                            input
                        } else {
                            &s[sc.val[xi].clone()]
                        };
                        dw_backward(&geo, xv, w, &s[dzr.clone()], None, Some(&mut g[rw]));
                    }
                    if xi != 0 {
                        let (dz, dx) = two(s, &dzr, &sc.grad[xi]);
                        dw_backward(&geo, &[], w, dz, Some(dx), None);
                    }
                }
            }
        }
    }
}

impl Tail {
    /// `y = clamp(γ·z + b)` of conv layer `i` from its stored `z`.
    fn affine(&self, i: usize, p: &[f32], s: &mut [f32], y: usize) {
        let (lo, hi) = Tail::clamp_bounds(&self.net.layers[i]);
        let b = self.bias(i, p);
        let gam = self.pr[i].g.clone().map(|r| &p[r]);
        let c = b.len();
        let (z, yv) = two(s, &self.sc.z[i], &self.sc.val[y]);
        for (k, (o, zv)) in yv.iter_mut().zip(z).enumerate() {
            let ch = k % c;
            let gm = gam.map_or(1.0, |g| g[ch]);
            *o = (gm * zv + b[ch]).clamp(lo, hi);
        }
    }

    /// Turns `grad[y]` into `dz` of conv layer `i`, accumulating the bias and scale
    /// gradients.
    fn affine_back(&self, i: usize, p: &[f32], s: &mut [f32], g: &mut [f32], y: usize) {
        let (lo, hi) = Tail::clamp_bounds(&self.net.layers[i]);
        let c = self.bias(i, p).len();
        let gam = self.pr[i].g.clone();
        let (yr, gr, zr) = (
            self.sc.val[y].clone(),
            self.sc.grad[y].clone(),
            self.sc.z[i].clone(),
        );
        for k in 0..gr.len() {
            let ch = k % c;
            let mut d = s[gr.start + k];
            if !clamp_mask(s[yr.start + k], lo, hi) {
                d = 0.0;
            }
            if let Some(rb) = &self.pr[i].b {
                g[rb.start + ch] += d;
            }
            if let Some(rg) = &gam {
                g[rg.start + ch] += d * s[zr.start + k];
                d *= p[rg.start + ch];
            }
            s[gr.start + k] = d;
        }
    }

    /// Weight gradient of 1×1 layer `i` from `x` and `dz = grad[y]`: the full `dW`, or
    /// its projections onto the low-rank factors.
    fn dweight(
        &self,
        i: usize,
        p: &[f32],
        input: &[f32],
        s: &mut [f32],
        g: &mut [f32],
        (t, cin, cout): (usize, usize, usize),
    ) {
        let Layer::Pw { x: xi, y, .. } = self.net.layers[i] else {
            return;
        };
        let sc = &self.sc;
        if let (
            Variant::Lora { rank },
            PRanges {
                a: Some(ra),
                bb: Some(rb),
                ..
            },
        ) = (self.variant, &self.pr[i])
        {
            // ΔW = k·A·B, dW = Xᵀ·dZ: dA = k·Xᵀ·(dZ·Bᵀ) and dB = k·(X·A)ᵀ·dZ, without
            // forming the cin × cout dW (t·rank·(cin + cout) products instead of
            // t·cin·cout).
            let k = self.lora_scale();
            let (am, bm) = (&p[ra.clone()], &p[rb.clone()]);
            let xo = if xi == 0 {
                None
            } else {
                Some(sc.val[xi].start)
            };
            let (zb, xa) = (sc.xt.start, sc.xt.start + t * rank);
            for tok in 0..t {
                for j in 0..rank {
                    let dz = &s[sc.grad[y].start + tok * cout..][..cout];
                    let v = super::nn::dot(dz, &bm[j * cout..][..cout]);
                    s[zb + tok * rank + j] = v;
                    let x = match xo {
                        None => &input[tok * cin..][..cin],
                        Some(o) => &s[o + tok * cin..][..cin],
                    };
                    let mut u = 0.0;
                    for (r, &xv) in x.iter().enumerate() {
                        u += xv * am[r * rank + j];
                    }
                    s[xa + tok * rank + j] = u;
                }
            }
            for tok in 0..t {
                for r in 0..cin {
                    let xv = match xo {
                        None => input[tok * cin + r],
                        Some(o) => s[o + tok * cin + r],
                    };
                    for j in 0..rank {
                        g[ra.start + r * rank + j] += k * xv * s[zb + tok * rank + j];
                    }
                }
                for j in 0..rank {
                    let a = k * s[xa + tok * rank + j];
                    let dz = &s[sc.grad[y].start + tok * cout..][..cout];
                    let gb = &mut g[rb.start + j * cout..][..cout];
                    gb.iter_mut().zip(dz).for_each(|(o, v)| *o += a * v);
                }
            }
            return;
        }
        // xᵀ into `xt`, dz packed into `zpack`, then dW = xᵀ·dz into `dw`.
        for tok in 0..t {
            for ch in 0..cin {
                let v = if xi == 0 {
                    input[tok * cin + ch]
                } else {
                    s[sc.val[xi].start + tok * cin + ch]
                };
                s[sc.xt.start + ch * t + tok] = v;
            }
        }
        {
            let (dz, zp) = two(s, &sc.grad[y], &sc.zpack);
            pack::pack_f32(dz, t, cout, zp);
        }
        {
            let (head, rest) = s.split_at_mut(sc.zpack.start);
            let xt = &head[sc.xt.start..sc.xt.start + cin * t];
            let (zp, rest) = rest.split_at_mut(sc.zpack.len());
            let dw = &mut rest[sc.dw.start - sc.zpack.end..][..cin * cout];
            self.gemm((cin, cout, t), xt, zp, dw);
        }
        let dw = &s[sc.dw.start..sc.dw.start + cin * cout];
        if let Some(rw) = &self.pr[i].w {
            g[rw.clone()].iter_mut().zip(dw).for_each(|(o, v)| *o += v);
        }
    }
}

/// A trained tail re-quantised to int8 for serving: per-output-channel symmetric weights,
/// activation ranges calibrated on the support set, run on the int8 kernels; the cosine
/// classifier stays in float.
pub struct TailQ {
    layers: Vec<QLayer>,
    slots: Vec<(usize, usize)>,
    q: Vec<Q8>,
    features: usize,
    head: Vec<f32>,
    classes: usize,
    scale: f32,
    kern: Kernels,
}

type Q8 = edgetune_kernels::elementwise::Q8;

enum QLayer {
    Pw {
        x: usize,
        y: usize,
        geom: ConvGeom,
        w: Vec<i8>,
        colsum: Vec<i32>,
        bias: Vec<i32>,
        mult: Vec<f32>,
    },
    Dw {
        x: usize,
        y: usize,
        geom: ConvGeom,
        w: Vec<i16>,
        bias: Vec<i32>,
        mult: Vec<f32>,
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
}

fn range_q(lo: f32, hi: f32) -> Q8 {
    let (lo, hi) = (lo.min(0.0), hi.max(lo + 1e-6).max(1e-6));
    let scale = (hi - lo) / 255.0;
    Q8 {
        scale,
        zero: libm::roundf(-lo / scale).clamp(0.0, 255.0) as i32,
    }
}

/// Per-output-channel symmetric int8 of `w` (`rows × cols`, channel = column), each column
/// scaled by `gamma` first; returns the weights and `s_w`.
fn quant_cols(w: &[f32], rows: usize, cols: usize, gamma: Option<&[f32]>) -> (Vec<i8>, Vec<f32>) {
    let g = |c: usize| gamma.map_or(1.0, |g| g[c]);
    let mut sw = alloc::vec![0.0f32; cols];
    for r in 0..rows {
        for c in 0..cols {
            sw[c] = sw[c].max((w[r * cols + c] * g(c)).abs());
        }
    }
    sw.iter_mut()
        .for_each(|s| *s = if *s > 0.0 { *s / 127.0 } else { 1.0 });
    let q = (0..rows * cols)
        .map(|i| {
            let c = i % cols;
            libm::roundf(w[i] * g(c) / sw[c]).clamp(-127.0, 127.0) as i8
        })
        .collect();
    (q, sw)
}

impl TailQ {
    /// Quantises `tail` with trained `params`, calibrating every activation on `calib`
    /// (cut-tap values of the support set). `cut_q` is the plan's quantisation of the cut.
    pub fn new(tail: &Tail, params: &[f32], calib: &[&[f32]], cut_q: Q8) -> Result<TailQ> {
        let ranges = Self::calibrate(tail, params, calib)?;
        Self::with_ranges(tail, params, &ranges, cut_q)
    }

    /// The activation range `(lo, hi)` of every tail slot over `calib` (slot 0, the cut,
    /// keeps the plan's quantisation). An adapter stores these so an int8 tail is rebuilt
    /// identically without the support set.
    pub fn calibrate(tail: &Tail, params: &[f32], calib: &[&[f32]]) -> Result<Vec<(f32, f32)>> {
        let net = &tail.net;
        tail.prepare(params);
        let mut lo = alloc::vec![f32::INFINITY; net.slots.len()];
        let mut hi = alloc::vec![f32::NEG_INFINITY; net.slots.len()];
        let mut s = alloc::vec![0.0; tail.scratch_len()];
        let mut logits = alloc::vec![0.0; tail.classes];
        for x in calib {
            let mut xs: heapless::Vec<&[f32], 16> = heapless::Vec::new();
            for _ in 0..=tail.tap {
                let _ = xs.push(x);
            }
            tail.forward(params, &xs, &mut s, &mut logits);
            for (i, r) in tail.sc.val.iter().enumerate().skip(1) {
                for &v in &s[r.clone()] {
                    lo[i] = lo[i].min(v);
                    hi[i] = hi[i].max(v);
                }
            }
        }
        if calib.is_empty() || lo.iter().skip(1).chain(&hi).any(|v| v.is_nan()) {
            return Err(Error::Invalid {
                what: "int8 tail: no calibration examples".into(),
            });
        }
        Ok(lo.into_iter().zip(hi).collect())
    }

    /// Quantises `tail` with trained `params` and the activation `ranges` of
    /// [`calibrate`](Self::calibrate).
    pub fn with_ranges(
        tail: &Tail,
        params: &[f32],
        ranges: &[(f32, f32)],
        cut_q: Q8,
    ) -> Result<TailQ> {
        let net = &tail.net;
        if ranges.len() != net.slots.len()
            || ranges
                .iter()
                .skip(1)
                .any(|r| !(r.0.is_finite() && r.1.is_finite()))
            || params.len() != tail.n_params()
        {
            return Err(Error::Invalid {
                what: alloc::format!(
                    "int8 tail: {} activation ranges for {} slots",
                    ranges.len(),
                    net.slots.len()
                ),
            });
        }
        tail.prepare(params);
        let mut q: Vec<Q8> = ranges.iter().map(|&(lo, hi)| range_q(lo, hi)).collect();
        q[0] = cut_q;
        let mut weff = alloc::vec![0.0; net.frozen.len().max(1)];
        let mut layers = Vec::new();
        for (i, l) in net.layers.iter().enumerate() {
            let gamma = tail.pr[i].g.clone().map(|r| &params[r]);
            layers.push(match *l {
                Layer::Pw {
                    x, y, cin, cout, ..
                } => {
                    let (t, _) = net.slots[y];
                    tail.weff(i, params, &mut weff[..cin * cout]);
                    let (wq, sw) = quant_cols(&weff[..cin * cout], cin, cout, gamma);
                    let mut w = alloc::vec![0i8; pack::packed_i8_len(cin, cout)];
                    let mut colsum = alloc::vec![0i32; pack::i8_cols(cout)];
                    pack::pack_i8_with(cin, cout, |k, c| wq[k * cout + c], &mut w, &mut colsum);
                    let b = tail.bias(i, params);
                    let acc: Vec<f32> = sw.iter().map(|s| s * q[x].scale).collect();
                    QLayer::Pw {
                        x,
                        y,
                        geom: ConvGeom {
                            h: t,
                            w: 1,
                            ic: cin,
                            oc: cout,
                            kh: 1,
                            kw: 1,
                            stride_h: 1,
                            stride_w: 1,
                            dil_h: 1,
                            dil_w: 1,
                            pad_top: 0,
                            pad_left: 0,
                            pad_bottom: 0,
                            pad_right: 0,
                            groups: 1,
                        },
                        w,
                        colsum,
                        bias: (0..cout)
                            .map(|c| libm::roundf(b[c] / acc[c]) as i32)
                            .collect(),
                        mult: acc.iter().map(|a| a / q[y].scale).collect(),
                    }
                }
                Layer::Dw { x, y, g, .. } => {
                    let taps = g.kh * g.kw;
                    let (wq, sw) = quant_cols(tail.wdw(i, params), taps, g.c, gamma);
                    let b = tail.bias(i, params);
                    let acc: Vec<f32> = sw.iter().map(|s| s * q[x].scale).collect();
                    QLayer::Dw {
                        x,
                        y,
                        geom: ConvGeom {
                            h: g.h,
                            w: g.w,
                            ic: g.c,
                            oc: g.c,
                            kh: g.kh,
                            kw: g.kw,
                            stride_h: g.stride.0,
                            stride_w: g.stride.1,
                            dil_h: 1,
                            dil_w: 1,
                            pad_top: g.pad.0,
                            pad_left: g.pad.1,
                            pad_bottom: (g.oh - 1) * g.stride.0 + g.kh
                                - g.h
                                - g.pad.0.min((g.oh - 1) * g.stride.0 + g.kh - g.h),
                            pad_right: (g.ow - 1) * g.stride.1 + g.kw
                                - g.w
                                - g.pad.1.min((g.ow - 1) * g.stride.1 + g.kw - g.w),
                            groups: g.c,
                        },
                        w: wq.iter().map(|&v| v as i16).collect(),
                        bias: (0..g.c)
                            .map(|c| libm::roundf(b[c] / acc[c]) as i32)
                            .collect(),
                        mult: acc.iter().map(|a| a / q[y].scale).collect(),
                    }
                }
                Layer::Add { a, b, y } => QLayer::Add { a, b, y },
                Layer::Gap { x, y } => QLayer::Gap { x, y },
                Layer::Act { .. } => {
                    return Err(unsupported(
                        "Act",
                        "int8 serving of a tail with float activations",
                    ))
                }
            });
        }
        Ok(TailQ {
            layers,
            slots: net.slots.clone(),
            q,
            features: net.features,
            head: params[tail.head.clone()].to_vec(),
            classes: tail.classes,
            scale: tail.scale,
            kern: Kernels::detect(),
        })
    }

    /// Class scores of one example from its cut tap.
    pub fn scores(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let n0 = self.slots[0].0 * self.slots[0].1;
        if x.len() != n0 || out.len() < self.classes {
            return Err(Error::ShapeMismatch {
                op: "int8 tail".into(),
                expected: alloc::vec![n0, self.classes],
                got: alloc::vec![x.len(), out.len()],
            });
        }
        let mut act: Vec<Vec<u8>> = self
            .slots
            .iter()
            .map(|&(t, c)| alloc::vec![0u8; t * c])
            .collect();
        let q0 = self.q[0];
        for (o, &v) in act[0].iter_mut().zip(x) {
            *o = libm::roundf(v / q0.scale + q0.zero as f32).clamp(0.0, 255.0) as u8;
        }
        for l in &self.layers {
            match l {
                QLayer::Pw {
                    x,
                    y,
                    geom,
                    w,
                    colsum,
                    bias,
                    mult,
                } => {
                    let (src, dst) = split2(&mut act, *x, *y);
                    let qi = I8Quant {
                        a_zero: self.q[*x].zero,
                        a_signed: false,
                        colsum,
                        bias: Some(bias),
                        scale: mult,
                        out: edgetune_kernels::I8Out::U8,
                        y_zero: self.q[*y].zero,
                        qmin: 0,
                        qmax: 255,
                    };
                    kops::conv_i8(&self.kern, geom, src, w, &qi, &mut [], I8Dst::U8(dst))?;
                }
                QLayer::Dw {
                    x,
                    y,
                    geom,
                    w,
                    bias,
                    mult,
                } => {
                    let (src, dst) = split2(&mut act, *x, *y);
                    kops::depthwise_i8(
                        &self.kern,
                        geom,
                        src,
                        self.q[*x].zero,
                        w,
                        Some(bias),
                        mult,
                        (self.q[*y].zero, 0, 255),
                        dst,
                    )?;
                }
                QLayer::Add { a, b, y } => {
                    let mut out = core::mem::take(&mut act[*y]);
                    edgetune_kernels::elementwise::add_u8(
                        &act[*a], self.q[*a], &act[*b], self.q[*b], &mut out, self.q[*y],
                    );
                    act[*y] = out;
                }
                QLayer::Gap { x, y } => {
                    let (t, c) = self.slots[*x];
                    let (src, dst) = split2(&mut act, *x, *y);
                    edgetune_kernels::elementwise::global_avg_pool_u8(
                        src, t, c, self.q[*x], dst, self.q[*y],
                    );
                }
            }
        }
        let qf = self.q[self.features];
        let f: Vec<f32> = act[self.features]
            .iter()
            .map(|&v| (v as i32 - qf.zero) as f32 * qf.scale)
            .collect();
        let norm = libm::sqrtf(f.iter().map(|v| v * v).sum::<f32>()) + 1e-6;
        let d = f.len();
        for (k, o) in out.iter_mut().enumerate().take(self.classes) {
            let row = &self.head[k * d..(k + 1) * d];
            *o = self.scale * row.iter().zip(&f).map(|(a, b)| a * b).sum::<f32>() / norm;
        }
        Ok(())
    }
}

/// Input slot `x` and output slot `y` (`x != y`) of the activation list.
fn split2(act: &mut [Vec<u8>], x: usize, y: usize) -> (&[u8], &mut [u8]) {
    if x < y {
        let (a, b) = act.split_at_mut(y);
        (&a[x], &mut b[0])
    } else {
        let (a, b) = act.split_at_mut(x);
        (&b[0], &mut a[y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::nn::softmax_ce;

    /// cut (4×4×3) → 1×1 3→6 ReLU6 → depthwise 3×3 ReLU6 → 1×1 6→3 → + cut → hard-swish
    /// → 1×1 3→5 → depthwise 3×3 stride 2 → pool.
    fn net() -> TailNet {
        let mut r = Rng::new(5);
        let mut frozen = Vec::new();
        let mut take = |n: usize, scale: f32| {
            let o = frozen.len();
            frozen.extend((0..n).map(|_| (r.f32() * 2.0 - 1.0) * scale));
            o
        };
        let dw = |c, stride, oh| DwGeom {
            c,
            h: 4,
            w: 4,
            kh: 3,
            kw: 3,
            stride: (stride, stride),
            pad: (1, 1),
            oh,
            ow: oh,
        };
        let inf = f32::INFINITY;
        let layers = alloc::vec![
            Layer::Pw {
                x: 0,
                y: 1,
                cin: 3,
                cout: 6,
                w: take(18, 0.8),
                b: take(6, 0.3),
                lo: 0.0,
                hi: 6.0
            },
            Layer::Dw {
                x: 1,
                y: 2,
                g: dw(6, 1, 4),
                w: take(54, 0.5),
                b: take(6, 0.3),
                lo: 0.0,
                hi: 6.0
            },
            Layer::Pw {
                x: 2,
                y: 3,
                cin: 6,
                cout: 3,
                w: take(18, 0.8),
                b: take(3, 0.3),
                lo: -inf,
                hi: inf
            },
            Layer::Add { a: 3, b: 0, y: 4 },
            Layer::Act {
                x: 4,
                y: 5,
                f: Act1::HardSwish
            },
            Layer::Pw {
                x: 5,
                y: 6,
                cin: 3,
                cout: 5,
                w: take(15, 0.8),
                b: take(5, 0.3),
                lo: -inf,
                hi: inf
            },
            Layer::Dw {
                x: 6,
                y: 7,
                g: dw(5, 2, 2),
                w: take(45, 0.5),
                b: take(5, 0.3),
                lo: -inf,
                hi: inf
            },
            Layer::Gap { x: 7, y: 8 },
        ];
        TailNet {
            cut: "cut".into(),
            layers,
            slots: alloc::vec![
                (16, 3),
                (16, 6),
                (16, 6),
                (16, 3),
                (16, 3),
                (16, 3),
                (16, 5),
                (4, 5),
                (1, 5)
            ],
            frozen,
            features: 8,
        }
    }

    fn check(variant: Variant) {
        let t = Tail::new(Arc::new(net()), variant, 3);
        let mut rng = Rng::new(9);
        let x: Vec<f32> = (0..48).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let mut p = alloc::vec![0.0; t.n_params()];
        t.init(&mut rng, &mut p);
        // Away from the init's symmetric points (zero low-rank factors, unit scales).
        p.iter_mut().for_each(|v| *v += 0.2 * (rng.f32() - 0.5));
        let loss = |p: &[f32]| {
            t.prepare(p);
            let mut s = alloc::vec![0.0; t.scratch_len()];
            let (mut z, mut d) = ([0.0; 3], [0.0; 3]);
            t.forward(p, &[&x], &mut s, &mut z);
            softmax_ce(&z, 1, 0.1, &mut d)
        };
        t.prepare(&p);
        let mut s = alloc::vec![0.0; t.scratch_len()];
        let (mut z, mut d) = ([0.0; 3], [0.0; 3]);
        t.forward(&p, &[&x], &mut s, &mut z);
        softmax_ce(&z, 1, 0.1, &mut d);
        let mut g = alloc::vec![0.0; t.n_params()];
        t.backward(&p, &[&x], &mut s, &d, &mut g);
        // Clamps have kinks: a step that crosses one is retried smaller.
        for i in 0..p.len() {
            let v0 = p[i];
            let mut err = f32::INFINITY;
            let mut fd = 0.0;
            for eps in [1e-3f32, 2e-4] {
                p[i] = v0 + eps;
                let lp = loss(&p);
                p[i] = v0 - eps;
                let lm = loss(&p);
                p[i] = v0;
                fd = (lp - lm) / (2.0 * eps);
                err = err.min((fd - g[i]).abs() - 3e-2 * fd.abs());
            }
            assert!(
                err < 2e-3,
                "{variant:?} param {i}: fd {fd} analytic {}",
                g[i]
            );
        }
        // Every trained body tensor gets a gradient, not only the classifier.
        let body: f32 = g[..t.head.start].iter().map(|v| v.abs()).sum();
        assert!(body > 1e-3, "{variant:?}: no gradient reaches the tail");
    }

    #[test]
    fn full_tail_gradient_matches_finite_differences() {
        check(Variant::Full);
    }

    #[test]
    fn bias_tail_gradient_matches_finite_differences() {
        check(Variant::Bias);
    }

    #[test]
    fn lora_tail_gradient_matches_finite_differences() {
        check(Variant::Lora { rank: 2 });
    }

    #[test]
    fn hard_swish_and_relu6_derivatives() {
        for f in [Act1::Relu, Act1::Relu6, Act1::HardSwish] {
            for i in 0..200 {
                let x = -8.0 + i as f32 * 0.0813;
                let e = 1e-3;
                let fd = (act1(f, x + e).0 - act1(f, x - e).0) / (2.0 * e);
                assert!((fd - act1(f, x).1).abs() < 1e-2, "{f:?} at {x}: {fd}");
            }
        }
    }
}
