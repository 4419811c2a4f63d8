//! Runs a plan on the kernels. All memory is the arena sized at import: `run` allocates
//! nothing.

pub use crate::arena::plan_arena;
use crate::error::{Error, Result};
use crate::par::{self, Par};
use crate::plan::{
    AlignedBytes, BinOp, Op, Plan, PlanView, Src, Tables, TensorMeta, Unary, CHAIN_WORDS,
};
use alloc::format;
use core::ops::Range;
use edgetune_kernels::ops::{self as kops, I8Dst, I8Quant, UnaryF32};
use edgetune_kernels::reference::ConvGeom;
use edgetune_kernels::{Act, I8Out, Kernels};

enum Arena<'m> {
    Owned(AlignedBytes),
    Borrowed(&'m mut [u8]),
}

/// The plan an executor runs: borrowed (a plan mapped in place, e.g. from flash), shared
/// (the executor keeps it alive; front ends hold no borrow across calls), or a view whose
/// tables are read in place too (no heap at all).
#[derive(Clone)]
enum PlanRef<'p> {
    Borrowed(&'p Plan<'p>),
    Shared(alloc::sync::Arc<Plan<'p>>),
    View(&'p PlanView<'p>),
}

impl<'p> PlanRef<'p> {
    fn owned(&self) -> Option<&Plan<'p>> {
        match self {
            PlanRef::Borrowed(p) => Some(p),
            PlanRef::Shared(p) => Some(p),
            PlanRef::View(_) => None,
        }
    }
    fn tables(&self) -> &(dyn TensorTable + Sync) {
        match self {
            PlanRef::Borrowed(p) => *p,
            PlanRef::Shared(p) => &**p,
            PlanRef::View(v) => *v,
        }
    }
    fn arena_bytes(&self) -> usize {
        self.tables().header_ref().arena_bytes as usize
    }
    #[cfg(feature = "std")]
    fn op_count(&self) -> usize {
        match self {
            PlanRef::View(v) => v.op_count(),
            p => p.owned().map_or(0, |p| p.ops.len()),
        }
    }
}

/// The object-safe part of [`Tables`] the executor uses.
trait TensorTable {
    fn header_ref(&self) -> &crate::plan::Header;
    fn meta(&self, id: u32) -> TensorMeta;
    fn image_ref(&self) -> &[u8];
}

impl<T: Tables> TensorTable for T {
    fn header_ref(&self) -> &crate::plan::Header {
        self.header()
    }
    fn meta(&self, id: u32) -> TensorMeta {
        self.tensor(id)
    }
    fn image_ref(&self) -> &[u8] {
        self.image()
    }
}

/// Either plan behind one type, so the executor's op dispatch is compiled once (a
/// microcontroller's flash holds one copy, whichever plan it runs).
struct Dyn<'a>(&'a (dyn TensorTable + Sync));

impl Tables for Dyn<'_> {
    fn header(&self) -> &crate::plan::Header {
        self.0.header_ref()
    }
    fn image(&self) -> &[u8] {
        self.0.image_ref()
    }
    fn tensor_count(&self) -> u32 {
        0
    }
    fn tensor(&self, id: u32) -> TensorMeta {
        self.0.meta(id)
    }
}

fn arena_mut<'a>(a: &'a mut Arena<'_>) -> &'a mut [u8] {
    match a {
        Arena::Owned(a) => a.as_mut(),
        Arena::Borrowed(a) => a,
    }
}

/// `fn $name(kern, args)`: `$body(args)` compiled for the widest x86 vectors the kernel
/// tier uses (AVX-512F or AVX2), else as it is. The same source, so the same IEEE
/// operations in the same order (Rust fuses no multiply-add unasked): every version
/// gives the same bits (`tests::widened_loops_match_the_plain_ones`).
macro_rules! widened {
    ($vis:vis $name:ident($($a:ident: $t:ty),*) $(-> $ret:ty)? => $body:ident) => {
        $vis fn $name(kern: &Kernels, $($a: $t),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use edgetune_kernels::registry::Tier;
                #[target_feature(enable = "avx512f")]
                unsafe fn w512($($a: $t),*) $(-> $ret)? {
                    $body($($a),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn w256($($a: $t),*) $(-> $ret)? {
                    $body($($a),*)
                }
                match kern.ew.tier {
                    // SAFETY: the tier was chosen because the CPU has its features.
                    Tier::Avx512 | Tier::Avx512Vnni => return unsafe { w512($($a),*) },
                    // SAFETY: as above.
                    Tier::Avx2 | Tier::AvxVnni => return unsafe { w256($($a),*) },
                    _ => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = kern;
            $body($($a),*)
        }
    };
}

pub(crate) use widened;

/// Whether every value is finite: the largest magnitude's bits below infinity's (an
/// integer maximum, which vectorises; NaN's bits lie above infinity's).
#[inline(always)]
fn finite_body(x: &[f32]) -> bool {
    x.iter().fold(0u32, |a, v| a.max(v.to_bits() & 0x7fff_ffff)) < 0x7f80_0000
}

widened!(pub(crate) all_finite(x: &[f32]) -> bool => finite_body);

/// The reference tier's kernels and those of each x86 tier `widened!` compiles for that
/// the CPU has, with a SKIP line for each it lacks: what the tests of widened loops run.
#[cfg(all(test, feature = "std"))]
pub(crate) fn widened_tiers(what: &str) -> (Kernels, Vec<Kernels>) {
    use edgetune_kernels::dispatch::Cpu;
    use edgetune_kernels::registry::Tier;
    let cpu = Cpu::detect();
    let mut tiers = Vec::new();
    for t in [Tier::Avx2, Tier::Avx512] {
        let k = Kernels::select(&cpu, Some(t));
        if k.ew.tier == t {
            tiers.push(k);
        } else {
            std::eprintln!("SKIP {what} on {t:?} (CPU lacks it)");
        }
    }
    (Kernels::select(&cpu, Some(Tier::Reference)), tiers)
}

widened!(clamp_wide(x: &[f32], y: &mut [f32], lo: f32, hi: f32) => clamp_f32);
widened!(group_conv_wide(g: &ConvGeom, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) => group_conv_rows);

#[cfg(feature = "std")]
mod stripes;

pub struct Executor<'p, 'm> {
    plan: PlanRef<'p>,
    kernels: Kernels,
    arena: Arena<'m>,
    par: Par,
    /// Runs of ops each thread carries through on its own rows (none on one thread).
    #[cfg(feature = "std")]
    stripes: alloc::vec::Vec<stripes::Stripe>,
}

/// Splits the arena into the input views and disjoint output views of one op. The
/// memory planner never places an op's output over its live inputs; this checks it.
fn split<'b>(
    arena: &'b mut [u8],
    ins: &[Range<usize>],
    outs: &[Range<usize>],
) -> Result<([&'b [u8]; 3], [&'b mut [u8]; 2])> {
    let overlap = |a: &Range<usize>, b: &Range<usize>| {
        a.start < b.end && b.start < a.end && !a.is_empty() && !b.is_empty()
    };
    let mut order: heapless::Vec<usize, 2> =
        (0..outs.len()).filter(|&i| !outs[i].is_empty()).collect();
    // Two at most: a swap, not a sort (a sort links a general sort into firmware).
    if order.len() == 2 && outs[order[1]].start < outs[order[0]].start {
        order.swap(0, 1);
    }
    if outs.len() == 2 && overlap(&outs[0], &outs[1]) {
        return Err(Error::Invalid {
            what: "plan places two outputs of one op over each other".into(),
        });
    }
    let mut gaps: heapless::Vec<(usize, &'b [u8]), 3> = heapless::Vec::new();
    let mut mouts: [&'b mut [u8]; 2] = [&mut [], &mut []];
    let mut rest = arena;
    let mut base = 0;
    for &i in &order {
        let r = &outs[i];
        if r.start < base || r.end > base + rest.len() {
            return Err(Error::Invalid {
                what: "tensor outside the arena".into(),
            });
        }
        let (gap, tail) = core::mem::take(&mut rest).split_at_mut(r.start - base);
        let (out, tail) = tail.split_at_mut(r.end - r.start);
        let _ = gaps.push((base, gap));
        mouts[i] = out;
        rest = tail;
        base = r.end;
    }
    let _ = gaps.push((base, rest));
    let mut views: [&'b [u8]; 3] = [&[], &[], &[]];
    for (k, r) in ins.iter().take(3).enumerate() {
        let g = gaps
            .iter()
            .find(|(s, g)| r.start >= *s && r.end <= s + g.len());
        match g {
            Some((s, g)) => views[k] = &g[r.start - s..r.end - s],
            None => {
                return Err(Error::Invalid {
                    what: "plan places an op's output over its input".into(),
                })
            }
        }
    }
    Ok((views, mouts))
}

/// The quantisation of an [`Op::ConvI8`]: u8 activations with zero point `x_zero`, its
/// column sums, bias and scales from the plan, outputs `out` about `y_zero` in [0, 255].
fn conv_quant<'a>(
    plan: &'a Dyn,
    (x_zero, y_zero): (i32, i32),
    (colsum, bias, scale): (crate::plan::Blob, crate::plan::Blob, crate::plan::Blob),
    out: I8Out,
) -> I8Quant<'a> {
    I8Quant {
        a_zero: x_zero,
        a_signed: false,
        colsum: plan.blob(colsum),
        bias: Some(plan.blob(bias)),
        scale: plan.blob(scale),
        out,
        y_zero,
        qmin: 0,
        qmax: 255,
    }
}

fn range(t: TensorMeta) -> Range<usize> {
    t.offset..t.offset + t.bytes()
}

/// A tensor's bytes as f32. A crafted plan can give an f32 op a tensor whose size is not a
/// multiple of 4 (or, through its offsets, misaligned): whole values only, and an empty
/// view rather than a panic when misaligned; the ops' shape checks then refuse it.
fn f32s(b: &[u8]) -> &[f32] {
    bytemuck::try_cast_slice(&b[..b.len() / 4 * 4]).unwrap_or(&[])
}

fn f32s_mut(b: &mut [u8]) -> &mut [f32] {
    let n = b.len() / 4 * 4;
    bytemuck::try_cast_slice_mut(&mut b[..n]).unwrap_or(&mut [])
}

impl<'p, 'm> Executor<'p, 'm> {
    /// Allocates the arena, refusing plans that claim more than `arena_limit` bytes.
    pub fn new(plan: &'p Plan<'p>, kernels: Kernels, arena_limit: usize) -> Result<Self> {
        Self::owning(PlanRef::Borrowed(plan), kernels, arena_limit)
    }

    /// [`new`](Self::new) for a shared plan: the executor keeps it alive, so it can be
    /// stored beside the plan's other users without a borrow.
    pub fn shared(
        plan: alloc::sync::Arc<Plan<'p>>,
        kernels: Kernels,
        arena_limit: usize,
    ) -> Result<Self> {
        Self::owning(PlanRef::Shared(plan), kernels, arena_limit)
    }

    fn owning(plan: PlanRef<'p>, kernels: Kernels, arena_limit: usize) -> Result<Self> {
        let need = plan.arena_bytes();
        if need > arena_limit {
            return Err(Error::ArenaTooLarge {
                need,
                limit: arena_limit,
            });
        }
        Ok(Executor {
            plan,
            kernels,
            arena: Arena::Owned(AlignedBytes::zeroed(need)),
            par: Par::single(),
            #[cfg(feature = "std")]
            stripes: alloc::vec::Vec::new(),
        })
    }

    /// Runs in a caller-provided, 64-aligned arena (microcontrollers: a static buffer).
    pub fn with_arena(plan: &'p Plan<'p>, kernels: Kernels, arena: &'m mut [u8]) -> Result<Self> {
        Self::in_arena(PlanRef::Borrowed(plan), kernels, arena)
    }

    /// [`with_arena`](Self::with_arena) for a plan read in place: neither the executor
    /// nor `run` touches the heap (a microcontroller needs none).
    pub fn in_place(plan: &'p PlanView<'p>, kernels: Kernels, arena: &'m mut [u8]) -> Result<Self> {
        Self::in_arena(PlanRef::View(plan), kernels, arena)
    }

    fn in_arena(plan: PlanRef<'p>, kernels: Kernels, arena: &'m mut [u8]) -> Result<Self> {
        let need = plan.arena_bytes();
        if arena.len() < need {
            return Err(Error::ArenaTooLarge {
                need,
                limit: arena.len(),
            });
        }
        if !(arena.as_ptr() as usize).is_multiple_of(64) {
            return Err(Error::Invalid {
                what: "arena must be 64-byte aligned".into(),
            });
        }
        Ok(Executor {
            plan,
            kernels,
            arena: Arena::Borrowed(arena),
            par: Par::single(),
            #[cfg(feature = "std")]
            stripes: alloc::vec::Vec::new(),
        })
    }

    /// The plan, unless it is read in place ([`in_place`](Self::in_place)).
    pub fn plan(&self) -> Option<&Plan<'p>> {
        self.plan.owned()
    }

    /// The plan as the shared handle it was given as, if any.
    pub fn shared_plan(&self) -> Option<&alloc::sync::Arc<Plan<'p>>> {
        match &self.plan {
            PlanRef::Shared(p) => Some(p),
            _ => None,
        }
    }

    /// Tensor `id` of the plan, whichever way it is held.
    pub fn tensor_meta(&self, id: u32) -> TensorMeta {
        self.plan.tables().meta(id)
    }

    /// The tensor of the output or tap called `name` (outputs first).
    pub fn port(&self, name: &str) -> Option<u32> {
        match &self.plan {
            PlanRef::View(v) => v.outputs().chain(v.taps()).find(|p| p.name == name),
            p => p.owned().and_then(|p| {
                p.outputs
                    .iter()
                    .chain(&p.taps)
                    .find(|p| p.name == name)
                    .map(|p| crate::plan::PortRef {
                        name: &p.name,
                        tensor: p.tensor,
                    })
            }),
        }
        .map(|p| p.tensor)
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Threads each op may use (one by default). Results do not depend on it: every op
    /// splits its output, never a sum, so any thread count gives the same bits.
    pub fn set_par(&mut self, par: Par) {
        self.par = par;
        #[cfg(feature = "std")]
        {
            let ops: alloc::vec::Vec<Op> = match &self.plan {
                PlanRef::View(v) => v.ops().collect::<Result<_>>().unwrap_or_default(),
                p => p
                    .owned()
                    .map_or_else(alloc::vec::Vec::new, |p| p.ops.clone()),
            };
            let len = self.bytes().len();
            self.stripes = stripes::plan(&Dyn(self.plan.tables()), &ops, &self.par, len);
        }
    }

    pub fn par(&self) -> &Par {
        &self.par
    }

    /// Ops `run` carries through as stripes (each thread through its own rows of a few
    /// ops in a row, with no wait between them), as (first op, ops) pairs.
    #[cfg(feature = "std")]
    pub fn stripes(&self) -> alloc::vec::Vec<(usize, usize)> {
        self.stripes.iter().map(|s| (s.start, s.len())).collect()
    }

    fn bytes(&self) -> &[u8] {
        match &self.arena {
            Arena::Owned(a) => a.as_ref(),
            Arena::Borrowed(a) => a,
        }
    }

    /// Raw bytes of a tensor after `run`.
    pub fn tensor_bytes(&self, id: u32) -> &[u8] {
        let t = self.tensor_meta(id);
        self.bytes().get(range(t)).unwrap_or(&[])
    }

    /// A tensor as f32 (dequantised copy into `out` for u8/i8 tensors).
    pub fn tensor_f32(&self, id: u32, out: &mut [f32]) -> Result<()> {
        let t = self.tensor_meta(id);
        if out.len() != t.len() {
            return Err(Error::ShapeMismatch {
                op: "tensor_f32".into(),
                expected: t.shape.to_vec(),
                got: alloc::vec![out.len()],
            });
        }
        let b = self.tensor_bytes(id);
        match t.dtype {
            crate::plan::DType::F32 => out.copy_from_slice(f32s(b)),
            crate::plan::DType::U8 => kops::dequantize_u8(&self.kernels, b, t.scale, t.zero, out)?,
            crate::plan::DType::I8 => {
                kops::dequantize_i8(&self.kernels, bytemuck::cast_slice(b), t.scale, t.zero, out)?
            }
            crate::plan::DType::I32 => out
                .iter_mut()
                .zip(bytemuck::cast_slice::<u8, i32>(b))
                .for_each(|(o, &v)| *o = v as f32),
        }
        Ok(())
    }

    /// Runs the plan on one example. `inputs[i]` feeds `plan.inputs[i]` (f32, ONNX layout).
    pub fn run(&mut self, inputs: &[&[f32]]) -> Result<()> {
        self.load_inputs(inputs)?;
        let (kern, par) = (self.kernels, &self.par);
        let arena = arena_mut(&mut self.arena);
        #[cfg(feature = "std")]
        if !self.stripes.is_empty() {
            return Self::run_striped(&self.plan, kern, par, arena, &self.stripes);
        }
        match &self.plan {
            PlanRef::View(v) => {
                for op in v.ops() {
                    Self::step(&Dyn(*v), kern, par, arena, &op?)?;
                }
            }
            p => {
                if let Some(plan) = p.owned() {
                    for op in &plan.ops {
                        Self::step(&Dyn(plan), kern, par, arena, op)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The plan's ops in order, the ops of each stripe as one job.
    #[cfg(feature = "std")]
    fn run_striped(
        plan: &PlanRef<'_>,
        kern: Kernels,
        par: &Par,
        arena: &mut [u8],
        stripes: &[stripes::Stripe],
    ) -> Result<()> {
        let tables = Dyn(plan.tables());
        let mut next = stripes.iter().peekable();
        // Ops before this one ran in a stripe.
        let mut skip_to = 0;
        let mut each = |i: usize, op: &Op| -> Result<()> {
            if let Some(s) = next.next_if(|s| s.start == i) {
                if stripes::run(&tables, &kern, par, arena, s)? {
                    skip_to = i + s.len();
                }
            }
            if i < skip_to {
                return Ok(());
            }
            Self::step(&tables, kern, par, arena, op)
        };
        match plan {
            PlanRef::View(v) => {
                for (i, op) in v.ops().enumerate() {
                    each(i, &op?)?;
                }
            }
            p => {
                if let Some(plan) = p.owned() {
                    for (i, op) in plan.ops.iter().enumerate() {
                        each(i, op)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// [`run`](Self::run) op by op (no stripes), adding each op's wall time to `per_op[i]` (one slot per op).
    #[cfg(feature = "std")]
    pub fn run_profiled(
        &mut self,
        inputs: &[&[f32]],
        per_op: &mut [std::time::Duration],
    ) -> Result<()> {
        if per_op.len() != self.plan.op_count() {
            return Err(Error::Invalid {
                what: format!(
                    "{} op timers for {} ops",
                    per_op.len(),
                    self.plan.op_count()
                ),
            });
        }
        self.load_inputs(inputs)?;
        let (kern, par) = (self.kernels, &self.par);
        let arena = arena_mut(&mut self.arena);
        match &self.plan {
            PlanRef::View(v) => {
                for (op, t) in v.ops().zip(per_op) {
                    let t0 = std::time::Instant::now();
                    Self::step(&Dyn(*v), kern, par, arena, &op?)?;
                    *t += t0.elapsed();
                }
            }
            p => {
                if let Some(plan) = p.owned() {
                    for (op, t) in plan.ops.iter().zip(per_op) {
                        let t0 = std::time::Instant::now();
                        Self::step(&Dyn(plan), kern, par, arena, op)?;
                        *t += t0.elapsed();
                    }
                }
            }
        }
        Ok(())
    }

    fn load_inputs(&mut self, inputs: &[&[f32]]) -> Result<()> {
        let kern = self.kernels;
        let arena = arena_mut(&mut self.arena);
        match &self.plan {
            PlanRef::View(v) => load(&kern, *v, v.input_count(), v.inputs(), arena, inputs),
            p => match p.owned() {
                Some(plan) => {
                    let ports = plan.inputs.iter().map(|p| crate::plan::PortRef {
                        name: &p.name,
                        tensor: p.tensor,
                    });
                    load(&kern, plan, plan.inputs.len(), ports, arena, inputs)
                }
                None => Ok(()),
            },
        }
    }

    fn step(plan: &Dyn, kern: Kernels, par: &Par, arena: &mut [u8], op: &Op) -> Result<()> {
        let tt = |id: u32| plan.tensor(id);
        match *op {
            Op::Quantize { x, y, q, to_nhwc } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let src = f32s(i[0]);
                let s = &tt(y).shape;
                if to_nhwc && s.len() == 4 {
                    quantize_to_nhwc(&kern, par, src, [s[0], s[1] * s[2], s[3]], q, o)?;
                } else {
                    kops::quantize_u8(&kern, src, q.scale, q.zero, o)?;
                }
            }
            Op::Dequantize { x, y, q, to_nchw } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let dst = f32s_mut(o);
                let s = &tt(x).shape;
                if to_nchw && s.len() == 4 {
                    dequantize_to_nchw(&kern, par, i[0], [s[0], s[1] * s[2], s[3]], q, dst)?;
                } else {
                    kops::dequantize_u8(&kern, i[0], q.scale, q.zero, dst)?;
                }
            }
            Op::ConvI8 {
                x,
                y,
                scratch,
                ref geom,
                x_zero,
                y_zero,
                w,
                colsum,
                bias,
                scale,
            } => {
                let outs = [range(tt(y)), scratch.map_or(0..0, |s| range(tt(s)))];
                let (i, [o, s]) = split(arena, &[range(tt(x))], &outs)?;
                let f32_out = tt(y).dtype == crate::plan::DType::F32;
                let out = if f32_out { I8Out::F32 } else { I8Out::U8 };
                let q = conv_quant(plan, (x_zero, y_zero), (colsum, bias, scale), out);
                for (x, y) in images("ConvI8", batch(i[0], conv_in(geom, 1)), i[0], o)? {
                    let dst = if f32_out {
                        I8Dst::F32(f32s_mut(y))
                    } else {
                        I8Dst::U8(y)
                    };
                    par::conv_i8(par, &kern, geom, x, plan.blob(w), &q, s, dst)?;
                }
            }
            Op::DwI8 {
                x,
                y,
                ref geom,
                x_zero,
                y_zero,
                w,
                bias,
                scale,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                for (x, y) in images("DepthwiseI8", batch(i[0], conv_in(geom, 1)), i[0], o)? {
                    par::depthwise_i8(
                        par,
                        &kern,
                        geom,
                        x,
                        x_zero,
                        plan.blob(w),
                        Some(plan.blob(bias)),
                        plan.blob(scale),
                        (y_zero, 0, 255),
                        y,
                    )?;
                }
            }
            Op::AddU8 {
                a,
                b,
                y,
                qa,
                qb,
                qy,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(a)), range(tt(b))], &[range(tt(y))])?;
                par::add_u8(par, &kern, i[0], qa, i[1], qb, o, qy)?;
            }
            Op::GapU8 { x, y, qx, qy } => {
                let s = &tt(x).shape;
                let (hw, c) = (s[1] * s[2], s[3]);
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                for (x, y) in images("GlobalAvgPoolU8", batch(i[0], hw * c), i[0], o)? {
                    kops::gap_u8(&kern, x, hw, c, qx, y, qy)?;
                }
            }
            Op::MaxPoolU8 { x, y, ref geom } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                for (x, y) in images("MaxPoolU8", batch(i[0], conv_in(geom, 1)), i[0], o)? {
                    #[cfg(feature = "std")]
                    if pool_pairs_fit(geom, x.len(), y.len()) {
                        max_pool_u8_pairs_wide(&kern, geom, x, y);
                        continue;
                    }
                    kops::max_pool_u8(&kern, geom, x, y)?;
                }
            }
            Op::LutU8 {
                x,
                y,
                channels,
                table,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                kops::lut_u8(&kern, i[0], channels as usize, plan.blob(table), o)?;
            }
            Op::GapF32 { x, y } => {
                let s = &tt(x).shape;
                let (hw, c) = (s[1] * s[2], s[3]);
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                for (x, y) in images("GapF32", batch(i[0], hw * c * 4), i[0], o)? {
                    kops::gap_f32(&kern, f32s(x), hw, c, f32s_mut(y))?;
                }
            }
            Op::ConvF32 {
                x,
                y,
                scratch,
                ref geom,
                w,
                bias,
                lo,
                hi,
            } => {
                let outs = [range(tt(y)), scratch.map_or(0..0, |s| range(tt(s)))];
                let (i, [o, s]) = split(arena, &[range(tt(x))], &outs)?;
                let bias = plan.blob::<f32>(bias);
                let bias = if bias.is_empty() { None } else { Some(bias) };
                for (x, y) in images("ConvF32", batch(i[0], conv_in(geom, 4)), i[0], o)? {
                    par::conv_f32(
                        par,
                        &kern,
                        geom,
                        f32s(x),
                        plan.blob(w),
                        bias,
                        Act::Clamp(lo, hi),
                        f32s_mut(s),
                        f32s_mut(y),
                    )?;
                }
            }
            Op::UnaryF32 { x, y, f } => {
                if f == Unary::Identity && range(tt(x)) == range(tt(y)) {
                    // The arena planner put both sides of the copy on the same bytes.
                    return Ok(());
                }
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                // Runs of 64 values: each run starts where the whole op has a full SIMD
                // block, so every value takes the same path as on one thread.
                par::map_runs(par, 64, f32s(i[0]), f32s_mut(o), 16, |x, o| {
                    o.copy_from_slice(x);
                    unary_in_place(&kern, f, o);
                    Ok(())
                })?;
            }
            Op::ChainF32 {
                a,
                b,
                y,
                prog,
                consts,
            } => {
                let ins: heapless::Vec<Range<usize>, 2> = [Some(a), b]
                    .iter()
                    .flatten()
                    .map(|&t| range(tt(t)))
                    .collect();
                let (i, [o, _]) = split(arena, &ins, &[range(tt(y))])?;
                let inputs = [f32s(i[0]), if b.is_some() { f32s(i[1]) } else { &[] }];
                chain(
                    &kern,
                    par,
                    plan.blob(prog),
                    plan.blob(consts),
                    inputs,
                    f32s_mut(o),
                )?;
            }
            Op::BinF32 {
                a,
                b,
                y,
                f,
                dims,
                sa,
                sb,
            } => {
                let ins: heapless::Vec<Range<usize>, 2> = [a, b]
                    .iter()
                    .filter_map(|s| s.tensor())
                    .map(|t| range(tt(t)))
                    .collect();
                let (i, [o, _]) = split(arena, &ins, &[range(tt(y))])?;
                let mut next = 0;
                let mut operand = |s: Src| -> &[f32] {
                    match s {
                        Src::T(_) => {
                            next += 1;
                            f32s(i[next - 1])
                        }
                        Src::C(c) => plan.blob(c),
                    }
                };
                let (av, bv) = (operand(a), operand(b));
                binary(&kern, par, f, dims, (av, sa), (bv, sb), f32s_mut(o))?;
            }
            Op::WhereF32 {
                c,
                a,
                b,
                y,
                dims,
                sc,
                sa,
                sb,
            } => {
                let ins: heapless::Vec<Range<usize>, 3> = [c, a, b]
                    .iter()
                    .filter_map(|s| s.tensor())
                    .map(|t| range(tt(t)))
                    .collect();
                let (i, [o, _]) = split(arena, &ins, &[range(tt(y))])?;
                let mut next = 0;
                let mut operand = |s: Src| -> &[f32] {
                    match s {
                        Src::T(_) => {
                            next += 1;
                            f32s(i[next - 1])
                        }
                        Src::C(c) => plan.blob(c),
                    }
                };
                let (cv, av, bv) = (operand(c), operand(a), operand(b));
                select(&kern, dims, (cv, sc), (av, sa), (bv, sb), f32s_mut(o))?;
            }
            Op::Take { x, y, idx, run } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let elem = if tt(y).dtype == crate::plan::DType::F32 {
                    4
                } else {
                    1
                };
                let run = run as usize * elem;
                let idx: &[u32] = plan.blob(idx);
                shape_need("Take", checked(&[idx.len(), run])?, o.len())?;
                for (d, &at) in o.chunks_exact_mut(run.max(1)).zip(idx) {
                    let at = at as usize * elem;
                    let src = i[0]
                        .get(at..at + run)
                        .ok_or_else(|| shape_err("Take", at + run, i[0].len()))?;
                    d.copy_from_slice(src);
                }
            }
            Op::GroupConvF32 {
                x,
                y,
                ref geom,
                w,
                bias,
            }
            | Op::DwF32 {
                x,
                y,
                ref geom,
                w,
                bias,
            } => {
                // Depthwise (NHWC) or grouped (NCHW) float convolution, image by image.
                let (name, conv): (
                    &str,
                    fn(&Kernels, &ConvGeom, &[f32], &[f32], &[f32], &mut [f32]) -> Result<()>,
                ) = if matches!(op, Op::DwF32 { .. }) {
                    ("DepthwiseF32", dw_f32)
                } else {
                    ("GroupConvF32", group_conv_f32)
                };
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                for (x, y) in images(name, batch(i[0], conv_in(geom, 4)), i[0], o)? {
                    let (x, w, b, y) = (f32s(x), plan.blob(w), plan.blob(bias), f32s_mut(y));
                    if matches!(op, Op::DwF32 { .. }) && cfg!(feature = "std") {
                        // Output rows over the threads (NHWC rows are contiguous).
                        par::depthwise_f32(par, &kern, geom, x, w, b, y, conv)?;
                    } else {
                        conv(&kern, geom, x, w, b, y)?;
                    }
                }
            }
            Op::PoolF32 {
                x,
                y,
                ref geom,
                max,
                count_pad,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                pool_f32(&kern, geom, f32s(i[0]), max, count_pad, f32s_mut(o))?;
            }
            Op::ClampF32 { x, y, lo, hi } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let (xi, o) = (f32s(i[0]), f32s_mut(o));
                shape_need("ClampF32", xi.len(), o.len())?;
                clamp_wide(&kern, xi, o, lo, hi);
            }
            Op::SumF32 {
                x,
                y,
                outer,
                len,
                inner,
            }
            | Op::MaxF32 {
                x,
                y,
                outer,
                len,
                inner,
            } => {
                let max = matches!(op, Op::MaxF32 { .. });
                let what = if max { "MaxF32" } else { "SumF32" };
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let (xi, o) = (f32s(i[0]), f32s_mut(o));
                let (outer, len, inner) = (outer as usize, len as usize, inner as usize);
                let n = checked(&[outer, len, inner])?;
                shape_need(what, n, xi.len())?;
                shape_need(what, outer * inner, o.len())?;
                if inner == 1 && len > 0 {
                    // Runs of consecutive values (a global pool, a mean over the last
                    // axis): 16 running results side by side, then folded in halves.
                    for (d, run) in o.iter_mut().zip(xi.chunks_exact(len.max(1))) {
                        *d = reduce_run(run, max);
                    }
                } else {
                    reduce_strided(xi, o, (outer, len, inner), max);
                }
            }
            Op::LayerNormF32 {
                x,
                y,
                cols,
                gamma,
                beta,
                eps,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let (xi, o) = (f32s(i[0]), f32s_mut(o));
                let (g, b): (&[f32], &[f32]) = (plan.blob(gamma), plan.blob(beta));
                let cols = cols as usize;
                if cols == 0 || xi.len() % cols != 0 || g.len() < cols || b.len() < cols {
                    return Err(shape_err("LayerNormF32", cols, xi.len()));
                }
                shape_need("LayerNormF32", xi.len(), o.len())?;
                // Rows split over the threads: each row normalised as on one thread. A
                // value costs about 16 multiply-adds' time (MiniLM's 128 × 384: 10 µs).
                par::map_runs(par, cols, xi, &mut o[..xi.len()], 16, |x, o| {
                    o.copy_from_slice(x);
                    Ok(kops::layer_norm(
                        &kern,
                        o,
                        cols,
                        &g[..cols],
                        &b[..cols],
                        eps,
                    )?)
                })?;
            }
            Op::SoftmaxF32 { x, y, cols } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let (xi, o) = (f32s(i[0]), f32s_mut(o));
                let cols = cols as usize;
                if cols == 0 || xi.len() % cols != 0 {
                    return Err(shape_err("SoftmaxF32", cols, xi.len()));
                }
                shape_need("SoftmaxF32", xi.len(), o.len())?;
                // Rows split over the threads: each row as on one thread.
                par::map_runs(par, cols, xi, &mut o[..xi.len()], 8, |x, o| {
                    o.copy_from_slice(x);
                    Ok(kops::softmax(&kern, o, cols)?)
                })?;
            }
            Op::TransposeF32 { x, y, dims, perm } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                if tt(y).dtype == crate::plan::DType::F32 {
                    transpose_f32(&kern, par, f32s(i[0]), dims, perm, f32s_mut(o))?;
                } else {
                    let plane = |x: &[u8], rows: usize, cols: usize, y: &mut [u8]| {
                        transpose2d(x, rows, cols, y);
                        Ok(())
                    };
                    transpose(i[0], dims, perm, o, plane)?;
                }
            }
            Op::MatMulF32 {
                a,
                b,
                y,
                scratch,
                batch,
                m,
                k,
                n,
            } => {
                let (i, [o, s]) = split(
                    arena,
                    &[range(tt(a)), range(tt(b))],
                    &[range(tt(y)), range(tt(scratch))],
                )?;
                let (av, bv, o, s) = (f32s(i[0]), f32s(i[1]), f32s_mut(o), f32s_mut(s));
                let (batch, m, k, n) = (batch as usize, m as usize, k as usize, n as usize);
                shape_need("MatMulF32", checked(&[batch, m, k])?, av.len())?;
                shape_need("MatMulF32", checked(&[batch, k, n])?, bv.len())?;
                shape_need("MatMulF32", checked(&[batch, m, n])?, o.len())?;
                let packed = edgetune_kernels::pack::packed_f32_len(k, n);
                shape_need("MatMulF32", packed, s.len())?;
                #[cfg(feature = "std")]
                if par.parts(batch, batch * m * n * k) > 1 {
                    let parts = par.parts(batch, batch * m * n * k);
                    // Runs of the batch (attention heads) over the threads, each packing
                    // its own B; a whole product per head gives the bits of the row
                    // splits below.
                    let runs: alloc::vec::Vec<_> = par::runs(batch, parts).collect();
                    let mut rest = &mut o[..batch * m * n];
                    let mut items = alloc::vec::Vec::with_capacity(runs.len());
                    for r in runs {
                        let (part, tail) = core::mem::take(&mut rest).split_at_mut(r.len() * m * n);
                        items.push((r, part));
                        rest = tail;
                    }
                    return par.each(items, |(r, part)| {
                        let mut pk = alloc::vec![0.0f32; packed];
                        for (bi, ob) in r.zip(part.chunks_exact_mut(m * n)) {
                            edgetune_kernels::pack::pack_f32(
                                &bv[bi * k * n..][..k * n],
                                k,
                                n,
                                &mut pk,
                            );
                            kops::gemm_f32(
                                &kern,
                                (m, n, k),
                                &av[bi * m * k..][..m * k],
                                k,
                                &pk,
                                None,
                                ob,
                                n,
                                Act::None,
                            )?;
                        }
                        Ok(())
                    });
                }
                for bi in 0..batch {
                    edgetune_kernels::pack::pack_f32(
                        &bv[bi * k * n..][..k * n],
                        k,
                        n,
                        &mut s[..packed],
                    );
                    par::gemm_f32(
                        par,
                        &kern,
                        (m, n, k),
                        &av[bi * m * k..][..m * k],
                        &s[..packed],
                        None,
                        &mut o[bi * m * n..][..m * n],
                        Act::None,
                    )?;
                }
            }
            Op::MatMulDynI8 {
                x,
                y,
                scratch,
                m,
                k,
                n,
                w,
                colsum,
                wscale,
            } => {
                let (i, [o, s]) =
                    split(arena, &[range(tt(x))], &[range(tt(y)), range(tt(scratch))])?;
                let (xv, o) = (f32s(i[0]), f32s_mut(o));
                let (m, k, n) = (m as usize, k as usize, n as usize);
                let mk = checked(&[m, k])?;
                shape_need("MatMulDynI8", mk, xv.len())?;
                let scale_off = mk.div_ceil(4) * 4;
                shape_need("MatMulDynI8", scale_off + 4 * n, s.len())?;
                let ws: &[f32] = plan.blob(wscale);
                shape_need("MatMulDynI8", n, ws.len())?;
                let (xq, sc) = s.split_at_mut(scale_off);
                let sc: &mut [f32] = bytemuck::cast_slice_mut(&mut sc[..4 * n]);
                let (xs, xz) = dynamic_quantize(&kern, par, &xv[..mk], &mut xq[..mk])?;
                for (d, &w) in sc.iter_mut().zip(ws) {
                    *d = xs * w;
                }
                let q = I8Quant {
                    a_zero: xz,
                    a_signed: false,
                    colsum: plan.blob(colsum),
                    bias: None,
                    scale: sc,
                    out: I8Out::F32,
                    y_zero: 0,
                    qmin: 0,
                    qmax: 255,
                };
                par::gemm_i8(
                    par,
                    &kern,
                    (m, n, k),
                    &xq[..mk],
                    k,
                    plan.blob(w),
                    &q,
                    I8Dst::F32(o),
                )?;
            }
            Op::GatherF32 {
                ids,
                y,
                table,
                rows,
                dim,
                quant,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(ids))], &[range(tt(y))])?;
                let (idv, o) = (f32s(i[0]), f32s_mut(o));
                let (rows, dim) = (rows as usize, dim as usize);
                shape_need("GatherF32", checked(&[idv.len(), dim])?, o.len())?;
                let elem = if quant.is_some() { 1 } else { 4 };
                shape_need(
                    "GatherF32",
                    checked(&[rows, dim, elem])?,
                    plan.blob_bytes(table).len(),
                )?;
                for (r, &id) in idv.iter().enumerate() {
                    // ONNX Gather counts negative indices from the end.
                    let j = if id < 0.0 { id + rows as f32 } else { id };
                    if !(j >= 0.0 && j < rows as f32 && libm::truncf(j) == j) {
                        // The index as an integer: formatting an f32 would link the
                        // float formatter (about 10 KB of a microcontroller's code).
                        return Err(Error::Invalid {
                            what: format!(
                                "gather: index {} outside 0..{rows} or not whole",
                                id as i64
                            ),
                        });
                    }
                    let j = j as usize;
                    let d = &mut o[r * dim..][..dim];
                    match quant {
                        Some((sc, z)) => {
                            let t = &plan.blob_bytes(table)[j * dim..][..dim];
                            for (dv, &q) in d.iter_mut().zip(t) {
                                *dv = (q as i8 as i32 - z) as f32 * sc;
                            }
                        }
                        None => d.copy_from_slice(&plan.blob::<f32>(table)[j * dim..][..dim]),
                    }
                }
            }
            Op::AddF32 { a, b, y } => {
                let (i, [o, _]) = split(arena, &[range(tt(a)), range(tt(b))], &[range(tt(y))])?;
                kops::add_f32(&kern, f32s(i[0]), f32s(i[1]), f32s_mut(o))?;
            }
            Op::MulChanU8 {
                x,
                s,
                y,
                tables,
                xf,
                sf,
                qy,
            } => {
                let outs = [range(tt(y)), range(tt(tables))];
                let (i, [o, tb]) = split(arena, &[range(tt(x)), range(tt(s))], &outs)?;
                let c = tt(x).shape.last().copied().unwrap_or(0);
                let (xf, sf) = (plan.blob::<f32>(xf), plan.blob::<f32>(sf));
                mul_channels(&kern, c, (i[0], i[1]), (xf, sf), qy, tb, o)?;
            }
            Op::LutF32 {
                x,
                y,
                channels,
                table,
                to_nchw,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let (src, dst) = (i[0], f32s_mut(o));
                let table = plan.blob::<f32>(table);
                let c = channels.max(1) as usize;
                shape_need("LutF32", checked(&[c, 256])?, table.len())?;
                shape_need("LutF32", src.len(), dst.len())?;
                let s = &tt(x).shape;
                if to_nchw && s.len() == 4 {
                    let (h, w, ch) = (s[1], s[2], s[3]);
                    for n in 0..s[0] {
                        for p in 0..h * w {
                            for k in 0..ch {
                                let code = src[(n * h * w + p) * ch + k] as usize;
                                dst[(n * ch + k) * h * w + p] = table[(k % c) * 256 + code];
                            }
                        }
                    }
                } else {
                    for (j, (d, &code)) in dst.iter_mut().zip(src).enumerate() {
                        *d = table[(j % c) * 256 + code as usize];
                    }
                }
            }
            Op::Dilate {
                x,
                y,
                h,
                w,
                c,
                sh,
                sw,
                fill,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let f32s_ = tt(y).dtype == crate::plan::DType::F32;
                let elem = if f32s_ { 4 } else { 1 };
                let [h, w, c, sh, sw] = [h, w, c, sh, sw].map(|v| v as usize);
                let c = c * elem;
                let ow = (w - 1) * sw + 1;
                for (x, o) in images("Dilate", batch(i[0], h * w * c), i[0], o)? {
                    shape_need("Dilate", checked(&[h, w, c])?, x.len())?;
                    shape_need("Dilate", checked(&[(h - 1) * sh + 1, ow, c])?, o.len())?;
                    if f32s_ {
                        f32s_mut(o).fill(f32::from_bits(fill));
                    } else {
                        o.fill(fill as u8);
                    }
                    for yy in 0..h {
                        for xx in 0..w {
                            let src = (yy * w + xx) * c;
                            let dst = (yy * sh * ow + xx * sw) * c;
                            o[dst..][..c].copy_from_slice(&x[src..][..c]);
                        }
                    }
                }
            }
            Op::Upsample {
                x,
                y,
                outer,
                h,
                w,
                inner,
                fh,
                fw,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let elem = if tt(y).dtype == crate::plan::DType::F32 {
                    4
                } else {
                    1
                };
                let [outer, h, w, inner, fh, fw] = [outer, h, w, inner, fh, fw].map(|v| v as usize);
                let run = inner * elem;
                shape_need("Upsample", checked(&[outer, h, w, run])?, i[0].len())?;
                shape_need("Upsample", checked(&[outer, h, fh, w, fw, run])?, o.len())?;
                upsample(i[0], o, [outer, h, w, run], fh, fw);
            }
            Op::ResizeLinearF32 {
                x,
                y,
                outer,
                h,
                w,
                oh,
                ow,
                ct,
                sh,
                sw,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let [outer, h, w, oh, ow] = [outer, h, w, oh, ow].map(|v| v as usize);
                let (xi, o) = (f32s(i[0]), f32s_mut(o));
                shape_need("ResizeLinearF32", checked(&[outer, h, w])?, xi.len())?;
                shape_need("ResizeLinearF32", checked(&[outer, oh, ow])?, o.len())?;
                resize_linear(xi, o, outer, [h, w], [oh, ow], ct, [sh, sw]);
            }
            Op::Pad {
                x,
                y,
                dims,
                before,
                after,
                value,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let f32s_ = tt(y).dtype == crate::plan::DType::F32;
                let elem = if f32s_ { 4 } else { 1 };
                let d = dims.map(|v| v as usize);
                let od: [usize; 4] =
                    core::array::from_fn(|k| d[k] + before[k] as usize + after[k] as usize);
                shape_need("Pad", checked(&[checked(&d)?, elem])?, i[0].len())?;
                shape_need("Pad", checked(&[checked(&od)?, elem])?, o.len())?;
                let fill: [u8; 4] = if f32s_ {
                    value.to_le_bytes()
                } else {
                    [value as u8; 4]
                };
                if f32s_ {
                    f32s_mut(o).fill(f32::from_le_bytes(fill));
                } else {
                    o.fill(fill[0]);
                }
                // Runs along the last axis, or along the last two when the last is not
                // padded (a pad of W or of C copies whole rows, not single values).
                let whole = before[3] == 0 && after[3] == 0;
                let (runs, row) = if whole {
                    (d[2].min(1), d[2] * d[3] * elem)
                } else {
                    (d[2], d[3] * elem)
                };
                for a in 0..d[0] {
                    for b in 0..d[1] {
                        for c in 0..runs {
                            let src = ((a * d[1] + b) * d[2] + c) * d[3] * elem;
                            let dst = (((a + before[0] as usize) * od[1] + b + before[1] as usize)
                                * od[2]
                                + c
                                + before[2] as usize)
                                * od[3]
                                + before[3] as usize;
                            o[dst * elem..][..row].copy_from_slice(&i[0][src..][..row]);
                        }
                    }
                }
            }
            Op::Slice {
                x,
                y,
                outer,
                inner,
                off,
                len,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(x))], &[range(tt(y))])?;
                let elem = if tt(y).dtype == crate::plan::DType::F32 {
                    4
                } else {
                    1
                };
                let (outer, inner, off, len) = (
                    outer as usize,
                    inner as usize * elem,
                    off as usize * elem,
                    len as usize * elem,
                );
                shape_need("Slice", checked(&[outer, len])?, o.len())?;
                shape_need("Slice", checked(&[outer, inner])?, i[0].len())?;
                shape_need("Slice", off + len, inner)?;
                for k in 0..outer {
                    o[k * len..][..len].copy_from_slice(&i[0][k * inner + off..][..len]);
                }
            }
            Op::Concat {
                a,
                b,
                y,
                outer,
                ia,
                ib,
                ta,
                tb,
            } => {
                let (i, [o, _]) = split(arena, &[range(tt(a)), range(tt(b))], &[range(tt(y))])?;
                let elem = if tt(y).dtype == crate::plan::DType::F32 {
                    4
                } else {
                    1
                };
                let (outer, ia, ib) = (outer as usize, ia as usize * elem, ib as usize * elem);
                shape_need("Concat", checked(&[outer, ia + ib])?, o.len())?;
                shape_need("Concat", checked(&[outer, ia])?, i[0].len())?;
                shape_need("Concat", checked(&[outer, ib])?, i[1].len())?;
                for (part, inner, tab, off) in [(i[0], ia, ta, 0), (i[1], ib, tb, ia)] {
                    let tab = plan.blob_bytes(tab);
                    for k in 0..outer {
                        let d = &mut o[k * (ia + ib) + off..][..inner];
                        let s = &part[k * inner..][..inner];
                        if tab.len() == 256 {
                            for (dv, &sv) in d.iter_mut().zip(s) {
                                *dv = tab[sv as usize];
                            }
                        } else {
                            d.copy_from_slice(s);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Copies the inputs into their tensors: `count` ports, in order.
fn load<'n, P: Tables + ?Sized>(
    kern: &Kernels,
    plan: &P,
    count: usize,
    ports: impl Iterator<Item = crate::plan::PortRef<'n>>,
    arena: &mut [u8],
    inputs: &[&[f32]],
) -> Result<()> {
    if inputs.len() != count {
        return Err(Error::Invalid {
            what: format!("plan has {} inputs, got {}", count, inputs.len()),
        });
    }
    for (port, data) in ports.zip(inputs) {
        let t = plan.tensor(port.tensor);
        if t.dtype != crate::plan::DType::F32 || data.len() != t.len() {
            return Err(Error::ShapeMismatch {
                op: format!("input '{}'", port.name),
                expected: t.logical_shape(),
                got: alloc::vec![data.len()],
            });
        }
        if !all_finite(kern, data) {
            return Err(Error::NonFinite {
                what: format!("input '{}'", port.name),
            });
        }
        let r = range(t);
        arena
            .get_mut(r)
            .ok_or_else(|| Error::Invalid {
                what: "tensor outside the arena".into(),
            })?
            .copy_from_slice(bytemuck::cast_slice(data));
    }
    Ok(())
}

/// Images in a batch: how many times an op's input holds the `one` bytes its geometry
/// describes (1 unless an exact multiple above 1).
fn batch(x: &[u8], one: usize) -> usize {
    match one {
        0 => 1,
        _ if x.len().is_multiple_of(one) && x.len() / one > 1 => x.len() / one,
        _ => 1,
    }
}

/// Bytes of one image of a convolution's input.
fn conv_in(g: &ConvGeom, elem: usize) -> usize {
    g.h.saturating_mul(g.w)
        .saturating_mul(g.ic)
        .saturating_mul(elem)
}

/// The images of a batch of `n`: `x` and `y` cut into `n` equal parts, one per image, for
/// the ops whose geometry describes one image.
fn images<'a, 'b>(
    op: &str,
    n: usize,
    x: &'a [u8],
    y: &'b mut [u8],
) -> Result<core::iter::Zip<core::slice::ChunksExact<'a, u8>, core::slice::ChunksExactMut<'b, u8>>>
{
    if n == 0
        || !x.len().is_multiple_of(n)
        || !y.len().is_multiple_of(n)
        || x.len() < n
        || y.len() < n
    {
        return Err(shape_err(op, n, x.len()));
    }
    let (xs, ys) = (x.len() / n, y.len() / n);
    Ok(x.chunks_exact(xs).zip(y.chunks_exact_mut(ys)))
}

fn shape_err(op: &str, expected: usize, got: usize) -> Error {
    Error::ShapeMismatch {
        op: op.into(),
        expected: alloc::vec![expected],
        got: alloc::vec![got],
    }
}

fn shape_need(op: &str, expected: usize, got: usize) -> Result<()> {
    if got < expected {
        Err(shape_err(op, expected, got))
    } else {
        Ok(())
    }
}

fn checked(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| shape_err("size", usize::MAX, 0))
}

/// `o = f(o)`, value by value: the kernel tier's functions where it has them.
#[inline(never)]
fn unary_in_place(kern: &Kernels, f: Unary, o: &mut [f32]) {
    match f {
        Unary::Relu => kops::unary_f32(kern, UnaryF32::Relu, o),
        Unary::Relu6 => kops::unary_f32(kern, UnaryF32::Relu6, o),
        Unary::Sigmoid => kops::unary_f32(kern, UnaryF32::Sigmoid, o),
        Unary::HardSwish => kops::unary_f32(kern, UnaryF32::HardSwish, o),
        Unary::GeluErf => kops::unary_f32(kern, UnaryF32::GeluErf, o),
        Unary::Erf => kops::unary_f32(kern, UnaryF32::Erf, o),
        Unary::Sqrt => o.iter_mut().for_each(|v| *v = libm::sqrtf(*v)),
        Unary::Tanh => o.iter_mut().for_each(|v| *v = libm::tanhf(*v)),
        Unary::Exp => o.iter_mut().for_each(|v| *v = libm::expf(*v)),
        Unary::Log => o.iter_mut().for_each(|v| *v = libm::logf(*v)),
        Unary::Abs | Unary::Neg | Unary::Reciprocal | Unary::Floor | Unary::Ceil | Unary::Round => {
            integral_wide(kern, f, o)
        }
        Unary::Softplus => o.iter_mut().for_each(|v| {
            // ln(1 + e^x) without overflow: x + ln(1 + e^-x) for x > 0.
            *v = if *v > 0.0 {
                *v + libm::log1pf(libm::expf(-*v))
            } else {
                libm::log1pf(libm::expf(*v))
            }
        }),
        Unary::GeluTanh => o.iter_mut().for_each(|v| {
            let x = *v;
            let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
            *v = 0.5 * x * (1.0 + libm::tanhf(u));
        }),
        Unary::Identity => {}
    }
}

/// Round half to even, floor and ceiling without a libm call per value, so that the loop
/// compiles to vector instructions: adding and removing 2^23 leaves no fraction bits
/// (the FPU's default rounding does the rounding), a floor or ceiling steps the rounded
/// value by one where it passed `v`, and the result takes `v`'s sign (`-0.3` rounds to
/// `-0.0`, as `rintf` gives). `|v| ≥ 2^23`, infinities and NaN are already integral and
/// pass unchanged. The bits of libm's `rintf`, `floorf` and `ceilf`.
#[cfg_attr(feature = "std", inline(always))]
fn integral(v: f32, step: i8) -> f32 {
    const TWO23: f32 = 8_388_608.0;
    if v.abs() < TWO23 {
        let c = TWO23.copysign(v);
        let r = (v + c) - c;
        let r = match step {
            -1 if r > v => r - 1.0,
            1 if r < v => r + 1.0,
            _ => r,
        };
        r.copysign(v)
    } else {
        v
    }
}

/// The unary ops that are exact in IEEE arithmetic (sign changes, the reciprocal, the
/// integral parts), as plain loops the `widened!` tiers vectorise.
#[inline(always)]
fn integral_body(f: Unary, o: &mut [f32]) {
    match f {
        Unary::Abs => o.iter_mut().for_each(|v| *v = v.abs()),
        Unary::Neg => o.iter_mut().for_each(|v| *v = -*v),
        Unary::Reciprocal => o.iter_mut().for_each(|v| *v = 1.0 / *v),
        // One loop per op where the wide tiers vectorise it; one for the three in
        // firmware, which counts its code bytes.
        #[cfg(feature = "std")]
        Unary::Floor => o.iter_mut().for_each(|v| *v = integral(*v, -1)),
        #[cfg(feature = "std")]
        Unary::Ceil => o.iter_mut().for_each(|v| *v = integral(*v, 1)),
        #[cfg(feature = "std")]
        Unary::Round => o.iter_mut().for_each(|v| *v = integral(*v, 0)),
        #[cfg(not(feature = "std"))]
        Unary::Floor | Unary::Ceil | Unary::Round => {
            let step = match f {
                Unary::Floor => -1,
                Unary::Ceil => 1,
                _ => 0,
            };
            o.iter_mut().for_each(|v| *v = integral(*v, step));
        }
        _ => {}
    }
}

widened!(integral_wide(f: Unary, o: &mut [f32]) => integral_body);

/// Most values per block of a chain (the registers' length); smaller on a device, whose
/// stack holds them.
#[cfg(feature = "std")]
const CHAIN_MAX: usize = 1024;
#[cfg(not(feature = "std"))]
const CHAIN_MAX: usize = 64;

/// An operand of a decoded chain instruction.
#[derive(Clone, Copy)]
enum Opd<'a> {
    Reg(usize),
    /// Values repeated along y (once when as long as y).
    Src(&'a [f32]),
}

#[derive(Clone, Copy)]
enum ChainFn {
    Un(Unary),
    Bin(unsafe fn(&[f32], &[f32], &mut [f32])),
    /// Max, Min, PRelu: [`binary_other`]'s formula over slices, compiled wide.
    Wide(fn(&Kernels, &[f32], &[f32], &mut [f32])),
    Clamp(f32, f32),
}

#[inline(always)]
fn max_body(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        *y = binary_other(BinOp::Max, a, b);
    }
}

#[inline(always)]
fn min_body(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        *y = binary_other(BinOp::Min, a, b);
    }
}

#[inline(always)]
fn prelu_body(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        *y = binary_other(BinOp::PRelu, a, b);
    }
}

/// A comparison's (or NaN's replacement's) loop body over slices ([`binary_other`]'s
/// formula for `$f`).
macro_rules! cmp_body {
    ($name:ident, $f:expr) => {
        #[cfg(feature = "std")]
        #[inline(always)]
        fn $name(a: &[f32], b: &[f32], y: &mut [f32]) {
            for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                *y = binary_other($f, a, b);
            }
        }
    };
}

cmp_body!(eq_body, BinOp::Eq);
cmp_body!(ne_body, BinOp::Ne);
cmp_body!(lt_body, BinOp::Lt);
cmp_body!(le_body, BinOp::Le);
cmp_body!(gt_body, BinOp::Gt);
cmp_body!(ge_body, BinOp::Ge);
cmp_body!(nan_to_body, BinOp::NanTo);

#[cfg(feature = "std")]
widened!(eq_wide(a: &[f32], b: &[f32], y: &mut [f32]) => eq_body);
#[cfg(feature = "std")]
widened!(ne_wide(a: &[f32], b: &[f32], y: &mut [f32]) => ne_body);
#[cfg(feature = "std")]
widened!(lt_wide(a: &[f32], b: &[f32], y: &mut [f32]) => lt_body);
#[cfg(feature = "std")]
widened!(le_wide(a: &[f32], b: &[f32], y: &mut [f32]) => le_body);
#[cfg(feature = "std")]
widened!(gt_wide(a: &[f32], b: &[f32], y: &mut [f32]) => gt_body);
#[cfg(feature = "std")]
widened!(ge_wide(a: &[f32], b: &[f32], y: &mut [f32]) => ge_body);
#[cfg(feature = "std")]
widened!(nan_to_wide(a: &[f32], b: &[f32], y: &mut [f32]) => nan_to_body);
widened!(max_wide(a: &[f32], b: &[f32], y: &mut [f32]) => max_body);
widened!(min_wide(a: &[f32], b: &[f32], y: &mut [f32]) => min_body);
widened!(prelu_wide(a: &[f32], b: &[f32], y: &mut [f32]) => prelu_body);

#[derive(Clone, Copy)]
struct ChainIns<'a> {
    f: ChainFn,
    dst: usize,
    l: Opd<'a>,
    r: Opd<'a>,
}

/// Decodes and checks an [`Op::ChainF32`] program: known codes, registers written before
/// they are read, operands within their buffers and repeating evenly along y's `n`
/// values, and no binary operation writing a register it reads.
#[inline(never)]
fn chain_decode<'a>(
    kern: &Kernels,
    prog: &[u32],
    consts: &'a [f32],
    inputs: [&'a [f32]; 2],
    n: usize,
) -> Result<heapless::Vec<ChainIns<'a>, 32>> {
    use crate::plan::chain::{BIN, CLAMP, CONST, INPUT, REGS};
    let bad = |why: &str| Error::Invalid {
        what: format!("elementwise chain: {why}"),
    };
    if prog.is_empty() || !prog.len().is_multiple_of(CHAIN_WORDS) {
        return Err(bad("program length"));
    }
    let mut out = heapless::Vec::new();
    let mut written = 0u32;
    for w in prog.chunks_exact(CHAIN_WORDS) {
        let (code, dst) = (w[0], w[1]);
        let opd = |v: u32, len: u32| -> Result<Opd<'a>> {
            let src = |s: &'a [f32]| -> Result<Opd<'a>> {
                if s.is_empty() || !n.is_multiple_of(s.len()) {
                    return Err(bad("operand does not repeat evenly along the output"));
                }
                Ok(Opd::Src(s))
            };
            match v {
                r if r < REGS && written & (1 << r) != 0 => Ok(Opd::Reg(r as usize)),
                r if r < REGS => Err(bad("register read before it is written")),
                v if (INPUT..INPUT + 2).contains(&v) => src(inputs[(v - INPUT) as usize]),
                v if v >= CONST => {
                    let off = (v - CONST) as usize;
                    match consts.get(off..off.saturating_add(len as usize)) {
                        Some(c) => src(c),
                        None => Err(bad("constant outside the plan's table")),
                    }
                }
                _ => Err(bad("unknown operand")),
            }
        };
        if dst >= REGS {
            return Err(bad("unknown register"));
        }
        let l = opd(w[2], w[3])?;
        let (f, r) = if code == CLAMP {
            let off = w[4].wrapping_sub(CONST) as usize;
            match (w[4] >= CONST, w[5], consts.get(off..off.saturating_add(2))) {
                (true, 2, Some(&[lo, hi])) => (ChainFn::Clamp(lo, hi), l),
                _ => return Err(bad("clamp bounds")),
            }
        } else if code < BIN {
            let f = Unary::ALL
                .get(code as usize)
                .copied()
                .ok_or_else(|| bad("unknown function"))?;
            (ChainFn::Un(f), l)
        } else {
            let f = match BinOp::ALL.get((code - BIN) as usize) {
                Some(BinOp::Add) => ChainFn::Bin(kern.ew.f.add_f32),
                Some(BinOp::Sub) => ChainFn::Bin(kern.ew.f.sub_f32),
                Some(BinOp::Mul) => ChainFn::Bin(kern.ew.f.mul_f32),
                Some(BinOp::Div) => ChainFn::Bin(kern.ew.f.div_f32),
                Some(BinOp::Max) => ChainFn::Wide(max_wide),
                Some(BinOp::Min) => ChainFn::Wide(min_wide),
                Some(BinOp::PRelu) => ChainFn::Wide(prelu_wide),
                _ => return Err(bad("unknown operation")),
            };
            (f, opd(w[4], w[5])?)
        };
        // Only a function works in place.
        if !matches!(f, ChainFn::Un(_))
            && [l, r]
                .iter()
                .any(|o| matches!(o, Opd::Reg(k) if *k == dst as usize))
        {
            return Err(bad("an operation writes the register it reads"));
        }
        written |= 1 << dst;
        out.push(ChainIns {
            f,
            dst: dst as usize,
            l,
            r,
        })
        .map_err(|_| bad("more than 32 instructions"))?;
    }
    Ok(out)
}

/// The values of operand `o` for y's values `g0..g0 + len`: a register (`lo`/`hi` those
/// below and above the destination `dst`), the input's own values, the operand repeated
/// over a whole block (`pre`, when it was built), or repeated into `tmp`.
fn chain_operand<'v>(
    o: Opd<'v>,
    g0: usize,
    len: usize,
    (lo, hi, dst): (&'v [f32], &'v [f32], usize),
    pre: &'v [f32],
    tmp: &'v mut [f32],
) -> &'v [f32] {
    match o {
        Opd::Reg(r) if r < dst => &lo[r * CHAIN_MAX..][..len],
        Opd::Reg(r) => &hi[(r - dst - 1) * CHAIN_MAX..][..len],
        Opd::Src(s) if g0 + len <= s.len() => &s[g0..g0 + len],
        Opd::Src(_) if !pre.is_empty() => &pre[..len],
        Opd::Src(s) => {
            let p = s.len();
            let (mut j, mut at) = (0, g0 % p);
            while j < len {
                let k = (p - at).min(len - j);
                tmp[j..j + k].copy_from_slice(&s[at..at + k]);
                j += k;
                at = 0;
            }
            &tmp[..len]
        }
    }
}

/// [`Op::MulChanU8`]: for each image, each channel's table of x's codes (the product of
/// the two sides' values in f32, quantised as Quantize does), then x looked up in them.
fn mul_channels(
    kern: &Kernels,
    c: usize,
    (x, s): (&[u8], &[u8]),
    (xf, sf): (&[f32], &[f32]),
    qy: crate::plan::Q8,
    tables: &mut [u8],
    y: &mut [u8],
) -> Result<()> {
    let images = s.len() / c.max(1);
    let per = x.len() / images.max(1);
    // One table of code values for every channel, or one per channel.
    let side = |f: &[f32]| match f.len() {
        256 => Some(0),
        n if n == c * 256 => Some(256),
        _ => None,
    };
    let fit = c > 0 && images * c == s.len() && per * images == x.len() && per.is_multiple_of(c);
    let (Some(xs), Some(ss), Some(tables), true, true) = (
        side(xf),
        side(sf),
        tables.get_mut(..c * 256),
        fit,
        x.len() == y.len(),
    ) else {
        return Err(Error::Invalid {
            what: "MulChanU8: scales, code values or tables do not fit the map".into(),
        });
    };
    let mut prod = [0.0f32; 256];
    for ((si, xi), yi) in s
        .chunks_exact(c)
        .zip(x.chunks_exact(per))
        .zip(y.chunks_exact_mut(per))
    {
        for (ch, (&code, t)) in si.iter().zip(tables.chunks_exact_mut(256)).enumerate() {
            let v = sf[ch * ss + code as usize];
            for (p, &f) in prod.iter_mut().zip(&xf[ch * xs..][..256]) {
                *p = f * v;
            }
            kops::quantize_u8(kern, &prod, qy.scale, qy.zero, t)?;
        }
        kops::lut_u8(kern, xi, c, tables, yi)?;
    }
    Ok(())
}

/// Runs an [`Op::ChainF32`] program over `y` block by block, the blocks spread over the
/// threads: each instruction in turn on a block's registers, the last one into `y`.
///
/// Blocks start at multiples of 16 values (every tier's widest vector), so each value
/// takes the path it takes in the separate ops: the same bits. Their length is a multiple
/// of the repeated operands' periods where that fits, so those are built once per part.
///
/// Where the tier runs fused programs and the chain's operations all have a fused form,
/// the whole program runs a few vectors at a time instead ([`chain_fused`]): the same
/// bits.
fn chain(
    kern: &Kernels,
    par: &Par,
    prog: &[u32],
    consts: &[f32],
    inputs: [&[f32]; 2],
    y: &mut [f32],
) -> Result<()> {
    #[cfg(feature = "std")]
    if kops::fused_programs(kern) {
        let code = chain_decode(kern, prog, consts, inputs, y.len())?;
        if let Some((t, srcs, consts)) = fused_program(prog, &code) {
            let block = chain_block(&code, y.len());
            return chain_fused(kern, par, (t, &srcs, &consts), block, y);
        }
    }
    chain_blocks(kern, par, prog, consts, inputs, y)
}

/// The block length of a chain over `n` values: a multiple of 16 and of the repeated
/// operands' periods where that fits in [`CHAIN_MAX`].
fn chain_block(code: &[ChainIns], n: usize) -> usize {
    let periods = code
        .iter()
        .flat_map(|c| [c.l, c.r])
        .filter_map(|o| match o {
            Opd::Src(s) if s.len() < n => Some(s.len()),
            _ => None,
        });
    let mut unit = 16;
    for p in periods {
        let g = gcd(unit, p);
        if unit / g * p <= CHAIN_MAX {
            unit = unit / g * p;
        }
    }
    if unit > CHAIN_MAX {
        CHAIN_MAX
    } else {
        (CHAIN_MAX / 2).max(unit) / unit * unit
    }
}

/// The fused form of a decoded chain: its operations mapped one to one, one-value
/// operands (and a clamp's bounds) as constants in order of use, the other runs in order
/// of first use; with the template it matches, if any ([`edgetune_kernels::ew::prog`]).
#[cfg(feature = "std")]
#[allow(clippy::type_complexity)]
fn fused_program<'a>(
    prog: &[u32],
    code: &[ChainIns<'a>],
) -> Option<(usize, alloc::vec::Vec<&'a [f32]>, alloc::vec::Vec<f32>)> {
    use edgetune_kernels::ew::prog::{self as fp, Ins, Op, Opd as F};
    let mut srcs: alloc::vec::Vec<&'a [f32]> = alloc::vec::Vec::new();
    let mut consts = alloc::vec::Vec::new();
    let mut out = alloc::vec::Vec::with_capacity(code.len());
    for (w, c) in prog.chunks_exact(CHAIN_WORDS).zip(code) {
        let op = match c.f {
            ChainFn::Clamp(..) => Op::Clamp,
            ChainFn::Un(Unary::Relu) => Op::Relu,
            ChainFn::Un(Unary::Relu6) => Op::Relu6,
            ChainFn::Un(Unary::HardSwish) => Op::HardSwish,
            ChainFn::Un(Unary::Sigmoid) => Op::Sigmoid,
            ChainFn::Un(Unary::GeluErf) => Op::GeluErf,
            ChainFn::Un(Unary::Erf) => Op::Erf,
            ChainFn::Un(Unary::Round) => Op::Round,
            ChainFn::Bin(_) | ChainFn::Wide(_) => {
                let t = w[0].checked_sub(crate::plan::chain::BIN)? as usize;
                match BinOp::ALL.get(t)? {
                    BinOp::Add => Op::Add,
                    BinOp::Sub => Op::Sub,
                    BinOp::Mul => Op::Mul,
                    BinOp::Div => Op::Div,
                    BinOp::Max => Op::Max,
                    BinOp::PRelu => Op::PRelu,
                    _ => return None,
                }
            }
            _ => return None,
        };
        let mut opd = |o: Opd<'a>| -> F {
            match o {
                Opd::Reg(r) => F::Reg(r as u8),
                Opd::Src(&[v]) => {
                    consts.push(v);
                    F::Const((consts.len() - 1) as u8)
                }
                Opd::Src(s) => match srcs.iter().position(|t| core::ptr::eq(*t, s)) {
                    Some(k) => F::Src(k as u8),
                    None => {
                        srcs.push(s);
                        F::Src((srcs.len() - 1) as u8)
                    }
                },
            }
        };
        let l = opd(c.l);
        let r = match (op, c.f) {
            (Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Max | Op::PRelu, _) => opd(c.r),
            (_, ChainFn::Clamp(lo, hi)) => {
                consts.extend([lo, hi]);
                F::Const((consts.len() - 2) as u8)
            }
            _ => F::None,
        };
        out.push(Ins {
            op,
            dst: c.dst as u8,
            l,
            r,
        });
    }
    if srcs.len() > fp::SRCS || consts.len() > fp::CONSTS {
        return None;
    }
    Some((fp::template(&out)?, srcs, consts))
}

/// Runs a chain of template `t` fused over `y`, the blocks spread over the threads as
/// [`chain_blocks`] spreads them: runs as long as `y` are read in place, repeated ones
/// over a block.
#[cfg(feature = "std")]
fn chain_fused(
    kern: &Kernels,
    par: &Par,
    (t, srcs, consts): (usize, &[&[f32]], &[f32]),
    block: usize,
    y: &mut [f32],
) -> Result<()> {
    use edgetune_kernels::ew::prog::SRCS;
    let n = y.len();
    let whole = srcs.iter().all(|s| s.len() == n);
    let cost = 2 * edgetune_kernels::ew::prog::TEMPLATES[t].len();
    par::for_runs(par, block, y, cost, |start, part| {
        if whole {
            let s: alloc::vec::Vec<&[f32]> =
                srcs.iter().map(|s| &s[start..start + part.len()]).collect();
            kops::program_f32(kern, t, &s, consts, part)?;
            return Ok(());
        }
        let pre: alloc::vec::Vec<alloc::vec::Vec<f32>> = srcs
            .iter()
            .map(|s| {
                if s.len() < n && block.is_multiple_of(s.len()) {
                    repeated(s, block)
                } else {
                    alloc::vec::Vec::new()
                }
            })
            .collect();
        let mut tmp = [[0.0f32; CHAIN_MAX]; SRCS];
        for (bi, yb) in part.chunks_mut(block).enumerate() {
            let (g0, len) = (start + bi * block, yb.len());
            let s: alloc::vec::Vec<&[f32]> = srcs
                .iter()
                .zip(&pre)
                .zip(tmp.iter_mut())
                .map(|((&s, p), t)| chain_operand(Opd::Src(s), g0, len, (&[], &[], 0), p, t))
                .collect();
            kops::program_f32(kern, t, &s, consts, yb)?;
        }
        Ok(())
    })
}

/// [`chain`] an instruction at a time over each block.
#[inline(never)]
fn chain_blocks(
    kern: &Kernels,
    par: &Par,
    prog: &[u32],
    consts: &[f32],
    inputs: [&[f32]; 2],
    y: &mut [f32],
) -> Result<()> {
    const R: usize = crate::plan::chain::REGS as usize;
    let n = y.len();
    let code = chain_decode(kern, prog, consts, inputs, n)?;
    let Some((last, body)) = code.split_last() else {
        return Ok(());
    };
    // A block length all the repeated operands' periods divide.
    let block = chain_block(&code, n);
    let run = |ins: &ChainIns,
               g0: usize,
               regs: (&[f32], &[f32], usize),
               pre: [&[f32]; 2],
               tmp: &mut [[f32; CHAIN_MAX]; 2],
               d: &mut [f32]| {
        let len = d.len();
        let [ta, tb] = tmp;
        match ins.f {
            ChainFn::Un(f) => {
                if !matches!(ins.l, Opd::Reg(r) if r == regs.2) {
                    d.copy_from_slice(chain_operand(ins.l, g0, len, regs, pre[0], ta));
                }
                unary_in_place(kern, f, d);
            }
            ChainFn::Clamp(lo, hi) => {
                let x = chain_operand(ins.l, g0, len, regs, pre[0], ta);
                clamp_wide(kern, x, d, lo, hi);
            }
            ChainFn::Wide(t) => {
                let a = chain_operand(ins.l, g0, len, regs, pre[0], ta);
                let b = chain_operand(ins.r, g0, len, regs, pre[1], tb);
                t(kern, a, b, d);
            }
            ChainFn::Bin(t) => {
                let a = chain_operand(ins.l, g0, len, regs, pre[0], ta);
                let b = chain_operand(ins.r, g0, len, regs, pre[1], tb);
                // SAFETY: both operands hold `len` values, as `d` does; the tier's
                // features were detected when `Kernels` was built.
                unsafe { t(a, b, d) };
            }
        }
    };
    par::for_runs(par, block, y, 2 * code.len(), |start, part| {
        // Each repeated operand whose period divides the block, over a whole block: every
        // block starts at a multiple of its period. (Not on a device, whose blocks are
        // short: there they are repeated block by block, in less code.)
        let pre: alloc::vec::Vec<[alloc::vec::Vec<f32>; 2]> = code
            .iter()
            .map(|c| {
                [c.l, c.r].map(|o| match o {
                    Opd::Src(s)
                        if cfg!(feature = "std")
                            && s.len() < n
                            && block.is_multiple_of(s.len()) =>
                    {
                        repeated(s, block)
                    }
                    _ => alloc::vec::Vec::new(),
                })
            })
            .collect();
        let mut regs = [0.0f32; R * CHAIN_MAX];
        let mut tmp = [[0.0f32; CHAIN_MAX]; 2];
        for (bi, yb) in part.chunks_mut(block).enumerate() {
            let (g0, len) = (start + bi * block, yb.len());
            for (ins, pre) in body.iter().zip(&pre) {
                let (lo, rest) = regs.split_at_mut(ins.dst * CHAIN_MAX);
                let (d, hi) = rest.split_at_mut(CHAIN_MAX);
                let pre = [&pre[0][..], &pre[1][..]];
                run(ins, g0, (lo, hi, ins.dst), pre, &mut tmp, &mut d[..len]);
            }
            let p = &pre[body.len()];
            run(last, g0, (&regs, &[], R), [&p[0], &p[1]], &mut tmp, yb);
        }
        Ok(())
    })
}

/// `s` repeated to `len` values (`s` not empty): the first copy, then the filled part
/// doubled (a constant spread over a block in a few copies, not value by value).
fn repeated(s: &[f32], len: usize) -> alloc::vec::Vec<f32> {
    let mut v = alloc::vec::Vec::with_capacity(len);
    v.extend_from_slice(&s[..s.len().min(len)]);
    while v.len() < len {
        let k = v.len().min(len - v.len());
        v.extend_from_within(..k);
    }
    v
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `y = a ∘ b` over the 4-D `dims` with per-operand element strides.
fn binary(
    kern: &Kernels,
    par: &Par,
    f: BinOp,
    dims: [u32; 4],
    (a, sa): (&[f32], [u32; 4]),
    (b, sb): (&[f32], [u32; 4]),
    y: &mut [f32],
) -> Result<()> {
    let d = dims.map(|v| v as usize);
    let n = checked(&d)?;
    shape_need("BinF32", n, y.len())?;
    // The last element each operand reads must exist.
    let reach = |s: [u32; 4]| -> usize {
        (0..4)
            .map(|i| d[i].saturating_sub(1) * s[i] as usize)
            .sum::<usize>()
            + 1
    };
    if n > 0 {
        shape_need("BinF32", reach(sa), a.len())?;
        shape_need("BinF32", reach(sb), b.len())?;
    }
    let (sa, sb) = (sa.map(|v| v as usize), sb.map(|v| v as usize));
    // The four arithmetic operations on the kernel tier (the same IEEE operations, in the
    // tier's widest vectors): biases, residuals, masks, scalings.
    let tier = match f {
        BinOp::Add => Some(kern.ew.f.add_f32),
        BinOp::Mul => Some(kern.ew.f.mul_f32),
        BinOp::Sub => Some(kern.ew.f.sub_f32),
        BinOp::Div => Some(kern.ew.f.div_f32),
        _ => None,
    };
    // Rows of a few values stay in the loops below (a call per row would cost more).
    let dense = [d[1] * d[2] * d[3], d[2] * d[3], d[3], 1];
    let long = d[3] >= 16 || (sa == dense && sb == dense);
    let runs_fit = sa[3] <= 1 && sb[3] <= 1 && long;
    if let Some(tier) = tier.filter(|_| runs_fit) {
        // SAFETY: the tier's features were detected when `Kernels` was built;
        // `binary_runs` passes it three slices of one length.
        let f = move |x: &[f32], z: &[f32], v: &mut [f32]| unsafe { tier(x, z, v) };
        return binary_runs(par, f, d, (a, sa), (b, sb), y);
    }
    // Max, Min, PRelu (a per-channel slope over NCHW planes) and the comparisons (masks,
    // IsNaN) in the tier's widest vectors, with the same formula as the loop below; std
    // builds only (the firmware counts its code bytes).
    #[cfg(feature = "std")]
    if let Some(w) = wide_bin(f).filter(|_| runs_fit) {
        let f = move |x: &[f32], z: &[f32], v: &mut [f32]| w(kern, x, z, v);
        return binary_runs(par, f, d, (a, sa), (b, sb), y);
    }
    // One monomorphic loop nest per operator: the row loops vectorise.
    match f {
        BinOp::Add => binary_rows(|x, z| x + z, d, (a, sa), (b, sb), y),
        BinOp::Sub => binary_rows(|x, z| x - z, d, (a, sa), (b, sb), y),
        BinOp::Mul => binary_rows(|x, z| x * z, d, (a, sa), (b, sb), y),
        BinOp::Div => binary_rows(|x, z| x / z, d, (a, sa), (b, sb), y),
        // The rarer operations share one loop (one copy of it in a size-bound firmware).
        other => binary_rows(
            move |x, z| binary_other(other, x, z),
            d,
            (a, sa),
            (b, sb),
            y,
        ),
    }
    Ok(())
}

/// The wide form of an operation [`binary`] otherwise runs in its shared loop.
#[cfg(feature = "std")]
fn wide_bin(f: BinOp) -> Option<fn(&Kernels, &[f32], &[f32], &mut [f32])> {
    Some(match f {
        BinOp::Max => max_wide,
        BinOp::Min => min_wide,
        BinOp::PRelu => prelu_wide,
        BinOp::Eq => eq_wide,
        BinOp::Ne => ne_wide,
        BinOp::Lt => lt_wide,
        BinOp::Le => le_wide,
        BinOp::Gt => gt_wide,
        BinOp::Ge => ge_wide,
        BinOp::NanTo => nan_to_wide,
        _ => return None,
    })
}

/// [`binary`] where each operand runs along the last axis or holds one value there (a
/// scalar per row, spread over a short run of copies): the tier's kernel on each row, on
/// the whole when both are dense. Large ops split over the threads by whole rows (by runs
/// of 64 values when dense); each value is the same operation on any thread. Extents were
/// checked by the caller.
fn binary_runs(
    par: &Par,
    tier: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
    d: [usize; 4],
    (a, sa): (&[f32], [usize; 4]),
    (b, sb): (&[f32], [usize; 4]),
    y: &mut [f32],
) -> Result<()> {
    let dense = [d[1] * d[2] * d[3], d[2] * d[3], d[3], 1];
    let n = d.iter().product::<usize>();
    let y = &mut y[..n];
    // Values `r` (dense) or rows `r` into `out`.
    let dense_part = |r: core::ops::Range<usize>, out: &mut [f32]| {
        tier(&a[r.clone()], &b[r], out);
    };
    let rows_part = |r: core::ops::Range<usize>, out: &mut [f32]| {
        let run = d[3];
        for (k, row) in r.zip(out.chunks_exact_mut(run)) {
            let (i0, i1, i2) = (k / (d[1] * d[2]), k / d[2] % d[1], k % d[2]);
            let ba = i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
            let bb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2];
            match (sa[3], sb[3]) {
                (1, 1) => tier(&a[ba..ba + run], &b[bb..bb + run], row),
                (1, _) => {
                    let z = [b[bb]; 64];
                    for (j, part) in row.chunks_mut(64).enumerate() {
                        let x = &a[ba + j * 64..][..part.len()];
                        tier(x, &z[..part.len()], part);
                    }
                }
                (_, 1) => {
                    let z = [a[ba]; 64];
                    for (j, part) in row.chunks_mut(64).enumerate() {
                        let x = &b[bb + j * 64..][..part.len()];
                        tier(&z[..part.len()], x, part);
                    }
                }
                _ => {
                    let (p, q) = ([a[ba]; 1], [b[bb]; 1]);
                    let mut v = [0.0f32; 1];
                    tier(&p, &q, &mut v);
                    row.fill(v[0]);
                }
            }
        }
    };
    let is_dense = sa == dense && sb == dense;
    // Units: runs of 64 values, or rows; a value costs about eight multiply-adds' time
    // (MiniLM's 128 × 384 residual adds: 3.4 µs).
    let (unit, units) = if is_dense {
        (64, n / 64)
    } else {
        (d[3], d[0] * d[1] * d[2])
    };
    let parts = par.parts(units, 8 * n);
    if parts <= 1 {
        if is_dense {
            dense_part(0..n, y);
        } else {
            rows_part(0..units, y);
        }
        return Ok(());
    }
    let mut items = alloc::vec::Vec::with_capacity(parts);
    let mut rest = y;
    for r in par::runs(units, parts) {
        // The last dense run takes the values past the last whole unit.
        let end = if is_dense && r.end == units {
            n
        } else {
            r.end * unit
        };
        let (part, tail) = rest.split_at_mut(end - r.start * unit);
        items.push((r, part));
        rest = tail;
    }
    par.each(items, |(r, out)| {
        if is_dense {
            let end = r.start * unit + out.len();
            dense_part(r.start * unit..end, out);
        } else {
            rows_part(r, out);
        }
        Ok(())
    })
}

/// The loop nest of [`binary`] for one operator; extents were checked by the caller.
#[inline(always)]
fn binary_rows<F: Fn(f32, f32) -> f32 + Copy>(
    op: F,
    d: [usize; 4],
    (a, sa): (&[f32], [usize; 4]),
    (b, sb): (&[f32], [usize; 4]),
    y: &mut [f32],
) {
    let dense = [d[1] * d[2] * d[3], d[2] * d[3], d[3], 1];
    let n = d.iter().product::<usize>();
    if sa == dense && sb == dense {
        for ((v, &x), &z) in y[..n].iter_mut().zip(&a[..n]).zip(&b[..n]) {
            *v = op(x, z);
        }
        return;
    }
    let mut o = 0;
    for i0 in 0..d[0] {
        for i1 in 0..d[1] {
            for i2 in 0..d[2] {
                let ba = i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
                let bb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2];
                let row = &mut y[o..o + d[3]];
                match (sa[3], sb[3]) {
                    (1, 1) => {
                        for ((v, &x), &z) in
                            row.iter_mut().zip(&a[ba..ba + d[3]]).zip(&b[bb..bb + d[3]])
                        {
                            *v = op(x, z);
                        }
                    }
                    (1, 0) => {
                        let z = b[bb];
                        for (v, &x) in row.iter_mut().zip(&a[ba..ba + d[3]]) {
                            *v = op(x, z);
                        }
                    }
                    (0, 1) => {
                        let x = a[ba];
                        for (v, &z) in row.iter_mut().zip(&b[bb..bb + d[3]]) {
                            *v = op(x, z);
                        }
                    }
                    _ => {
                        for (i3, v) in row.iter_mut().enumerate() {
                            *v = op(a[ba + i3 * sa[3]], b[bb + i3 * sb[3]]);
                        }
                    }
                }
                o += d[3];
            }
        }
    }
}

/// Max, Min, Pow, PRelu, Elu, the comparisons (1.0 where true) and NaN's replacement.
#[inline]
fn binary_other(f: BinOp, x: f32, z: f32) -> f32 {
    let b = |t: bool| t as u8 as f32;
    match f {
        BinOp::Max => x.max(z),
        BinOp::Min => x.min(z),
        BinOp::Pow => libm::powf(x, z),
        BinOp::PRelu => {
            if x < 0.0 {
                x * z
            } else {
                x
            }
        }
        BinOp::Elu => {
            if x < 0.0 {
                z * (libm::expf(x) - 1.0)
            } else {
                x
            }
        }
        BinOp::Eq => b(x == z),
        BinOp::Ne => b(x != z),
        BinOp::Lt => b(x < z),
        BinOp::Le => b(x <= z),
        BinOp::Gt => b(x > z),
        BinOp::Ge => b(x >= z),
        BinOp::NanTo => {
            if x.is_nan() {
                z
            } else {
                x
            }
        }
        BinOp::Add => x + z,
        BinOp::Sub => x - z,
        BinOp::Mul => x * z,
        BinOp::Div => x / z,
    }
}

/// `y = c != 0 ? a : b` over `dims`, each operand read through its strides.
fn select(
    kern: &Kernels,
    dims: [u32; 4],
    (c, sc): (&[f32], [u32; 4]),
    (a, sa): (&[f32], [u32; 4]),
    (b, sb): (&[f32], [u32; 4]),
    y: &mut [f32],
) -> Result<()> {
    let d = dims.map(|v| v as usize);
    let n = checked(&d)?;
    shape_need("WhereF32", n, y.len())?;
    let reach = |s: [u32; 4]| -> usize {
        (0..4)
            .map(|i| d[i].saturating_sub(1) * s[i] as usize)
            .sum::<usize>()
            + 1
    };
    if n > 0 {
        shape_need("WhereF32", reach(sc), c.len())?;
        shape_need("WhereF32", reach(sa), a.len())?;
        shape_need("WhereF32", reach(sb), b.len())?;
    }
    let (sc, sa, sb) = (
        sc.map(|v| v as usize),
        sa.map(|v| v as usize),
        sb.map(|v| v as usize),
    );
    #[cfg(feature = "std")]
    if sc[3] <= 1 && sa[3] <= 1 && sb[3] <= 1 {
        select_runs(kern, d, (c, sc), (a, sa), (b, sb), y);
        return Ok(());
    }
    #[cfg(not(feature = "std"))]
    let _ = kern;
    let at = |s: [usize; 4], i: [usize; 4]| i[0] * s[0] + i[1] * s[1] + i[2] * s[2] + i[3] * s[3];
    let mut o = 0;
    for i0 in 0..d[0] {
        for i1 in 0..d[1] {
            for i2 in 0..d[2] {
                for i3 in 0..d[3] {
                    let ix = [i0, i1, i2, i3];
                    y[o] = if c[at(sc, ix)] != 0.0 {
                        a[at(sa, ix)]
                    } else {
                        b[at(sb, ix)]
                    };
                    o += 1;
                }
            }
        }
    }
    Ok(())
}

#[inline(always)]
#[cfg(feature = "std")]
fn select_body(c: &[f32], a: &[f32], b: &[f32], y: &mut [f32]) {
    for (((y, &c), &a), &b) in y.iter_mut().zip(c).zip(a).zip(b) {
        *y = if c != 0.0 { a } else { b };
    }
}

#[cfg(feature = "std")]
widened!(select_wide(c: &[f32], a: &[f32], b: &[f32], y: &mut [f32]) => select_body);

/// [`select`] where each operand runs along the last axis or holds one value there: each
/// row in pieces of up to [`SELECT_PIECE`] values, a one-value operand spread over a
/// buffer, the pieces selected in the tier's widest vectors. Extents were checked by the
/// caller.
#[cfg(feature = "std")]
fn select_runs(
    kern: &Kernels,
    d: [usize; 4],
    (c, sc): (&[f32], [usize; 4]),
    (a, sa): (&[f32], [usize; 4]),
    (b, sb): (&[f32], [usize; 4]),
    y: &mut [f32],
) {
    let mut bufs = [[0.0f32; SELECT_PIECE]; 3];
    // The value each buffer holds throughout (a mask's constants are spread once).
    let mut held: [Option<u32>; 3] = [None; 3];
    let base = |s: [usize; 4], i0: usize, i1: usize, i2: usize| i0 * s[0] + i1 * s[1] + i2 * s[2];
    let mut rows = y[..d.iter().product::<usize>()].chunks_exact_mut(d[3].max(1));
    for i0 in 0..d[0] {
        for i1 in 0..d[1] {
            for i2 in 0..d[2] {
                let Some(row) = rows.next() else { return };
                for (j, piece) in row.chunks_mut(SELECT_PIECE).enumerate() {
                    let (len, at) = (piece.len(), j * SELECT_PIECE);
                    let [bc, ba, bb] = &mut bufs;
                    let [hc, ha, hb] = &mut held;
                    let (cv, av, bv) = (
                        piece_of(c, sc[3], base(sc, i0, i1, i2), (at, len), bc, hc),
                        piece_of(a, sa[3], base(sa, i0, i1, i2), (at, len), ba, ha),
                        piece_of(b, sb[3], base(sb, i0, i1, i2), (at, len), bb, hb),
                    );
                    select_wide(kern, cv, av, bv, piece);
                }
            }
        }
    }
}

/// `len` values of a row of `v` from its offset `at` (inner stride 1), or the row's one
/// value spread over `buf` (inner stride 0; `held` the bits `buf` is filled with, if it
/// is, so an unchanged value is not spread again); the row starts at `k`.
#[inline(always)]
#[cfg(feature = "std")]
fn piece_of<'a>(
    v: &'a [f32],
    s3: usize,
    k: usize,
    (at, len): (usize, usize),
    buf: &'a mut [f32; SELECT_PIECE],
    held: &mut Option<u32>,
) -> &'a [f32] {
    if s3 == 1 {
        return &v[k + at..][..len];
    }
    if *held != Some(v[k].to_bits()) {
        buf.fill(v[k]);
        *held = Some(v[k].to_bits());
    }
    &buf[..len]
}

/// Values per piece of [`select_runs`].
#[cfg(feature = "std")]
const SELECT_PIECE: usize = 256;

/// Grouped convolution of NCHW planes: for every output channel, every tap of its group's
/// inputs added over the output rows it reaches (the inner loop runs along a row).
fn group_conv_f32(
    kern: &Kernels,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
) -> Result<()> {
    const OP: &str = "GroupConvF32";
    let (oh, ow) = (g.oh(), g.ow());
    let icg = g.ic / g.groups.max(1);
    shape_need(OP, checked(&[g.ic, g.h, g.w])?, x.len())?;
    shape_need(OP, checked(&[g.oc, oh, ow])?, y.len())?;
    shape_need(OP, checked(&[g.oc, icg, g.kh, g.kw])?, w.len())?;
    if !bias.is_empty() {
        shape_need(OP, g.oc, bias.len())?;
    }
    group_conv_wide(kern, g, x, w, bias, y);
    Ok(())
}

/// `y = min(max(x, lo), hi)`.
#[inline(always)]
fn clamp_f32(x: &[f32], y: &mut [f32], lo: f32, hi: f32) {
    for (d, &v) in y.iter_mut().zip(x) {
        *d = v.max(lo).min(hi);
    }
}

/// Depthwise f32 convolution of an NHWC map (one image): weights `[kh][kw][c]`, bias of
/// `c` values or none. The sum of each output is the bias, then the taps in the order
/// (kernel row, kernel column), as [`group_conv_f32`] adds them. The kernels' entry point
/// checks the geometry and the buffers.
fn dw_f32(
    kern: &Kernels,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
) -> Result<()> {
    Ok(kops::depthwise_f32(kern, g, x, w, bias, y)?)
}

/// The body of [`group_conv_f32`], shapes checked: for each output row, every tap of the
/// group's inputs added along the row in the order (input, kernel row, kernel column), so
/// the row stays in L1 across the taps.
#[inline(always)]
fn group_conv_rows(g: &ConvGeom, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
    let icg = g.ic / g.groups.max(1);
    let ocg = g.oc / g.groups.max(1);
    for o in 0..g.oc {
        let plane = &mut y[o * oh * ow..][..oh * ow];
        plane.fill(bias.get(o).copied().unwrap_or(0.0));
        let grp = o / ocg.max(1);
        for oy in 0..oh {
            let dst = &mut plane[oy * ow..][..ow];
            for i in 0..icg {
                let src = &x[(grp * icg + i) * g.h * g.w..][..g.h * g.w];
                for ky in 0..g.kh {
                    let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let row = &src[iy as usize * g.w..][..g.w];
                    for kx in 0..g.kw {
                        let wv = w[((o * icg + i) * g.kh + ky) * g.kw + kx];
                        // Output columns whose input column is inside the row.
                        let off = (kx * g.dil_w) as isize - g.pad_left as isize;
                        let lo = if off >= 0 {
                            0
                        } else {
                            ((-off) as usize).div_ceil(g.stride_w)
                        };
                        let hi = if (g.w as isize) <= off {
                            0
                        } else {
                            ((g.w as isize - off - 1) as usize / g.stride_w + 1).min(ow)
                        };
                        if lo >= hi {
                            continue;
                        }
                        if g.stride_w == 1 {
                            let s0 = (lo as isize + off) as usize;
                            for (d, &v) in dst[lo..hi].iter_mut().zip(&row[s0..s0 + hi - lo]) {
                                *d += wv * v;
                            }
                        } else {
                            for (ox, d) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                                *d += wv * row[((ox * g.stride_w) as isize + off) as usize];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Max or average pooling of `g.ic` planes `[g.h, g.w]` into `[g.oh(), g.ow()]` each.
/// f32 NCHW `[n, c, hw]` → u8 NHWC `[n, hw, c]` (Quantize into a quantised map): each
/// channel's run quantised by the tier's kernel (division, as QuantizeLinear defines it),
/// 256 pixels at a time so the block's NHWC bytes stay in L1 while each channel's run
/// lands in them; the pixels split over the threads (each part writes its own pixels).
fn quantize_to_nhwc(
    kern: &Kernels,
    par: &Par,
    src: &[f32],
    [batch, hw, c]: [usize; 3],
    q: crate::plan::Q8,
    o: &mut [u8],
) -> Result<()> {
    shape_need(
        "Quantize",
        checked(&[batch, hw, c])?,
        o.len().min(src.len()),
    )?;
    for n in 0..batch {
        let src_n = &src[n * c * hw..][..c * hw];
        let o_n = &mut o[n * hw * c..][..hw * c];
        // Pixels `r` into `out` (their NHWC bytes).
        let pixels = |r: Range<usize>, out: &mut [u8]| -> Result<()> {
            let mut run = [0u8; 256];
            let mut rgb = [[0u8; 256]; 3];
            for p0 in (0..r.len()).step_by(run.len()) {
                let len = (r.len() - p0).min(run.len());
                let block = &mut out[p0 * c..][..len * c];
                if c == 3 && cfg!(feature = "std") {
                    // Three channels (an RGB image): each plane's run quantised, then
                    // interleaved by a loop of fixed shape the compiler vectorises (std
                    // builds: the firmware's code budget; the same bytes either way).
                    for (ch, q8) in rgb.iter_mut().enumerate() {
                        let part = &src_n[ch * hw + r.start + p0..][..len];
                        kops::quantize_u8(kern, part, q.scale, q.zero, &mut q8[..len])?;
                    }
                    let [a, b, d] = &rgb;
                    let px = block.chunks_exact_mut(3).zip(a).zip(b).zip(d);
                    for (((t, &a), &b), &d) in px {
                        t[0] = a;
                        t[1] = b;
                        t[2] = d;
                    }
                    continue;
                }
                for ch in 0..c {
                    let part = &src_n[ch * hw + r.start + p0..][..len];
                    let q8 = &mut run[..len];
                    kops::quantize_u8(kern, part, q.scale, q.zero, q8)?;
                    for (px, &b) in block.chunks_exact_mut(c).zip(q8.iter()) {
                        px[ch] = b;
                    }
                }
            }
            Ok(())
        };
        // Runs of whole pixels over the threads.
        par::for_runs(par, c, o_n, 8, |at, out| {
            pixels(at / c..(at + out.len()) / c, out)
        })?;
    }
    Ok(())
}

/// u8 NHWC `[n, hw, c]` → f32 NCHW `[n, c, hw]` (Dequantize of a quantised map for the
/// graph): 256 pixels at a time, so the block's NHWC bytes stay in L1 while each
/// channel's run is gathered and dequantised by the tier's kernel into its plane; the
/// channels split over the threads (each part writes its own planes).
fn dequantize_to_nchw(
    kern: &Kernels,
    par: &Par,
    src: &[u8],
    [batch, hw, c]: [usize; 3],
    q: crate::plan::Q8,
    dst: &mut [f32],
) -> Result<()> {
    shape_need("Dequantize", checked(&[batch, hw, c])?, src.len())?;
    shape_need("Dequantize", checked(&[batch, hw, c])?, dst.len())?;
    for n in 0..batch {
        let src_n = &src[n * hw * c..][..hw * c];
        let dst_n = &mut dst[n * c * hw..][..c * hw];
        // Channels `chs` into their planes `out`.
        let planes = |chs: Range<usize>, out: &mut [f32]| -> Result<()> {
            let mut run = [0u8; 256];
            for p0 in (0..hw).step_by(run.len()) {
                let len = (hw - p0).min(run.len());
                let block = &src_n[p0 * c..][..len * c];
                for (k, ch) in chs.clone().enumerate() {
                    for (b, px) in run.iter_mut().zip(block.chunks_exact(c)) {
                        *b = px[ch];
                    }
                    let plane = &mut out[k * hw + p0..][..len];
                    kops::dequantize_u8(kern, &run[..len], q.scale, q.zero, plane)?;
                }
            }
            Ok(())
        };
        // Runs of whole planes over the threads.
        par::for_runs(par, hw, dst_n, 8, |at, out| {
            planes(at / hw..(at + out.len()) / hw, out)
        })?;
    }
    Ok(())
}

/// The sum (or the max) of `run`: 16 running results side by side over blocks of 16
/// values, the rest into the first ones, then folded in halves (a fixed order, whatever
/// the length).
#[cfg(feature = "std")]
fn reduce_run(run: &[f32], max: bool) -> f32 {
    let op = |a: f32, b: f32| if max { a.max(b) } else { a + b };
    let mut acc = [if max { f32::NEG_INFINITY } else { 0.0 }; 16];
    let blocks = run.chunks_exact(16);
    let rest = blocks.remainder();
    if max {
        for b in blocks {
            acc.iter_mut().zip(b).for_each(|(a, &v)| *a = a.max(v));
        }
    } else {
        for b in blocks {
            acc.iter_mut().zip(b).for_each(|(a, &v)| *a += v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a = op(*a, v);
    }
    fold16(acc, max)
}

/// 16 running results folded in halves: `acc[k] ∘ acc[k + w]` for w = 8, 4, 2, 1.
fn fold16(mut acc: [f32; 16], max: bool) -> f32 {
    let op = |a: f32, b: f32| if max { a.max(b) } else { a + b };
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for k in 0..w {
            acc[k] = op(acc[k], acc[k + w]);
        }
    }
    acc[0]
}

/// [`reduce_run`]'s order over the values `get(0..len)`: value `l` into running result
/// `l % 16`, the 16 then folded in halves. Firmware reduces runs and strided positions
/// with it alone (one loop of code where the host has two that vectorise).
#[cfg(any(not(feature = "std"), test))]
fn reduce_by(get: impl Fn(usize) -> f32, len: usize, max: bool) -> f32 {
    let op = |a: f32, b: f32| if max { a.max(b) } else { a + b };
    let mut acc = [if max { f32::NEG_INFINITY } else { 0.0 }; 16];
    for l in 0..len {
        acc[l % 16] = op(acc[l % 16], get(l));
    }
    fold16(acc, max)
}

#[cfg(not(feature = "std"))]
fn reduce_run(run: &[f32], max: bool) -> f32 {
    reduce_by(|l| run[l], run.len(), max)
}

#[cfg(not(feature = "std"))]
fn reduce_strided(x: &[f32], y: &mut [f32], (outer, len, inner): (usize, usize, usize), max: bool) {
    for a in 0..outer {
        for i in 0..inner {
            y[a * inner + i] = reduce_by(|l| x[(a * len + l) * inner + i], len, max);
        }
    }
}

/// Each of the `inner` positions of `x` viewed as `[outer, len, inner]` reduced over `len`
/// in [`reduce_run`]'s order (value `l` into running result `l % 16`, the 16 then folded in
/// halves), a block of positions at a time: the same bits as the values in a run of their
/// own, so a map reduced over its pixels gives the same result stored NCHW (runs) or NHWC
/// (the channels innermost).
#[cfg(feature = "std")]
fn reduce_strided(x: &[f32], y: &mut [f32], (outer, len, inner): (usize, usize, usize), max: bool) {
    // 16 running results of BLOCK positions on the stack.
    const BLOCK: usize = 256;
    let op = |a: &mut [f32], b: &[f32]| {
        if max {
            a.iter_mut().zip(b).for_each(|(a, &v)| *a = a.max(v));
        } else {
            a.iter_mut().zip(b).for_each(|(a, &v)| *a += v);
        }
    };
    let init = if max { f32::NEG_INFINITY } else { 0.0 };
    let mut acc = [[init; BLOCK]; 16];
    for a in 0..outer {
        for i0 in (0..inner).step_by(BLOCK) {
            let w = BLOCK.min(inner - i0);
            acc.iter_mut().for_each(|r| r[..w].fill(init));
            for l in 0..len {
                op(&mut acc[l % 16][..w], &x[(a * len + l) * inner + i0..][..w]);
            }
            let mut half = 16;
            while half > 1 {
                half /= 2;
                for k in 0..half {
                    let (lo, hi) = acc.split_at_mut(k + half);
                    op(&mut lo[k][..w], &hi[0][..w]);
                }
            }
            y[a * inner + i0..][..w].copy_from_slice(&acc[0][..w]);
        }
    }
}

/// Nearest upsampling by whole factors of `x` viewed as `[outer, h, w, run bytes]` into
/// `[outer, h·fh, w·fw, run]` (lengths checked by the caller): each input row spread once,
/// then copied down `fh - 1` times.
fn upsample(x: &[u8], o: &mut [u8], [outer, h, w, run]: [usize; 4], fh: usize, fw: usize) {
    let row = w * fw * run;
    for a in 0..outer {
        for yy in 0..h {
            let src = &x[(a * h + yy) * w * run..][..w * run];
            let at = (a * h * fh + yy * fh) * row;
            let first = &mut o[at..][..row];
            // Words where the runs allow (f32 values), else bytes (firmware: bytes).
            match (
                bytemuck::try_cast_slice::<u8, u32>(src),
                bytemuck::try_cast_slice_mut::<u8, u32>(first),
            ) {
                (Ok(s4), Ok(d4)) if run % 4 == 0 && cfg!(feature = "std") => {
                    spread(s4, d4, run / 4, fw)
                }
                _ => spread(src, first, run, fw),
            }
            for r in 1..fh {
                o.copy_within(at..at + row, at + r * row);
            }
        }
    }
}

/// Each run of `run` values of `src` written `f` times in a row into `dst`.
fn spread<T: Copy>(src: &[T], dst: &mut [T], run: usize, f: usize) {
    if run == 1 {
        for (d, &v) in dst.chunks_exact_mut(f).zip(src) {
            d.fill(v);
        }
        return;
    }
    for (d, v) in dst.chunks_exact_mut(run * f).zip(src.chunks_exact(run)) {
        for part in d.chunks_exact_mut(run) {
            part.copy_from_slice(v);
        }
    }
}

fn pool_f32(
    kern: &Kernels,
    g: &ConvGeom,
    x: &[f32],
    max: bool,
    count_pad: bool,
    y: &mut [f32],
) -> Result<()> {
    if g.stride_h == 0 || g.stride_w == 0 || g.kh == 0 || g.kw == 0 || g.dil_h == 0 || g.dil_w == 0
    {
        return Err(shape_err("PoolF32", 1, 0));
    }
    if g.h + g.pad_top + g.pad_bottom < g.dil_h * (g.kh - 1) + 1
        || g.w + g.pad_left + g.pad_right < g.dil_w * (g.kw - 1) + 1
    {
        return Err(shape_err("PoolF32", g.kh, g.h));
    }
    let (oh, ow) = (g.oh(), g.ow());
    shape_need("PoolF32", checked(&[g.ic, g.h, g.w])?, x.len())?;
    shape_need("PoolF32", checked(&[g.ic, oh, ow])?, y.len())?;
    let unit = g.stride_h == 1 && g.stride_w == 1 && g.dil_h == 1 && g.dil_w == 1;
    let pairs = (g.kh == 1 || g.kh == 2)
        && [g.kw, g.stride_h, g.stride_w] == [2, g.kh, 2]
        && [g.dil_h, g.dil_w] == [1; 2]
        && [g.pad_top, g.pad_left, g.pad_bottom, g.pad_right] == [0; 4]
        && g.kh * oh <= g.h
        && 2 * ow <= g.w;
    if max && unit && g.kh * g.kw > 4 && cfg!(feature = "std") {
        max_planes_separable_wide(kern, g, x, y);
    } else if pairs && cfg!(feature = "std") {
        pool_pairs_wide(kern, g, x, max, y);
    } else {
        pool_planes_wide(kern, g, x, max, count_pad, y);
    }
    Ok(())
}

widened!(max_planes_separable_wide(g: &ConvGeom, x: &[f32], y: &mut [f32]) => max_planes_separable);

/// Whether an NHWC u8 max pool is a 2×2 one at stride 2 or a 1×2 one at stride (1, 2),
/// without padding, every window inside the map, over buffers that hold it.
#[cfg(feature = "std")]
fn pool_pairs_fit(g: &ConvGeom, x_len: usize, y_len: usize) -> bool {
    let pairs = (g.kh == 1 || g.kh == 2)
        && [g.kw, g.stride_h, g.stride_w] == [2, g.kh, 2]
        && [g.dil_h, g.dil_w] == [1; 2]
        && [g.pad_top, g.pad_left, g.pad_bottom, g.pad_right] == [0; 4]
        && g.ic > 0
        && g.ic == g.oc;
    pairs
        && checked(&[g.h, g.w, g.ic]).is_ok_and(|n| n <= x_len)
        && g.kh * g.oh() <= g.h
        && 2 * g.ow() <= g.w
        && checked(&[g.oh(), g.ow(), g.ic]).is_ok_and(|n| n <= y_len)
}

#[cfg(feature = "std")]
widened!(max_pool_u8_pairs_wide(g: &ConvGeom, x: &[u8], y: &mut [u8]) => max_pool_u8_pairs);

/// [`pool_pairs_fit`]'s pools over NHWC u8: each output pixel's channels the maximum of
/// its two (or four) input pixels' channels, 16 at a time (the last 16 overlapping the
/// ones before: the maximum of the same values again), byte by byte below 16 channels.
/// The maximum of the same codes as the kernels' pool, so the same bytes.
#[cfg(feature = "std")]
#[inline(always)]
fn max_pool_u8_pairs(g: &ConvGeom, x: &[u8], y: &mut [u8]) {
    let (oh, ow, kh, c) = (g.oh(), g.ow(), g.kh, g.ic);
    let row = g.w * c;
    for oy in 0..oh {
        let r0 = &x[kh * oy * row..][..2 * ow * c];
        // A 1×2 pool reads its one row twice.
        let r1 = &x[(kh * oy + kh - 1) * row..][..2 * ow * c];
        let out = &mut y[oy * ow * c..][..ow * c];
        let pixels = out
            .chunks_exact_mut(c)
            .zip(r0.chunks_exact(2 * c))
            .zip(r1.chunks_exact(2 * c));
        for ((o, a), b) in pixels {
            let (a0, a1) = a.split_at(c);
            let (b0, b1) = b.split_at(c);
            if c < 16 {
                for i in 0..c {
                    o[i] = a0[i].max(a1[i]).max(b0[i].max(b1[i]));
                }
                continue;
            }
            let mut at = 0;
            loop {
                let k = at.min(c - 16);
                let (o, a0, a1, b0, b1) = (
                    &mut o[k..k + 16],
                    &a0[k..k + 16],
                    &a1[k..k + 16],
                    &b0[k..k + 16],
                    &b1[k..k + 16],
                );
                for i in 0..16 {
                    o[i] = a0[i].max(a1[i]).max(b0[i].max(b1[i]));
                }
                if k + 16 == c {
                    break;
                }
                at += 16;
            }
        }
    }
}
widened!(pool_pairs_wide(g: &ConvGeom, x: &[f32], max: bool, y: &mut [f32]) => pool_pairs);

/// 2×2 pooling at stride 2, or 1×2 at stride (1, 2), without padding, every window inside
/// the planes: each output row from its input rows in one pass (a pass per tap cost more
/// than the taps on small maps). The same operations in the same order as
/// [`pool_planes`]: from -inf (or 0), the taps rows then columns, an average divided by
/// the taps after.
#[inline(always)]
fn pool_pairs(g: &ConvGeom, x: &[f32], max: bool, y: &mut [f32]) {
    let (oh, ow, kh) = (g.oh(), g.ow(), g.kh);
    for p in 0..g.ic {
        let plane = &x[p * g.h * g.w..][..g.h * g.w];
        for oy in 0..oh {
            let r0 = &plane[kh * oy * g.w..][..2 * ow];
            let row = &mut y[(p * oh + oy) * ow..][..ow];
            if kh == 1 {
                let pairs = row.iter_mut().zip(r0.chunks_exact(2));
                if max {
                    pairs.for_each(|(out, a)| *out = f32::NEG_INFINITY.max(a[0]).max(a[1]));
                } else {
                    pairs.for_each(|(out, a)| *out = (0.0 + a[0] + a[1]) / 2.0);
                }
                continue;
            }
            let r1 = &plane[(2 * oy + 1) * g.w..][..2 * ow];
            let quads = row
                .iter_mut()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2));
            if max {
                quads.for_each(|((out, a), b)| {
                    *out = f32::NEG_INFINITY.max(a[0]).max(a[1]).max(b[0]).max(b[1]);
                });
            } else {
                quads.for_each(|((out, a), b)| *out = (0.0 + a[0] + a[1] + b[0] + b[1]) / 4.0);
            }
        }
    }
}

/// Max pooling of `g.ic` planes at stride 1 without dilation, separably: each input row's
/// maximum over the kernel's columns first, then the maximum of those over its rows for
/// a whole plane in one pass per kernel row (kw + kh steps per output rather than kw·kh;
/// SPPF's 5×5 pools on a 10×10 map took 0.13 ms each tap by tap). The maximum of the
/// same values whatever their order; positions outside the image are skipped, an output
/// with none inside is -inf, as in [`pool_planes`].
#[inline(always)]
fn max_planes_separable(g: &ConvGeom, x: &[f32], y: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
    let mut h = alloc::vec![f32::NEG_INFINITY; g.h * ow];
    for p in 0..g.ic {
        let plane = &x[p * g.h * g.w..][..g.h * g.w];
        for iy in 0..g.h {
            let src = &plane[iy * g.w..][..g.w];
            let row = &mut h[iy * ow..][..ow];
            row.fill(f32::NEG_INFINITY);
            for kx in 0..g.kw {
                // Outputs `a..b` read this column: pad ≤ ox + kx < w + pad.
                let a = g.pad_left.saturating_sub(kx).min(ow);
                let b = (g.w + g.pad_left).saturating_sub(kx).clamp(a, ow);
                let Some(first) = (a + kx).checked_sub(g.pad_left) else {
                    continue;
                };
                let src = src.get(first..).unwrap_or(&[]);
                for (o, &v) in row[a..b].iter_mut().zip(src) {
                    *o = o.max(v);
                }
            }
        }
        let out = &mut y[p * oh * ow..][..oh * ow];
        out.fill(f32::NEG_INFINITY);
        for ky in 0..g.kh {
            let a = g.pad_top.saturating_sub(ky).min(oh);
            let b = (g.h + g.pad_top).saturating_sub(ky).clamp(a, oh);
            let Some(first) = (a + ky).checked_sub(g.pad_top) else {
                continue;
            };
            let src = h.get(first * ow..).unwrap_or(&[]);
            for (o, &v) in out[a * ow..b * ow].iter_mut().zip(src) {
                *o = o.max(v);
            }
        }
    }
}

widened!(pool_planes_wide(g: &ConvGeom, x: &[f32], max: bool, count_pad: bool, y: &mut [f32]) => pool_planes);

/// [`pool_f32`] after its checks: a row of outputs at a time, one kernel tap at a time
/// across the outputs it falls inside the image for (independent sums; each output still
/// takes its taps rows then columns, skipping those outside).
#[inline(always)]
fn pool_planes(g: &ConvGeom, x: &[f32], max: bool, count_pad: bool, y: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
    let (sw, dw) = (g.stride_w, g.dil_w);
    for p in 0..g.ic {
        let plane = &x[p * g.h * g.w..][..g.h * g.w];
        for oy in 0..oh {
            let (ky0, ky1) = taps_inside(oy * g.stride_h, g.dil_h, g.pad_top, g.h, g.kh);
            let row = &mut y[(p * oh + oy) * ow..][..ow];
            row.fill(if max { f32::NEG_INFINITY } else { 0.0 });
            for ky in ky0..ky1 {
                let iy = oy * g.stride_h + ky * g.dil_h - g.pad_top;
                let src = &plane[iy * g.w..][..g.w];
                for kx in 0..g.kw {
                    // Outputs `a..b` have this column inside: pad ≤ ox·sw + kx·dw < w + pad.
                    let at = kx * dw;
                    let a = g.pad_left.saturating_sub(at).div_ceil(sw).min(ow);
                    let b = (g.w + g.pad_left)
                        .saturating_sub(at)
                        .div_ceil(sw)
                        .clamp(a, ow);
                    let Some(first) = (a * sw + at).checked_sub(g.pad_left) else {
                        continue;
                    };
                    let src = src.get(first..).unwrap_or(&[]);
                    let row = &mut row[a..b];
                    // The two fast paths are std-only (the firmware's code budget);
                    // every path gives the same values.
                    if sw == 1 && cfg!(feature = "std") {
                        // Contiguous taps: a loop the compiler vectorises.
                        let src = &src[..row.len().min(src.len())];
                        let pairs = row.iter_mut().zip(src);
                        if max {
                            pairs.for_each(|(out, &v)| *out = out.max(v));
                        } else {
                            pairs.for_each(|(out, &v)| *out += v);
                        }
                        continue;
                    }
                    if sw == 2 && cfg!(feature = "std") {
                        // Pairs of columns, the first of each: loads the compiler
                        // vectorises with a shuffle. The last tap may lack its pair.
                        let full = row.len().min(src.len() / 2);
                        let (head, tail) = row.split_at_mut(full);
                        let pairs = head.iter_mut().zip(src.chunks_exact(2));
                        if max {
                            pairs.for_each(|(out, p)| *out = out.max(p[0]));
                        } else {
                            pairs.for_each(|(out, p)| *out += p[0]);
                        }
                        for (i, out) in tail.iter_mut().enumerate() {
                            let v = src[2 * (full + i)];
                            *out = if max { out.max(v) } else { *out + v };
                        }
                        continue;
                    }
                    let pairs = row.iter_mut().zip(src.iter().step_by(sw));
                    if max {
                        pairs.for_each(|(out, &v)| *out = out.max(v));
                    } else {
                        pairs.for_each(|(out, &v)| *out += v);
                    }
                }
            }
            if !max {
                for (ox, out) in row.iter_mut().enumerate() {
                    let n = if count_pad {
                        g.kh * g.kw
                    } else {
                        let (kx0, kx1) = taps_inside(ox * sw, dw, g.pad_left, g.w, g.kw);
                        (ky1 - ky0) * (kx1 - kx0)
                    };
                    *out /= n.max(1) as f32;
                }
            }
        }
    }
}

/// The taps `k` in `lo..hi` of a kernel of `taps` taps whose position `start + k·dil - pad`
/// falls inside `0..len` (they are consecutive: the position grows with `k`).
#[inline]
fn taps_inside(start: usize, dil: usize, pad: usize, len: usize, taps: usize) -> (usize, usize) {
    let (before, room) = (pad.saturating_sub(start), (len + pad).saturating_sub(start));
    // k·dil ≥ pad - start and k·dil < len + pad - start; no division without dilation.
    let (lo, hi) = if dil <= 1 {
        (before, room)
    } else {
        (before.div_ceil(dil), room.div_ceil(dil))
    };
    let lo = lo.min(taps);
    (lo, hi.min(taps).max(lo))
}

/// Source index pairs and the weight of the second along one axis of a linear resize
/// (ONNX Resize's coordinate transforms; the source coordinate clamped to the input).
fn linear_tap(o: usize, len: usize, out: usize, ct: u32, scale: f32) -> (usize, usize, f32) {
    let of = o as f32;
    let src = match ct {
        1 if out <= 1 => 0.0,
        0 | 1 => (of + 0.5) / scale - 0.5,
        // The resized length is len · scale, unrounded (ONNX's reference).
        2 if len as f32 * scale <= 1.0 => 0.0,
        2 => of * (len as f32 - 1.0) / (len as f32 * scale - 1.0),
        _ => of / scale,
    };
    let last = len.saturating_sub(1);
    // Not `clamp`: its bounds assertion formats floats (linking the float formatter),
    // and a NaN coordinate (a zero scale) reads the first pixel rather than NaN weights.
    let src = src.max(0.0).min(last as f32);
    let a = (src as usize).min(last);
    (a, (a + 1).min(last), src - a as f32)
}

/// Bilinear resize of `outer` planes `[h, w]` to `[oh, ow]`.
fn resize_linear(
    x: &[f32],
    y: &mut [f32],
    outer: usize,
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    ct: u32,
    [sh, sw]: [f32; 2],
) {
    if h == 0 || w == 0 {
        y.fill(0.0);
        return;
    }
    for p in 0..outer {
        let plane = &x[p * h * w..][..h * w];
        for r in 0..oh {
            let (y0, y1, fy) = linear_tap(r, h, oh, ct, sh);
            let row = &mut y[(p * oh + r) * ow..][..ow];
            for (c, d) in row.iter_mut().enumerate() {
                let (x0, x1, fx) = linear_tap(c, w, ow, ct, sw);
                let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
                let bot = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
                *d = top * (1.0 - fy) + bot * fy;
            }
        }
    }
}

/// [`transpose`] of f32 values: per-image matrices (NCHW ↔ NHWC, attention keys) on the
/// kernel tier, their output rows (the input's columns) spread over the threads.
fn transpose_f32(
    kern: &Kernels,
    par: &Par,
    x: &[f32],
    dims: [u32; 4],
    perm: [u8; 4],
    y: &mut [f32],
) -> Result<()> {
    let plane = |x: &[f32], rows: usize, cols: usize, y: &mut [f32]| {
        // A value moved costs about 16 multiply-adds' time (49k values in 20 µs).
        par::for_runs(par, rows.max(1), y, 16, |at, part| {
            kops::transpose_f32(kern, x, rows, cols, at / rows.max(1), part).map_err(Error::from)
        })
    };
    transpose(x, dims, perm, y, plane)
}

/// `y = x.transpose(perm)`; `dims` is x's 4-D shape.
fn transpose<T: Copy>(
    x: &[T],
    dims: [u32; 4],
    perm: [u8; 4],
    y: &mut [T],
    plane: impl Fn(&[T], usize, usize, &mut [T]) -> Result<()>,
) -> Result<()> {
    let d = dims.map(|v| v as usize);
    let n = checked(&d)?;
    let mut seen = [false; 4];
    for &p in &perm {
        if p > 3 || seen[p as usize] {
            return Err(shape_err("TransposeF32", 4, p as usize));
        }
        seen[p as usize] = true;
    }
    shape_need("TransposeF32", n, x.len())?;
    shape_need("TransposeF32", n, y.len())?;
    // One axis moved past the others behind it (NCHW ↔ NHWC; a key's heads turned for
    // Q·Kᵀ, [1, T, H, D] → [1, H, D, T]): a matrix transposed per image, in tiles.
    // (The firmware, which counts its code bytes, takes the second and third by the loop.)
    let std = cfg!(feature = "std");
    let matrix = match perm {
        [0, 2, 1, 3] if d[3] == 1 => Some((d[1], d[2])),
        [0, 2, 3, 1] if std => Some((d[1], d[2] * d[3])),
        [0, 3, 1, 2] if std => Some((d[1] * d[2], d[3])),
        _ => None,
    };
    if let Some((rows, cols)) = matrix {
        let size = rows * cols;
        for i0 in 0..d[0] {
            let at = i0 * size;
            plane(&x[at..at + size], rows, cols, &mut y[at..at + size])?;
        }
        return Ok(());
    }
    let stride = [d[1] * d[2] * d[3], d[2] * d[3], d[3], 1];
    let p = perm.map(|v| v as usize);
    let (od, os) = (p.map(|i| d[i]), p.map(|i| stride[i]));
    let mut o = 0;
    for i0 in 0..od[0] {
        for i1 in 0..od[1] {
            for i2 in 0..od[2] {
                let base = i0 * os[0] + i1 * os[1] + i2 * os[2];
                if os[3] == 1 && od[3] >= 16 {
                    // The last axis stays last (attention heads): whole rows.
                    y[o..o + od[3]].copy_from_slice(&x[base..base + od[3]]);
                } else {
                    for (i3, v) in y[o..o + od[3]].iter_mut().enumerate() {
                        *v = x[base + i3 * os[3]];
                    }
                }
                o += od[3];
            }
        }
    }
    Ok(())
}

/// `y[c][r] = x[r][c]` for `rows × cols` matrices, in 16 × 16 tiles: the tile's rows of
/// `x` stay in L1 while its columns are written.
pub(crate) fn transpose2d<T: Copy>(x: &[T], rows: usize, cols: usize, y: &mut [T]) {
    transpose2d_cols(x, rows, cols, 0, y);
}

/// Rows `c0..` of [`transpose2d`]'s output (columns `c0..` of `x`), as many as `y` holds.
pub(crate) fn transpose2d_cols<T: Copy>(x: &[T], rows: usize, cols: usize, c0: usize, y: &mut [T]) {
    const B: usize = 16;
    let c1 = (c0 + y.len().checked_div(rows).unwrap_or(0)).min(cols);
    for r0 in (0..rows).step_by(B) {
        let r1 = (r0 + B).min(rows);
        for cb in (c0..c1).step_by(B) {
            for c in cb..(cb + B).min(c1) {
                let dst = &mut y[(c - c0) * rows + r0..(c - c0) * rows + r1];
                for (k, v) in dst.iter_mut().enumerate() {
                    *v = x[(r0 + k) * cols + c];
                }
            }
        }
    }
}

/// ONNX DynamicQuantizeLinear: u8 codes of `x` over a range that includes 0; returns
/// (scale, zero point). Division, not a reciprocal, so codes match onnxruntime's.
fn dynamic_quantize(kern: &Kernels, par: &Par, x: &[f32], q: &mut [u8]) -> Result<(f32, i32)> {
    // The range on the kernel tier (NaN ignored, as by a fold of f32::min/max; the order
    // of a min or max does not change it).
    let (lo, hi) = match split_range(kern, par, x)? {
        Some(r) => r,
        None => kops::range0_f32(kern, x),
    };
    let scale = (hi - lo) / 255.0;
    if scale == 0.0 || !scale.is_finite() {
        q.fill(0);
        return Ok((if scale.is_finite() { 0.0 } else { f32::NAN }, 0));
    }
    let zero = edgetune_kernels::quant::requant(-lo / scale, 0, 0, 255);
    // requant(x / scale, zero, 0, 255) per value, on the kernel tier.
    if !split_quantize(kern, par, x, scale, zero, q)? {
        kops::quantize_u8(kern, x, scale, zero, q)?;
    }
    Ok((scale, zero))
}

/// Runs of 64 values of a dynamic quantisation over the threads (none worth splitting:
/// empty). A range is the min and max of the runs' ranges, and each code depends on its
/// value alone, so any split gives the same bytes.
#[cfg(feature = "std")]
fn quantize_runs(par: &Par, n: usize) -> alloc::vec::Vec<Range<usize>> {
    const RUN: usize = 64;
    let units = n / RUN;
    let parts = par.parts(units, n * 8);
    if parts <= 1 {
        return alloc::vec::Vec::new();
    }
    par::runs(units, parts)
        .map(|r| r.start * RUN..if r.end == units { n } else { r.end * RUN })
        .collect()
}

/// `range0_f32` of `x` in runs over the threads, when worth splitting.
#[cfg(feature = "std")]
fn split_range(kern: &Kernels, par: &Par, x: &[f32]) -> Result<Option<(f32, f32)>> {
    let runs = quantize_runs(par, x.len());
    if runs.is_empty() {
        return Ok(None);
    }
    let mut part = alloc::vec![(0.0f32, 0.0f32); runs.len()];
    let items: alloc::vec::Vec<_> = runs.iter().zip(part.iter_mut()).collect();
    par.each(items, |(r, o)| {
        *o = kops::range0_f32(kern, &x[r.clone()]);
        Ok(())
    })?;
    Ok(Some(
        part.iter()
            .fold((0.0f32, 0.0f32), |(l, h), &(a, b)| (l.min(a), h.max(b))),
    ))
}

/// `quantize_u8` in runs over the threads, when worth splitting (`false`: not done).
#[cfg(feature = "std")]
fn split_quantize(
    kern: &Kernels,
    par: &Par,
    x: &[f32],
    scale: f32,
    zero: i32,
    q: &mut [u8],
) -> Result<bool> {
    let runs = quantize_runs(par, x.len());
    if runs.is_empty() || q.len() < x.len() {
        return Ok(false);
    }
    let mut rest = &mut q[..x.len()];
    let mut items = alloc::vec::Vec::with_capacity(runs.len());
    for r in &runs {
        let (qp, tail) = core::mem::take(&mut rest).split_at_mut(r.len());
        items.push((&x[r.clone()], qp));
        rest = tail;
    }
    par.each(items, |(xp, qp)| {
        Ok(kops::quantize_u8(kern, xp, scale, zero, qp)?)
    })?;
    Ok(true)
}

#[cfg(not(feature = "std"))]
fn split_range(_: &Kernels, _: &Par, _: &[f32]) -> Result<Option<(f32, f32)>> {
    Ok(None)
}

#[cfg(not(feature = "std"))]
fn split_quantize(_: &Kernels, _: &Par, _: &[f32], _: f32, _: i32, _: &mut [u8]) -> Result<bool> {
    Ok(false)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    /// A xorshift stream of values below the bound asked for, from `seed`.
    fn stream(mut seed: u32) -> impl FnMut(usize) -> usize {
        move |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize % m
        }
    }

    /// The kernel, dilated, fits in the padded input.
    fn fits(g: &ConvGeom) -> bool {
        g.h + g.pad_top + g.pad_bottom > g.dil_h * (g.kh - 1)
            && g.w + g.pad_left + g.pad_right > g.dil_w * (g.kw - 1)
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// Quantize into NHWC and Dequantize out of it, on one to three threads, equal the
    /// layout-free kernels' values moved by the definition (pixel counts that are and are
    /// not multiples of the 256-pixel blocks, one to 32 channels, batches).
    #[test]
    fn quantised_map_layout_changes_match_the_definition() {
        let kern = Kernels::detect();
        let q = crate::plan::Q8 {
            scale: 0.0371,
            zero: 117,
        };
        for [batch, hw, c] in [[1usize, 7, 1], [1, 300, 5], [2, 513, 3], [1, 1030, 32]] {
            let n = batch * hw * c;
            let nchw: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 101) as f32 * 0.09 - 4.4)
                .collect();
            let mut flat = vec![0u8; n];
            kops::quantize_u8(&kern, &nchw, q.scale, q.zero, &mut flat).unwrap();
            let mut nhwc_want = vec![0u8; n];
            for b in 0..batch {
                for ch in 0..c {
                    for p in 0..hw {
                        nhwc_want[(b * hw + p) * c + ch] = flat[(b * c + ch) * hw + p];
                    }
                }
            }
            let mut deq = vec![0.0f32; n];
            kops::dequantize_u8(&kern, &nhwc_want, q.scale, q.zero, &mut deq).unwrap();
            let mut nchw_want = vec![0.0f32; n];
            for b in 0..batch {
                for ch in 0..c {
                    for p in 0..hw {
                        nchw_want[(b * c + ch) * hw + p] = deq[(b * hw + p) * c + ch];
                    }
                }
            }
            for t in 1..=3 {
                let par = Par::new(t).unwrap();
                let mut got = vec![0u8; n];
                quantize_to_nhwc(&kern, &par, &nchw, [batch, hw, c], q, &mut got).unwrap();
                assert_eq!(got, nhwc_want, "quantize {batch}x{hw}x{c} on {t} threads");
                let mut back = vec![f32::NAN; n];
                dequantize_to_nchw(&kern, &par, &nhwc_want, [batch, hw, c], q, &mut back).unwrap();
                assert!(
                    same_bits(&back, &nchw_want),
                    "dequantize {batch}x{hw}x{c} on {t} threads"
                );
            }
        }
    }

    /// Sums and maxima of runs (16 running results, folded in halves): the max is the
    /// serial one's, NaNs ignored alike; the sum is within rounding of the f64 sum; every
    /// length from empty to past several blocks.
    #[test]
    fn run_reductions_match_serial_ones() {
        for len in (0..70).chain([1000, 19_200]) {
            let run: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 180.0)
                .collect();
            let serial_max = run.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            assert_eq!(
                reduce_run(&run, true).to_bits(),
                serial_max.to_bits(),
                "{len}"
            );
            let exact: f64 = run.iter().map(|&v| v as f64).sum();
            let abs: f64 = run.iter().map(|&v| (v as f64).abs()).sum();
            let got = reduce_run(&run, false) as f64;
            assert!(
                (got - exact).abs() <= 1e-6 * abs.max(1.0),
                "{len}: {got} vs {exact}"
            );
        }
        let mut with_nan = vec![1.0f32, 5.0, -2.0];
        with_nan.extend([f32::NAN; 20]);
        assert_eq!(reduce_run(&with_nan, true), 5.0);
    }

    /// Nearest upsampling equals the definition (output pixel `(y, x)` is input pixel
    /// `(y / fh, x / fw)`) for byte runs (u8 maps) and word runs (f32 values), aligned and
    /// not, whole factors along either axis.
    #[test]
    fn upsampling_matches_the_definition() {
        for [outer, h, w, run] in [[1usize, 3, 5, 1], [2, 4, 3, 3], [1, 2, 7, 4], [3, 1, 2, 8]] {
            for (fh, fw) in [(1, 1), (2, 2), (3, 1), (1, 4), (2, 3)] {
                for offset in [0, 1] {
                    let n = outer * h * w * run;
                    let buf: Vec<u8> = (0..n + offset).map(|i| (i * 31 % 251) as u8).collect();
                    let x = &buf[offset..];
                    let (oh, ow) = (h * fh, w * fw);
                    let mut want = vec![0u8; outer * oh * ow * run];
                    for a in 0..outer {
                        for yy in 0..oh {
                            for xx in 0..ow {
                                let src = ((a * h + yy / fh) * w + xx / fw) * run;
                                let dst = ((a * oh + yy) * ow + xx) * run;
                                want[dst..dst + run].copy_from_slice(&x[src..src + run]);
                            }
                        }
                    }
                    let mut out = vec![0u8; want.len() + offset];
                    upsample(x, &mut out[offset..], [outer, h, w, run], fh, fw);
                    assert_eq!(
                        &out[offset..],
                        &want[..],
                        "{outer}x{h}x{w}x{run} by {fh}x{fw}"
                    );
                }
            }
        }
    }

    /// The float depthwise convolution equals, bit for bit, a pixel-at-a-time loop over
    /// the definition (bias, then the taps in order), with and without bias, on strided,
    /// dilated and padded geometries, channel counts on and off the vector widths, on every
    /// widened tier this CPU runs.
    #[test]
    fn float_depthwise_matches_the_pixel_loop() {
        let mut next = stream(0x2545_f491);
        let (plain, wide) = widened_tiers("float depthwise");
        for kern in core::iter::once(plain).chain(wide) {
            let tier = kern.ew.tier;
            let mut tried = 0;
            while tried < 150 {
                let c = [1, 3, 8, 16, 24, 37][next(6)];
                let g = ConvGeom {
                    h: 1 + next(8),
                    w: 1 + next(9),
                    ic: c,
                    oc: c,
                    kh: 1 + next(5),
                    kw: 1 + next(5),
                    stride_h: 1 + next(2),
                    stride_w: 1 + next(2),
                    dil_h: 1 + next(2),
                    dil_w: 1 + next(2),
                    pad_top: next(3),
                    pad_left: next(3),
                    pad_bottom: next(3),
                    pad_right: next(3),
                    groups: c,
                };
                if !fits(&g) {
                    continue;
                }
                tried += 1;
                let val = |k: usize| ((k * 7919) % 997) as f32 / 97.0 - 5.0;
                let x: Vec<f32> = (0..g.h * g.w * c).map(|k| val(k + next(7))).collect();
                let w: Vec<f32> = (0..g.kh * g.kw * c).map(|k| val(3 * k + 1)).collect();
                let bias: Vec<f32> = if next(2) == 0 {
                    vec![]
                } else {
                    (0..c).map(val).collect()
                };
                let (oh, ow) = (g.oh(), g.ow());
                let mut want = vec![0f32; oh * ow * c];
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ch in 0..c {
                            let mut acc = bias.get(ch).copied().unwrap_or(0.0);
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                                        acc += w[(ky * g.kw + kx) * c + ch]
                                            * x[(iy * g.w + ix) * c + ch];
                                    }
                                }
                            }
                            want[(oy * ow + ox) * c + ch] = acc;
                        }
                    }
                }
                let mut got = vec![f32::NAN; want.len()];
                dw_f32(&kern, &g, &x, &w, &bias, &mut got).unwrap();
                assert!(
                    same_bits(&got, &want),
                    "{tier:?}: {g:?} bias {}",
                    !bias.is_empty()
                );
            }
        }
    }

    /// Float max and average pooling equal, bit for bit, a tap-by-tap loop over the
    /// definition (`ConvGeom::src`, rows then columns) on strided, dilated, padded and
    /// ceil-mode geometries whose windows fall partly or wholly in the padding, NaN
    /// inputs among them, on every widened tier this CPU runs.
    #[test]
    fn float_pooling_matches_the_tap_loop() {
        let mut next = stream(0x9e37_79b9);
        let (plain, wide) = widened_tiers("float pooling");
        let tiers: Vec<Kernels> = core::iter::once(plain).chain(wide).collect();
        let mut tried = 0;
        while tried < 400 {
            let g = ConvGeom {
                h: 1 + next(9),
                w: 1 + next(11),
                ic: 1 + next(3),
                oc: 0,
                kh: 1 + next(4),
                kw: 1 + next(4),
                stride_h: 1 + next(3),
                stride_w: 1 + next(3),
                dil_h: 1 + next(2),
                dil_w: 1 + next(2),
                pad_top: next(3),
                pad_left: next(3),
                pad_bottom: next(4),
                pad_right: next(4),
                groups: 1,
            };
            if !fits(&g) {
                continue;
            }
            tried += 1;
            let x: Vec<f32> = (0..g.ic * g.h * g.w)
                .map(|_| match next(40) {
                    0 => f32::NAN,
                    _ => next(2001) as f32 / 100.0 - 10.0,
                })
                .collect();
            let (oh, ow) = (g.oh(), g.ow());
            for (max, count_pad) in [(true, false), (false, false), (false, true)] {
                let mut want = vec![0.0f32; g.ic * oh * ow];
                for p in 0..g.ic {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let (mut acc, mut n) = (if max { f32::NEG_INFINITY } else { 0.0 }, 0);
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    match g.src(oy, ox, ky, kx) {
                                        Some((iy, ix)) => {
                                            let v = x[(p * g.h + iy) * g.w + ix];
                                            acc = if max { acc.max(v) } else { acc + v };
                                            n += 1;
                                        }
                                        None => n += count_pad as usize,
                                    }
                                }
                            }
                            want[(p * oh + oy) * ow + ox] =
                                if max { acc } else { acc / n.max(1) as f32 };
                        }
                    }
                }
                for kern in &tiers {
                    let mut got = vec![f32::NAN; want.len()];
                    pool_f32(kern, &g, &x, max, count_pad, &mut got).unwrap();
                    assert!(
                        same_bits(&got, &want),
                        "{:?} {g:?} max {max} count_pad {count_pad}",
                        kern.ew.tier
                    );
                }
            }
        }
    }

    /// Every permutation of four axes, f32 values on one to three threads and u8 codes:
    /// the matrices per image (NCHW ↔ NHWC, an axis moved past those behind it) on the
    /// kernel tier, the rest by the general loop, give the definition's values.
    #[test]
    fn float_transposes_match_the_definition_on_any_thread_count() {
        let kern = Kernels::detect();
        let perms: Vec<[u8; 4]> = (0..256u32)
            .map(|k| [0, 2, 4, 6].map(|s| (k >> s & 3) as u8))
            .filter(|p| (0..4u8).all(|a| p.contains(&a)))
            .collect();
        assert_eq!(perms.len(), 24);
        for dims in [
            [2u32, 24, 300, 1],
            [1, 7, 9, 1],
            [1, 3, 5, 4],
            [2, 9, 3, 17],
            [1, 40, 3, 8],
        ] {
            let d = dims.map(|v| v as usize);
            let n = d.iter().product::<usize>();
            let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
            for &perm in &perms {
                let od = perm.map(|p| d[p as usize]);
                let mut want = vec![0.0; n];
                for (o, w) in want.iter_mut().enumerate() {
                    let oi = [
                        o / (od[1] * od[2] * od[3]),
                        o / (od[2] * od[3]) % od[1],
                        o / od[3] % od[2],
                        o % od[3],
                    ];
                    let mut xi = [0; 4];
                    for k in 0..4 {
                        xi[perm[k] as usize] = oi[k];
                    }
                    *w = x[((xi[0] * d[1] + xi[1]) * d[2] + xi[2]) * d[3] + xi[3]];
                }
                for t in 1..=3 {
                    let mut y = vec![f32::NAN; n];
                    transpose_f32(&kern, &Par::new(t).unwrap(), &x, dims, perm, &mut y).unwrap();
                    assert_eq!(y, want, "{dims:?} {perm:?} on {t} threads");
                }
                let xb: Vec<u8> = x.iter().map(|&v| v as u8).collect();
                let mut yb = vec![0u8; n];
                let plane = |x: &[u8], rows: usize, cols: usize, y: &mut [u8]| {
                    transpose2d(x, rows, cols, y);
                    Ok(())
                };
                transpose(&xb, dims, perm, &mut yb, plane).unwrap();
                let wb: Vec<u8> = want.iter().map(|&v| v as u8).collect();
                assert_eq!(yb, wb, "u8 {dims:?} {perm:?}");
            }
        }
    }

    /// Where with each operand broadcast along any axes (a one-value row, a per-row value,
    /// a whole tensor) against the definition value by value, on rows longer and shorter
    /// than a piece.
    #[test]
    fn where_matches_the_definition_under_broadcasting() {
        let kern = Kernels::detect();
        for d in [[2usize, 3, 4, 37], [1, 2, 3, 600], [3, 1, 5, 2]] {
            let n: usize = d.iter().product();
            let strides = |mask: u32| {
                let mut st = [0u32; 4];
                let mut acc = 1u32;
                for i in (0..4).rev() {
                    if mask >> i & 1 == 1 {
                        st[i] = acc;
                        acc *= d[i] as u32;
                    }
                }
                (st, acc as usize)
            };
            for (mc, ma, mb) in [(15, 15, 15), (15, 0, 0), (7, 15, 0), (14, 8, 15), (1, 6, 9)] {
                let (sc, lc) = strides(mc);
                let (sa, la) = strides(ma);
                let (sb, lb) = strides(mb);
                let c: Vec<f32> = (0..lc)
                    .map(|i| ((i * 7 + 3) % 3 == 0) as u8 as f32)
                    .collect();
                let a: Vec<f32> = (0..la).map(|i| i as f32 * 0.5 + 1.0).collect();
                let b: Vec<f32> = (0..lb).map(|i| -(i as f32) - 2.0).collect();
                let at = |s: [u32; 4], i: [usize; 4]| {
                    (0..4).map(|k| s[k] as usize * i[k]).sum::<usize>()
                };
                let mut want = vec![0.0f32; n];
                for (o, w) in want.iter_mut().enumerate() {
                    let i = [
                        o / (d[1] * d[2] * d[3]),
                        o / (d[2] * d[3]) % d[1],
                        o / d[3] % d[2],
                        o % d[3],
                    ];
                    *w = if c[at(sc, i)] != 0.0 {
                        a[at(sa, i)]
                    } else {
                        b[at(sb, i)]
                    };
                }
                let mut y = vec![f32::NAN; n];
                let dims = d.map(|v| v as u32);
                select(&kern, dims, (&c, sc), (&a, sa), (&b, sb), &mut y).unwrap();
                assert_eq!(y, want, "{d:?} masks {mc} {ma} {mb}");
            }
        }
    }

    /// A chain program runs against a scalar statement of it on lengths that leave
    /// partial blocks and periods that do and do not divide a block; malformed programs
    /// are typed errors, never a panic.
    /// Chains of each fused template's shape (SiLU, GELU after its bias, batch norms with
    /// hard swish or ReLU, masked scores, residual adds, quantised codes, LeakyRelu and a
    /// floor)
    /// give the bits of their ops one by one (any NaN for a NaN) on every tier the CPU
    /// has, for lengths with
    /// and without a partial vector, on one and two threads, with NaN, ±0, ±inf and
    /// values past the approximations' ranges among the inputs; and each is recognised as
    /// its template.
    #[test]
    fn fused_chains_give_the_ops_bits() {
        use crate::plan::chain::{BIN, CLAMP, CONST, INPUT};
        let bin = |f: BinOp| BIN + f as u32;
        let (plain, wide) = widened_tiers("fused chains");
        let silu = [
            [Unary::Sigmoid as u32, 0, INPUT, 0, 0, 0],
            [bin(BinOp::Mul), 1, INPUT, 0, 0, 0],
        ];
        let silu_add = [silu[0], silu[1], [bin(BinOp::Add), 0, INPUT + 1, 0, 1, 0]];
        let gelu = [
            [bin(BinOp::Add), 0, INPUT, 0, CONST + 9, 12],
            [bin(BinOp::Div), 1, 0, 0, CONST, 1],
            [bin(BinOp::Mul), 2, 0, 0, CONST + 1, 1],
            [Unary::Erf as u32, 1, 1, 0, 0, 0],
            [bin(BinOp::Add), 0, 1, 0, CONST + 2, 1],
            [bin(BinOp::Mul), 1, 2, 0, 0, 0],
        ];
        let hard_swish = [
            [bin(BinOp::Mul), 0, CONST + 1, 1, INPUT, 0],
            [bin(BinOp::Add), 1, 0, 0, CONST + 3, 1],
            [bin(BinOp::Add), 0, 1, 0, CONST + 5, 1],
            [CLAMP, 2, 0, 0, CONST + 6, 2],
            [bin(BinOp::Mul), 0, 1, 0, 2, 0],
            [bin(BinOp::Div), 2, 0, 0, CONST + 8, 1],
            [bin(BinOp::Mul), 0, CONST, 1, 2, 0],
            [bin(BinOp::Add), 2, 0, 0, CONST + 2, 1],
        ];
        let scores = [
            [bin(BinOp::Div), 0, INPUT, 0, CONST + 1, 1],
            [bin(BinOp::Add), 1, 0, 0, INPUT + 1, 0],
        ];
        let residual = [
            [bin(BinOp::Add), 0, INPUT, 0, CONST + 9, 12],
            [bin(BinOp::Add), 1, 0, 0, INPUT + 1, 0],
        ];
        let mut consts = vec![
            core::f32::consts::SQRT_2,
            0.5,
            1.0,
            -0.25,
            0.0,
            3.0,
            0.0,
            6.0,
            6.0,
        ];
        // Three runs of 12 values from `CONST + 9`.
        consts.extend((0..36).map(|i| (i as f32 * 0.7).sin()));
        // Clamp bounds at `CONST + 45` whose upper one ties +0 (x86's `min` keeps the
        // first of equal operands).
        consts.extend([-1.0, -0.0]);
        let special = [
            f32::NAN,
            -0.0,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -3.0,
            3.0,
            -6.0,
            95.0,
            -95.0,
            1e8,
            4.0,
            1e-39,
        ];
        let (c1, c2, c3) = (CONST + 9, CONST + 21, CONST + 33);
        let relu = Unary::Relu as u32;
        let bn = [
            [bin(BinOp::Mul), 0, INPUT, 0, c1, 12],
            [bin(BinOp::Add), 1, 0, 0, c2, 12],
        ];
        let bn1 = [
            [bin(BinOp::Mul), 0, CONST + 1, 1, INPUT, 0],
            [bin(BinOp::Add), 1, 0, 0, CONST + 3, 1],
        ];
        let add_relu = [
            [bin(BinOp::Add), 0, INPUT, 0, INPUT + 1, 0],
            [relu, 0, 0, 0, 0, 0],
        ];
        let bias_bn_relu = [
            [bin(BinOp::Add), 0, INPUT, 0, c1, 12],
            [bin(BinOp::Mul), 1, 0, 0, c2, 12],
            [bin(BinOp::Add), 0, 1, 0, c3, 12],
            [relu, 0, 0, 0, 0, 0],
        ];
        let scaled_hard_swish = [
            [bin(BinOp::Mul), 0, INPUT, 0, CONST + 4, 1],
            [bin(BinOp::Add), 1, 0, 0, c1, 12],
            [bin(BinOp::Mul), 0, CONST + 1, 1, 1, 0],
            [bin(BinOp::Add), 1, 0, 0, CONST + 3, 1],
            [bin(BinOp::Add), 0, 1, 0, CONST + 5, 1],
            [CLAMP, 2, 0, 0, CONST + 6, 2],
            [bin(BinOp::Mul), 0, 1, 0, 2, 0],
            [bin(BinOp::Div), 2, 0, 0, CONST + 8, 1],
            [bin(BinOp::Mul), 0, CONST, 1, 2, 0],
            [bin(BinOp::Add), 2, 0, 0, CONST + 2, 1],
        ];
        let code_clamp = [
            [bin(BinOp::Add), 0, INPUT, 0, CONST + 4, 1],
            [CLAMP, 1, 0, 0, CONST + 45, 2],
            [bin(BinOp::Sub), 0, 1, 0, CONST + 4, 1],
        ];
        let round = [
            [bin(BinOp::Div), 0, INPUT, 0, CONST + 1, 1],
            [Unary::Round as u32, 0, 0, 0, 0, 0],
        ];
        let bn_relu = [bn[0], bn[1], [relu, 1, 1, 0, 0, 0]];
        let shift_sigmoid = [
            [bin(BinOp::Add), 0, INPUT, 0, CONST + 3, 1],
            [Unary::Sigmoid as u32, 0, 0, 0, 0, 0],
        ];
        let leaky_floor = [
            [bin(BinOp::PRelu), 0, INPUT, 0, CONST + 3, 1],
            [bin(BinOp::Max), 1, 0, 0, CONST + 4, 1],
        ];
        let progs: [(&[[u32; 6]], usize, bool); 16] = [
            (&silu, 0, false),
            (&silu_add, 1, true),
            (&gelu, 2, false),
            (&hard_swish, 3, false),
            (&scores, 4, true),
            (&residual, 5, true),
            (&bn, 6, false),
            (&bn1, 7, false),
            (&add_relu, 8, true),
            (&bias_bn_relu, 9, false),
            (&scaled_hard_swish, 10, false),
            (&code_clamp, 11, false),
            (&bn_relu, 12, false),
            (&shift_sigmoid, 13, false),
            (&round, 14, false),
            (&leaky_floor, 15, false),
        ];
        for (prog, template, two) in progs {
            let prog = prog.concat();
            // Multiples of the 12-value runs, with and without a partial vector.
            for n in [12usize, 24, 444, 1548, 4812] {
                let a: Vec<f32> = (0..n)
                    .map(|i| match i % 13 {
                        0 => special[(i / 13) % special.len()],
                        _ => ((i * 7919 % 2001) as f32 / 1000.0 - 1.0) * 5.0,
                    })
                    .collect();
                // The second input as long as y, or repeated (a mask over the last axis).
                let b: Vec<f32> = (0..if n == 444 { 12 } else { n })
                    .map(|i| (i as f32 * 0.3).cos() * 2.0)
                    .collect();
                let b: &[f32] = if two { &b } else { &[] };
                let code = chain_decode(&plain, &prog, &consts, [&a, b], n).unwrap();
                let fused = fused_program(&prog, &code).map(|f| f.0);
                assert_eq!(fused, Some(template), "template {template}, n {n}");
                for kern in core::iter::once(plain).chain(wide.iter().copied()) {
                    assert_eq!(
                        kops::fused_programs(&kern),
                        kern.ew.tier != edgetune_kernels::registry::Tier::Reference
                    );
                    for threads in [1, 2] {
                        let par = Par::new(threads).unwrap();
                        let (mut want, mut got) = (vec![0.0f32; n], vec![1.0f32; n]);
                        chain_blocks(&kern, &par, &prog, &consts, [&a, b], &mut want).unwrap();
                        chain(&kern, &par, &prog, &consts, [&a, b], &mut got).unwrap();
                        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                            // Any NaN for a NaN: its sign and payload follow the operand
                            // order the compiler picks for a commutative op.
                            let same = |v: &f32| {
                                if v.is_nan() {
                                    f32::NAN.to_bits()
                                } else {
                                    v.to_bits()
                                }
                            };
                            assert_eq!(
                                same(w),
                                same(g),
                                "template {template}, {:?}, n {n}, value {i} (x {})",
                                kern.ew.tier,
                                a[i]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn chain_programs_run_and_malformed_ones_are_refused() {
        use crate::plan::chain::{BIN, CLAMP, CONST, INPUT};
        let kern = Kernels::detect();
        let par = Par::new(2).unwrap();
        let bin = |f: BinOp| BIN + f as u32;
        for (n, pa, pb) in [
            (2500, 2500, 50),
            (1050, 1050, 7),
            (38, 38, 1),
            (4096, 64, 4096),
            (6000, 1500, 8),
        ] {
            let a: Vec<f32> = (0..pa).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..pb).map(|i| (i as f32 * 0.11).cos()).collect();
            let consts = [0.5f32, 2.0, 3.0, -1.0];
            // r0 = a·0.5; r1 = r0 - b; r0 = |r1| (in place); r2 = r0 / [2, 3] repeated;
            // y = r2 + r1.
            let prog = [
                [bin(BinOp::Mul), 0, INPUT, 0, CONST, 1],
                [bin(BinOp::Sub), 1, 0, 0, INPUT + 1, 0],
                [Unary::Abs as u32, 0, 1, 0, 0, 0],
                [bin(BinOp::Div), 2, 0, 0, CONST + 1, 2],
                [bin(BinOp::Add), 3, 2, 0, 1, 0],
            ]
            .concat();
            let mut y = vec![0.0; n];
            chain(&kern, &par, &prog, &consts, [&a, &b], &mut y).unwrap();
            for (i, &v) in y.iter().enumerate() {
                let r1 = a[i % pa] * 0.5 - b[i % pb];
                let want = r1.abs() / consts[1 + i % 2] + r1;
                assert_eq!(v.to_bits(), want.to_bits(), "n {n} value {i}");
            }
        }
        let (a, mut y) = (vec![1.0f32; 64], vec![0.0f32; 64]);
        let bad: [&[u32]; 9] = [
            &[],
            &[CLAMP, 0, INPUT, 0, CONST, 1],
            &[bin(BinOp::Add), 0, INPUT, 0, INPUT],
            &[bin(BinOp::Add), 0, 1, 0, INPUT, 0],
            &[bin(BinOp::Add), 4, INPUT, 0, INPUT, 0],
            &[bin(BinOp::Pow), 0, INPUT, 0, INPUT, 0],
            &[bin(BinOp::Add), 0, INPUT, 0, CONST + 3, 2],
            &[bin(BinOp::Add), 0, INPUT, 0, INPUT + 1, 0],
            &[99, 0, INPUT, 0, 0, 0],
        ];
        for prog in bad {
            let r = chain(&kern, &par, prog, &[1.0, 2.0], [&a, &[]], &mut y);
            assert!(matches!(r, Err(Error::Invalid { .. })), "{prog:?}");
        }
        // An operation writing the register it reads.
        let prog = [
            [bin(BinOp::Add), 0, INPUT, 0, INPUT, 0],
            [bin(BinOp::Add), 0, 0, 0, INPUT, 0],
        ]
        .concat();
        assert!(chain(&kern, &par, &prog, &[], [&a, &[]], &mut y).is_err());
        // An input whose length does not divide the output's.
        let prog = [bin(BinOp::Add), 0, INPUT, 0, INPUT, 0];
        assert!(chain(&kern, &par, &prog, &[], [&a[..7], &[]], &mut y).is_err());
    }

    /// The grouped float convolution and the clamp compiled for each x86 tier the CPU has
    /// give the plain loops' bits, and the convolution equals a direct sum per output in
    /// the order (input, kernel row, kernel column).
    /// The u8 pools over pairs of pixels (2×2 at stride 2, 1×2 at stride (1, 2)) give the
    /// reference tier's pool bytes, on each x86 tier the loop is compiled for, for channel
    /// counts below, at and between multiples of 16 and odd map sizes (a last row and
    /// column no window reads).
    #[test]
    fn u8_pools_over_pairs_match_the_reference() {
        let (plain, wide) = widened_tiers("u8 pools over pairs");
        let reference = plain;
        let tiers: Vec<Kernels> = core::iter::once(plain).chain(wide).collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for c in [1usize, 3, 15, 16, 17, 24, 40, 64, 72] {
            for (h, w) in [(2, 2), (7, 9), (36, 16), (5, 33)] {
                for kh in [1, 2] {
                    let g = ConvGeom {
                        h,
                        w,
                        ic: c,
                        oc: c,
                        kh,
                        kw: 2,
                        stride_h: kh,
                        stride_w: 2,
                        dil_h: 1,
                        dil_w: 1,
                        pad_top: 0,
                        pad_left: 0,
                        pad_bottom: 0,
                        pad_right: 0,
                        groups: 1,
                    };
                    let x: Vec<u8> = (0..h * w * c)
                        .map(|_| {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            (seed >> 24) as u8
                        })
                        .collect();
                    let n = g.oh() * g.ow() * c;
                    assert!(pool_pairs_fit(&g, x.len(), n));
                    assert!(!pool_pairs_fit(&g, x.len() - 1, n));
                    let mut want = vec![0u8; n];
                    kops::max_pool_u8(&reference, &g, &x, &mut want).unwrap();
                    for k in &tiers {
                        let mut got = vec![7u8; n];
                        max_pool_u8_pairs_wide(k, &g, &x, &mut got);
                        assert_eq!(got, want, "{:?} c {c} {h}x{w} kh {kh}", k.ew.tier);
                    }
                }
            }
        }
    }

    #[test]
    fn strided_reductions_give_the_runs_bits() {
        let mut seed = 0x9e37_79b9u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed
        };
        for (outer, len, inner) in [
            (1, 1, 3),
            (2, 7, 5),
            (1, 16, 8),
            (3, 17, 300),
            (1, 100, 513),
        ] {
            let x: Vec<f32> = (0..outer * len * inner)
                .map(|_| match next() % 50 {
                    0 => -0.0,
                    1 => f32::NAN,
                    _ => (next() >> 8) as f32 / 65536.0 - 128.0,
                })
                .collect();
            for max in [false, true] {
                let mut got = vec![0.0f32; outer * inner];
                reduce_strided(&x, &mut got, (outer, len, inner), max);
                for a in 0..outer {
                    for i in 0..inner {
                        let run: Vec<f32> =
                            (0..len).map(|l| x[(a * len + l) * inner + i]).collect();
                        let want = reduce_run(&run, max);
                        let by = reduce_by(|l| run[l], len, max);
                        assert!(by.to_bits() == want.to_bits() || (by.is_nan() && want.is_nan()));
                        let g = got[a * inner + i];
                        assert!(
                            g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                            "{outer}x{len}x{inner} max {max} at {a},{i}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn integral_parts_are_libms_bits_on_every_tier() {
        let (plain, wide) = widened_tiers("integral parts");
        let mut vals = vec![
            0.0f32,
            -0.0,
            0.3,
            -0.3,
            0.5,
            -0.5,
            0.7,
            -0.7,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            -0.49999997,
            4194304.5,
            -4194303.5,
            8388607.5,
            -8388607.5,
            8388608.0,
            -8388609.0,
            1e10,
            -1e10,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
        ];
        let mut x = 0x1234_5678u32;
        for _ in 0..50_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            vals.push(((x >> 8) as f32 / 65536.0 - 128.0) * 2.0);
            vals.push(f32::from_bits(x));
        }
        let libm_of = |f: Unary, v: f32| match f {
            Unary::Round => libm::rintf(v),
            Unary::Floor => libm::floorf(v),
            Unary::Ceil => libm::ceilf(v),
            Unary::Abs => v.abs(),
            Unary::Neg => -v,
            _ => 1.0 / v,
        };
        for f in [
            Unary::Round,
            Unary::Floor,
            Unary::Ceil,
            Unary::Abs,
            Unary::Neg,
            Unary::Reciprocal,
        ] {
            let want: Vec<f32> = vals.iter().map(|&v| libm_of(f, v)).collect();
            for k in core::iter::once(&plain).chain(&wide) {
                let mut got = vals.clone();
                unary_in_place(k, f, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
                    assert!(same, "{f:?} {:?} of {}: {g} vs {w}", k.ew.tier, vals[i]);
                }
            }
        }
    }

    #[test]
    fn widened_loops_match_the_plain_ones() {
        let (plain, wide) = widened_tiers("widened loops");
        let tiers: Vec<Kernels> = core::iter::once(plain).chain(wide).collect();
        let geo = |c: usize, g: usize, k: usize, s: usize, d: usize, p: usize| ConvGeom {
            h: 13,
            w: 37,
            ic: c,
            oc: c,
            kh: k,
            kw: k,
            stride_h: s,
            stride_w: s,
            dil_h: d,
            dil_w: d,
            pad_top: p,
            pad_left: p,
            pad_bottom: p,
            pad_right: p + 1,
            groups: g,
        };
        for g in [
            geo(8, 8, 3, 1, 1, 1),
            geo(6, 6, 5, 2, 1, 2),
            geo(8, 4, 3, 1, 2, 2),
            geo(4, 4, 3, 3, 1, 0),
        ] {
            let icg = g.ic / g.groups;
            let ocg = g.oc / g.groups;
            let (oh, ow) = (g.oh(), g.ow());
            let x: Vec<f32> = (0..g.ic * g.h * g.w)
                .map(|i| (i as f32 * 0.73).sin())
                .collect();
            let w: Vec<f32> = (0..g.oc * icg * g.kh * g.kw)
                .map(|i| (i as f32 * 1.31).cos())
                .collect();
            let bias: Vec<f32> = (0..g.oc).map(|i| i as f32 * 0.1 - 0.3).collect();
            let mut want = vec![0.0f32; g.oc * oh * ow];
            for o in 0..g.oc {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias[o];
                        for i in 0..icg {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    if let Some((iy, ix)) = g.src(oy, ox, ky, kx) {
                                        let xi = ((o / ocg) * icg + i) * g.h * g.w + iy * g.w + ix;
                                        acc += w[((o * icg + i) * g.kh + ky) * g.kw + kx] * x[xi];
                                    }
                                }
                            }
                        }
                        want[(o * oh + oy) * ow + ox] = acc;
                    }
                }
            }
            for k in &tiers {
                let mut got = vec![0.0f32; want.len()];
                group_conv_f32(k, &g, &x, &w, &bias, &mut got).unwrap();
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{:?} {g:?}",
                    k.ew.tier
                );
                let mut c = vec![0.0f32; x.len()];
                clamp_wide(k, &x, &mut c, -0.25, 0.5);
                // ONNX Clip's max-then-min (not `f32::clamp`, which keeps NaN).
                #[allow(clippy::manual_clamp)]
                let plain: Vec<f32> = x.iter().map(|v| v.max(-0.25).min(0.5)).collect();
                assert_eq!(c, plain);
            }
        }
    }

    /// The NHWC depthwise gives the NCHW grouped convolution's bits (transposed), on every
    /// x86 tier the CPU has, with strides, padding, dilation, and without a bias.
    #[test]
    fn nhwc_depthwise_matches_the_planes() {
        let k = Kernels::detect();
        for (s, d, p, kk, bias) in [(1, 1, 1, 3, true), (2, 1, 1, 3, false), (2, 2, 2, 5, true)] {
            let (c, h, w) = (19, 11, 13);
            let g = ConvGeom {
                h,
                w,
                ic: c,
                oc: c,
                kh: kk,
                kw: kk,
                stride_h: s,
                stride_w: s,
                dil_h: d,
                dil_w: d,
                pad_top: p,
                pad_left: p,
                pad_bottom: p + 1,
                pad_right: p,
                groups: c,
            };
            let (oh, ow) = (g.oh(), g.ow());
            let x: Vec<f32> = (0..c * h * w).map(|i| (i as f32 * 0.61).sin()).collect();
            let wts: Vec<f32> = (0..c * kk * kk).map(|i| (i as f32 * 0.29).cos()).collect();
            let b: Vec<f32> = if bias {
                (0..c).map(|i| i as f32 * 0.05).collect()
            } else {
                vec![]
            };
            let mut planes = vec![0.0f32; c * oh * ow];
            group_conv_f32(&k, &g, &x, &wts, &b, &mut planes).unwrap();
            let mut xh = vec![0.0f32; x.len()];
            transpose2d(&x, c, h * w, &mut xh);
            let mut wh = vec![0.0f32; wts.len()];
            transpose2d(&wts, c, kk * kk, &mut wh);
            let mut yh = vec![0.0f32; planes.len()];
            dw_f32(&k, &g, &xh, &wh, &b, &mut yh).unwrap();
            let mut back = vec![0.0f32; yh.len()];
            transpose2d(&yh, oh * ow, c, &mut back);
            assert_eq!(
                back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                planes.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "stride {s} dilation {d} pad {p} kernel {kk}"
            );
        }
    }

    /// Broadcast arithmetic on the kernel tier, split over 1 to 3 threads (unit tests split
    /// the smallest ops), against a scalar loop over the same strides, bit for bit.
    #[test]
    fn binary_matches_a_scalar_loop_on_any_thread_count() {
        let kern = Kernels::detect();
        // (dims, a's strides, b's strides): dense, a bias per column, a scalar, a scalar
        // per row on either side, a short row that stays in the scalar loops.
        let cases: [([u32; 4], [u32; 4], [u32; 4]); 6] = [
            ([1, 1, 3, 333], [0, 999, 333, 1], [0, 999, 333, 1]),
            ([2, 3, 5, 40], [600, 200, 40, 1], [0, 0, 0, 1]),
            ([1, 2, 7, 70], [980, 490, 70, 1], [0, 0, 0, 0]),
            ([1, 2, 7, 70], [0, 7, 1, 0], [980, 490, 70, 1]),
            ([3, 1, 4, 17], [68, 68, 17, 1], [1, 0, 0, 0]),
            ([2, 2, 9, 5], [90, 45, 5, 1], [0, 0, 5, 1]),
        ];
        let ops = [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div];
        let f = |op: BinOp, x: f32, z: f32| match op {
            BinOp::Add => x + z,
            BinOp::Sub => x - z,
            BinOp::Mul => x * z,
            _ => x / z,
        };
        for (dims, sa, sb) in cases {
            let d = dims.map(|v| v as usize);
            let reach = |s: [u32; 4]| (0..4).map(|i| (d[i] - 1) * s[i] as usize).sum::<usize>() + 1;
            let a: Vec<f32> = (0..reach(sa))
                .map(|i| (i as f32 * 0.37).sin() * 3.0)
                .collect();
            let b: Vec<f32> = (0..reach(sb))
                .map(|i| 1.5 + (i as f32 * 0.11).cos())
                .collect();
            for op in ops {
                let mut want = vec![0.0f32; d.iter().product()];
                let mut o = 0;
                for i0 in 0..d[0] {
                    for i1 in 0..d[1] {
                        for i2 in 0..d[2] {
                            for i3 in 0..d[3] {
                                let at = |s: [u32; 4]| {
                                    i0 * s[0] as usize
                                        + i1 * s[1] as usize
                                        + i2 * s[2] as usize
                                        + i3 * s[3] as usize
                                };
                                want[o] = f(op, a[at(sa)], b[at(sb)]);
                                o += 1;
                            }
                        }
                    }
                }
                for threads in 1..=3 {
                    let par = Par::new(threads).unwrap();
                    let mut got = vec![0.0f32; want.len()];
                    binary(&kern, &par, op, dims, (&a, sa), (&b, sb), &mut got).unwrap();
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{op:?} {dims:?} {sa:?} {sb:?} on {threads} threads"
                    );
                }
            }
        }
    }
}
