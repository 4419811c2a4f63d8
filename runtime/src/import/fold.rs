//! Constant folding before lowering: with the input shapes fixed, `Shape` of a tensor is a
//! constant, and so is everything computed from constants alone (the
//! Shape → Gather → Unsqueeze → Concat → Reshape chains exporters write for a flatten, the
//! Transpose of a weight, a Range of constant bounds). Such nodes produce no plan op.

use super::lower::Lowering;
use super::value::{attr, attr_i, attr_ints, tensor_const, Const, Data, Val};
use crate::error::{Error, Result};
use tract_onnx::pb;

/// A constant as numbers: f64 holds every f32 and every integer below 2^53 exactly.
#[derive(Debug)]
struct Num {
    dims: Vec<usize>,
    v: Vec<f64>,
    float: bool,
}

impl Num {
    fn of(c: &Const) -> Num {
        let (v, float) = match &c.data {
            Data::F32(v) => (v.iter().map(|&x| x as f64).collect(), true),
            _ => (c.ints().iter().map(|&x| x as f64).collect(), false),
        };
        Num {
            dims: c.dims.clone(),
            v,
            float,
        }
    }

    fn into_const(self) -> Const {
        let data = if self.float {
            Data::F32(self.v.iter().map(|&x| x as f32).collect())
        } else {
            Data::I64(self.v.iter().map(|&x| x as i64).collect())
        };
        Const {
            dims: self.dims,
            data,
        }
    }

    fn ints(&self) -> Vec<i64> {
        self.v.iter().map(|&x| x as i64).collect()
    }
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// An axis in `-rank..rank` as an index.
fn axis_of(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

/// The ops this folds when every input is a constant (`Shape` needs only a known shape).
const FOLDS: &[&str] = &[
    "Shape",
    "Size",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Slice",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Reshape",
    "Range",
    "ConstantOfShape",
    "Identity",
    "Transpose",
    "Flatten",
    "Expand",
    "QuantizeLinear",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "IsNaN",
    "Where",
    "Max",
    "Min",
    "MatMul",
];

impl Lowering<'_> {
    /// Folds node `idx` to a constant where it can; true when it did.
    pub(super) fn fold(&mut self, idx: usize) -> Result<bool> {
        let n = &self.graph.node[idx];
        if !super::registry::is_default_domain(&n.domain) || !FOLDS.contains(&n.op_type.as_str()) {
            return Ok(false);
        }
        if n.op_type == "Size" {
            let Some(shape) = n.input.first().and_then(|i| self.shape_of(i)) else {
                return Ok(false);
            };
            let c = Num {
                dims: vec![],
                v: vec![shape.iter().product::<usize>() as f64],
                float: false,
            };
            self.vals
                .insert(n.output[0].clone(), Val::Const(c.into_const()));
            return Ok(true);
        }
        if n.op_type == "Shape" {
            let Some(shape) = n.input.first().and_then(|i| self.shape_of(i)) else {
                return Ok(false);
            };
            let r = shape.len();
            let clampi = |a: i64| -> usize {
                let a = if a < 0 { a + r as i64 } else { a };
                a.clamp(0, r as i64) as usize
            };
            let start = clampi(attr_i(n, "start", 0));
            let end = attr(n, "end").map_or(r, |a| clampi(a.i));
            let v: Vec<f64> = shape[start..end.max(start)]
                .iter()
                .map(|&d| d as f64)
                .collect();
            let c = Num {
                dims: vec![v.len()],
                v,
                float: false,
            };
            self.vals
                .insert(n.output[0].clone(), Val::Const(c.into_const()));
            return Ok(true);
        }
        if n.op_type == "QuantizeLinear" {
            return self.fold_quantize(idx);
        }
        if let Some(Val::QConst { .. }) = n.input.first().and_then(|i| self.vals.get(i)) {
            if MOVES.contains(&n.op_type.as_str()) {
                return self.fold_qconst(idx);
            }
        }
        let mut ins = vec![];
        for name in &n.input {
            if name.is_empty() {
                ins.push(None);
                continue;
            }
            match self.vals.get(name) {
                Some(Val::Const(c)) => ins.push(Some(Num::of(c))),
                // Arithmetic on a quantised constant (a quantiser's Q/DQ pair around a
                // folded shape computation) reads its dequantised values.
                Some(v @ Val::QConst { .. }) => match dequantised(v) {
                    Some(num) => ins.push(Some(num)),
                    None => return Ok(false),
                },
                _ => return Ok(false),
            }
        }
        if ins.is_empty() {
            return Ok(false);
        }
        let out = eval(n, &ins).map_err(|why| self.unsupported(n, why))?;
        self.vals
            .insert(n.output[0].clone(), Val::Const(out.into_const()));
        Ok(true)
    }
}

/// The values of a constant, dequantised when it is quantised.
fn dequantised(v: &Val) -> Option<Num> {
    match v {
        Val::Const(c) => {
            let n = Num::of(c);
            Some(Num { float: true, ..n })
        }
        v @ Val::QConst { .. } => {
            let (dims, v) = v.dequantised_qconst()?;
            Some(Num {
                dims,
                v: v.iter().map(|&x| x as f64).collect(),
                float: true,
            })
        }
        _ => None,
    }
}

/// Ops that move a quantised constant's integers without changing them.
const MOVES: &[&str] = &[
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Identity",
];

impl Lowering<'_> {
    /// QuantizeLinear of a float constant (per tensor): its integer codes, as
    /// onnxruntime computes them (round half to even, saturated to the zero point's type).
    fn fold_quantize(&mut self, idx: usize) -> Result<bool> {
        let n = &self.graph.node[idx];
        let get = |i: usize| match n.input.get(i).filter(|s| !s.is_empty()) {
            Some(name) => match self.vals.get(name) {
                Some(Val::Const(c)) => Some(Some(c.clone())),
                _ => None,
            },
            None => Some(None),
        };
        let Some(x) = n
            .input
            .first()
            .and_then(|i| self.vals.get(i))
            .and_then(dequantised)
        else {
            return Ok(false);
        };
        let (Some(Some(scale)), Some(zero)) = (get(1), get(2)) else {
            return Ok(false);
        };
        let Some(s) = scale.f32s() else {
            return Ok(false);
        };
        let xs: Vec<f32> = x.v.iter().map(|&v| v as f32).collect();
        if s.len() != 1 || !(s[0].is_finite() && s[0] > 0.0) {
            return Ok(false);
        }
        let (z, lo, hi, signed) = match zero.as_ref().map(|z| &z.data) {
            None => (0, 0.0, 255.0, false),
            Some(Data::U8(v)) if v.len() == 1 => (v[0] as i64, 0.0, 255.0, false),
            Some(Data::I8(v)) if v.len() == 1 => (v[0] as i64, -128.0, 127.0, true),
            _ => return Ok(false),
        };
        let q: Vec<f64> = xs
            .iter()
            .map(|&v| ((v / s[0]).round_ties_even() as f64 + z as f64).clamp(lo, hi))
            .collect();
        let data = if signed {
            Data::I8(q.iter().map(|&v| v as i8).collect())
        } else {
            Data::U8(q.iter().map(|&v| v as u8).collect())
        };
        self.vals.insert(
            n.output[0].clone(),
            Val::Const(Const {
                dims: x.dims.clone(),
                data,
            }),
        );
        Ok(true)
    }

    /// Reshape, Transpose and the like of a dequantised constant (weights that a converter
    /// reshapes after their DequantizeLinear): the integers move, the scales stay, and a
    /// per-channel axis follows its dimension.
    fn fold_qconst(&mut self, idx: usize) -> Result<bool> {
        let n = &self.graph.node[idx];
        if !MOVES.contains(&n.op_type.as_str()) {
            return Ok(false);
        }
        let Some(Val::QConst {
            dims,
            q,
            scale,
            zero,
            axis,
        }) = self.vals.get(&n.input[0]).cloned()
        else {
            return Ok(false);
        };
        let mut ins = vec![Some(Num {
            dims: dims.clone(),
            v: q.iter().map(|&v| v as f64).collect(),
            float: false,
        })];
        for name in n.input.iter().skip(1) {
            match self.vals.get(name) {
                _ if name.is_empty() => ins.push(None),
                Some(Val::Const(c)) => ins.push(Some(Num::of(c))),
                _ => return Ok(false),
            }
        }
        let out = eval(n, &ins).map_err(|why| self.unsupported(n, why))?;
        let new_axis = if scale.len() == 1 {
            0
        } else if n.op_type == "Transpose" {
            let rank = dims.len();
            let perm: Vec<usize> = match attr_ints(n, "perm") {
                Some(p) => p.iter().map(|&a| axis_of(a, rank).unwrap_or(0)).collect(),
                None => (0..rank).rev().collect(),
            };
            perm.iter().position(|&p| p == axis).unwrap_or(0)
        } else {
            let before: usize = dims[..axis].iter().product();
            let mut acc = 1;
            let mut found = None;
            for (j, &d) in out.dims.iter().enumerate() {
                if acc == before && d == dims[axis] {
                    found = Some(j);
                    break;
                }
                acc *= d;
            }
            found.ok_or_else(|| {
                self.unsupported(
                    n,
                    "a reshape that splits the per-channel axis of quantised weights",
                )
            })?
        };
        self.vals.insert(
            n.output[0].clone(),
            Val::QConst {
                dims: out.dims,
                q: out.v.iter().map(|&v| v as i64).collect(),
                scale,
                zero,
                axis: new_axis,
            },
        );
        Ok(true)
    }
}

fn get(ins: &[Option<Num>], i: usize) -> std::result::Result<&Num, String> {
    ins.get(i)
        .and_then(|x| x.as_ref())
        .ok_or_else(|| format!("missing input {i}"))
}

/// Evaluates one op on constants; the message says why it could not.
fn eval(n: &pb::NodeProto, ins: &[Option<Num>]) -> std::result::Result<Num, String> {
    let x = get(ins, 0)?;
    let rank = x.dims.len();
    let ax = |a: i64, r: usize| axis_of(a, r).ok_or_else(|| format!("axis {a} outside rank {r}"));
    let axes_of = |attr_name: &str, input: usize| -> Vec<i64> {
        match ins.get(input).and_then(|x| x.as_ref()) {
            Some(a) => a.ints(),
            None => attr_ints(n, attr_name).unwrap_or_default(),
        }
    };
    Ok(match n.op_type.as_str() {
        "MatMul" => {
            // [.., m, k] by [k, n] or by [.., k, n] with the same leading dimensions.
            let y = get(ins, 1)?;
            let (m, k) = match x.dims[..] {
                [.., m, k] => (m, k),
                _ => return Err("MatMul of a vector".into()),
            };
            let (k2, nn) = match y.dims[..] {
                [.., k2, nn] => (k2, nn),
                _ => return Err("MatMul by a vector".into()),
            };
            let batch: usize = x.dims[..rank - 2].iter().product();
            let shared = y.dims.len() == 2;
            if k != k2 || (!shared && y.dims[..y.dims.len() - 2] != x.dims[..rank - 2]) {
                return Err(format!("MatMul of {:?} by {:?}", x.dims, y.dims));
            }
            if batch.saturating_mul(m).saturating_mul(nn).saturating_mul(k) > 1 << 26 {
                return Err("MatMul too large to fold".into());
            }
            let mut v = vec![0.0; batch * m * nn];
            for b in 0..batch {
                let yb = if shared { 0 } else { b * k * nn };
                for i in 0..m {
                    for j in 0..nn {
                        v[(b * m + i) * nn + j] = (0..k)
                            .map(|t| x.v[(b * m + i) * k + t] * y.v[yb + t * nn + j])
                            .sum();
                    }
                }
            }
            let mut dims = x.dims.clone();
            dims[rank - 1] = nn;
            Num {
                dims,
                v,
                float: x.float || y.float,
            }
        }
        "Identity" => Num {
            dims: x.dims.clone(),
            v: x.v.clone(),
            float: x.float,
        },
        "Cast" => {
            let to = attr_i(n, "to", 1);
            let float = matches!(to, 1 | 10 | 11 | 16);
            Num {
                dims: x.dims.clone(),
                v: if float {
                    x.v.clone()
                } else {
                    x.v.iter().map(|v| v.trunc()).collect()
                },
                float,
            }
        }
        "Gather" => {
            let idx = get(ins, 1)?;
            let a = ax(attr_i(n, "axis", 0), rank)?;
            let d = x.dims[a];
            let outer: usize = x.dims[..a].iter().product();
            let inner: usize = x.dims[a + 1..].iter().product();
            let mut v = Vec::with_capacity(outer * idx.v.len() * inner);
            for o in 0..outer {
                for &i in &idx.v {
                    let i = if i < 0.0 { i + d as f64 } else { i };
                    if !(0.0..d as f64).contains(&i) {
                        return Err(format!("index {i} outside 0..{d}"));
                    }
                    let base = (o * d + i as usize) * inner;
                    v.extend_from_slice(&x.v[base..base + inner]);
                }
            }
            let mut dims = x.dims[..a].to_vec();
            dims.extend(&idx.dims);
            dims.extend(&x.dims[a + 1..]);
            Num {
                dims,
                v,
                float: x.float,
            }
        }
        "Unsqueeze" => {
            let axes = axes_of("axes", 1);
            let r = rank + axes.len();
            let mut ones = axes
                .iter()
                .map(|&a| ax(a, r))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            ones.sort_unstable();
            let mut dims = x.dims.clone();
            for a in ones {
                dims.insert(a, 1);
            }
            Num {
                dims,
                v: x.v.clone(),
                float: x.float,
            }
        }
        "Squeeze" => {
            let axes = axes_of("axes", 1)
                .iter()
                .map(|&a| ax(a, rank))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let dims = x
                .dims
                .iter()
                .enumerate()
                .filter(|&(i, &d)| !(d == 1 && (axes.is_empty() || axes.contains(&i))))
                .map(|(_, &d)| d)
                .collect();
            Num {
                dims,
                v: x.v.clone(),
                float: x.float,
            }
        }
        "Flatten" => {
            let a = axis_of(attr_i(n, "axis", 1), rank + 1).ok_or("axis outside the rank")?;
            Num {
                dims: vec![x.dims[..a].iter().product(), x.dims[a..].iter().product()],
                v: x.v.clone(),
                float: x.float,
            }
        }
        "Reshape" => {
            let s = get(ins, 1)?.ints();
            let total: usize = x.dims.iter().product();
            let mut dims: Vec<usize> = vec![];
            let mut infer = None;
            for (i, &d) in s.iter().enumerate() {
                match d {
                    0 => dims.push(*x.dims.get(i).ok_or("0 beyond the input rank")?),
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        dims.push(1);
                    }
                    d if d > 0 => dims.push(d as usize),
                    _ => return Err(format!("shape {s:?}")),
                }
            }
            let known: usize = dims.iter().product();
            if let Some(i) = infer {
                if known == 0 || !total.is_multiple_of(known) {
                    return Err(format!("shape {s:?} does not divide {total}"));
                }
                dims[i] = total / known;
            }
            if dims.iter().product::<usize>() != total {
                return Err(format!("shape {s:?} holds another count than {total}"));
            }
            Num {
                dims,
                v: x.v.clone(),
                float: x.float,
            }
        }
        "Concat" => {
            let parts: Vec<&Num> = ins.iter().flatten().collect();
            let a = ax(attr_i(n, "axis", 0), rank)?;
            if parts.iter().any(|p| {
                p.dims.len() != rank
                    || p.dims[..a] != x.dims[..a]
                    || p.dims[a + 1..] != x.dims[a + 1..]
            }) {
                return Err("inputs differ outside the concatenated axis".into());
            }
            let outer: usize = x.dims[..a].iter().product();
            let mut v = vec![];
            for o in 0..outer {
                for p in &parts {
                    let blk = p.dims[a..].iter().product::<usize>();
                    v.extend_from_slice(&p.v[o * blk..(o + 1) * blk]);
                }
            }
            let mut dims = x.dims.clone();
            dims[a] = parts.iter().map(|p| p.dims[a]).sum();
            Num {
                dims,
                v,
                float: parts.iter().any(|p| p.float),
            }
        }
        "Slice" => {
            let starts = get(ins, 1)?.ints();
            let ends = get(ins, 2)?.ints();
            let axes: Vec<i64> = match ins.get(3).and_then(|x| x.as_ref()) {
                Some(a) => a.ints(),
                None => (0..starts.len() as i64).collect(),
            };
            let steps: Vec<i64> = match ins.get(4).and_then(|x| x.as_ref()) {
                Some(s) => s.ints(),
                None => vec![1; starts.len()],
            };
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err("starts, ends, axes and steps differ in length".into());
            }
            // Per axis: the kept indices.
            let mut keep: Vec<Vec<usize>> = x.dims.iter().map(|&d| (0..d).collect()).collect();
            for j in 0..starts.len() {
                let a = ax(axes[j], rank)?;
                let d = x.dims[a] as i64;
                let st = steps[j];
                if st == 0 {
                    return Err("step 0".into());
                }
                let norm = |v: i64, lo: i64, hi: i64| {
                    let v = if v < 0 { v + d } else { v };
                    v.clamp(lo, hi)
                };
                let mut idx = vec![];
                if st > 0 {
                    let (mut i, e) = (norm(starts[j], 0, d), norm(ends[j], 0, d));
                    while i < e {
                        idx.push(i as usize);
                        i += st;
                    }
                } else {
                    let (mut i, e) = (norm(starts[j], 0, d - 1), norm(ends[j], -1, d - 1));
                    while i > e {
                        idx.push(i as usize);
                        i += st;
                    }
                }
                keep[a] = idx;
            }
            let st = strides(&x.dims);
            let dims: Vec<usize> = keep.iter().map(|k| k.len()).collect();
            let total = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&t| t <= 1 << 24)
                .ok_or("more than 2^24 elements")?;
            let mut v = Vec::with_capacity(total);
            for flat in 0..total {
                let (mut rem, mut off) = (flat, 0);
                for a in (0..rank).rev() {
                    off += keep[a][rem % dims[a]] * st[a];
                    rem /= dims[a];
                }
                v.push(x.v[off]);
            }
            Num {
                dims,
                v,
                float: x.float,
            }
        }
        "Transpose" => {
            let perm: Vec<usize> = match attr_ints(n, "perm") {
                Some(p) => p
                    .iter()
                    .map(|&a| ax(a, rank))
                    .collect::<std::result::Result<_, _>>()?,
                None => (0..rank).rev().collect(),
            };
            let mut seen = vec![false; rank];
            if perm.len() != rank || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
                return Err("perm is not a permutation of the axes".into());
            }
            let st = strides(&x.dims);
            let dims: Vec<usize> = perm.iter().map(|&p| x.dims[p]).collect();
            let total = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&t| t <= 1 << 24)
                .ok_or("more than 2^24 elements")?;
            let mut v = Vec::with_capacity(total);
            for flat in 0..total {
                let (mut rem, mut off) = (flat, 0);
                for a in (0..rank).rev() {
                    off += (rem % dims[a]) * st[perm[a]];
                    rem /= dims[a];
                }
                v.push(x.v[off]);
            }
            Num {
                dims,
                v,
                float: x.float,
            }
        }
        "Expand" => {
            // x broadcast to the shape: x + zeros of that shape.
            let shape: Vec<usize> = get(ins, 1)?
                .ints()
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let total = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&t| t <= 1 << 24)
                .ok_or("more than 2^24 elements")?;
            let mut add = n.clone();
            add.op_type = "Add".into();
            let x2 = Num {
                dims: x.dims.clone(),
                v: x.v.clone(),
                float: x.float,
            };
            let zeros = Num {
                dims: shape,
                v: vec![0.0; total],
                float: x.float,
            };
            return eval(&add, &[Some(x2), Some(zeros)]);
        }
        "Not" | "IsNaN" => Num {
            dims: x.dims.clone(),
            v: x
                .v
                .iter()
                .map(|&p| if n.op_type == "Not" { p == 0.0 } else { p.is_nan() } as u8 as f64)
                .collect(),
            float: false,
        },
        "Where" => {
            // Broadcast the three by folding twice: c·1 shapes, then pick.
            let (a, b) = (get(ins, 1)?, get(ins, 2)?);
            let r = rank.max(a.dims.len()).max(b.dims.len());
            let pad = |d: &[usize]| {
                let mut p = vec![1; r - d.len()];
                p.extend_from_slice(d);
                p
            };
            let ds = [pad(&x.dims), pad(&a.dims), pad(&b.dims)];
            let mut dims = vec![1; r];
            for i in 0..r {
                for d in &ds {
                    if d[i] != 1 {
                        if dims[i] != 1 && dims[i] != d[i] {
                            return Err("shapes do not broadcast".into());
                        }
                        dims[i] = d[i];
                    }
                }
            }
            let st: Vec<Vec<usize>> = ds.iter().map(|d| strides(d)).collect();
            let total = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&t| t <= 1 << 24)
                .ok_or("more than 2^24 elements")?;
            let mut v = Vec::with_capacity(total);
            for flat in 0..total {
                let (mut rem, mut o) = (flat, [0usize; 3]);
                for ax in (0..r).rev() {
                    let i = rem % dims[ax];
                    rem /= dims[ax];
                    for k in 0..3 {
                        if ds[k][ax] > 1 {
                            o[k] += i * st[k][ax];
                        }
                    }
                }
                v.push(if x.v[o[0]] != 0.0 { a.v[o[1]] } else { b.v[o[2]] });
            }
            Num {
                dims,
                v,
                float: a.float || b.float,
            }
        }
        "Add" | "Sub" | "Mul" | "Div" | "Equal" | "Less" | "LessOrEqual" | "Greater"
        | "GreaterOrEqual" | "And" | "Or" | "Xor" | "Max" | "Min" => {
            let y = get(ins, 1)?;
            let r = rank.max(y.dims.len());
            let pad = |d: &[usize]| {
                let mut p = vec![1; r - d.len()];
                p.extend_from_slice(d);
                p
            };
            let (da, db) = (pad(&x.dims), pad(&y.dims));
            let mut dims = vec![];
            for i in 0..r {
                dims.push(match (da[i], db[i]) {
                    (a, b) if a == b => a,
                    (1, b) => b,
                    (a, 1) => a,
                    _ => return Err("shapes do not broadcast".into()),
                });
            }
            let (sa, sb) = (strides(&da), strides(&db));
            let logic = !matches!(n.op_type.as_str(), "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min");
            let float = (x.float || y.float) && !logic;
            let total = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&t| t <= 1 << 24)
                .ok_or("more than 2^24 elements")?;
            let mut v = Vec::with_capacity(total);
            for flat in 0..total {
                let (mut rem, mut oa, mut ob) = (flat, 0, 0);
                for a in (0..r).rev() {
                    let i = rem % dims[a];
                    rem /= dims[a];
                    if da[a] > 1 {
                        oa += i * sa[a];
                    }
                    if db[a] > 1 {
                        ob += i * sb[a];
                    }
                }
                let (p, q) = (x.v[oa], y.v[ob]);
                let b = |t: bool| t as u8 as f64;
                v.push(match n.op_type.as_str() {
                    "Equal" => b(p == q),
                    "Less" => b(p < q),
                    "LessOrEqual" => b(p <= q),
                    "Greater" => b(p > q),
                    "GreaterOrEqual" => b(p >= q),
                    "And" => b(p != 0.0 && q != 0.0),
                    "Or" => b(p != 0.0 || q != 0.0),
                    "Xor" => b((p != 0.0) != (q != 0.0)),
                    "Max" => p.max(q),
                    "Min" => p.min(q),
                    "Add" => p + q,
                    "Sub" => p - q,
                    "Mul" => p * q,
                    _ if float => p / q,
                    _ if q == 0.0 => return Err("integer division by zero".into()),
                    _ => (p / q).trunc(),
                });
            }
            Num { dims, v, float }
        }
        "Range" => {
            let (s, l, d) = (x.v[0], get(ins, 1)?.v[0], get(ins, 2)?.v[0]);
            if d == 0.0 {
                return Err("delta 0".into());
            }
            let count = ((l - s) / d).ceil().max(0.0) as usize;
            if count > 1 << 24 {
                return Err(format!("{count} elements"));
            }
            Num {
                dims: vec![count],
                v: (0..count).map(|i| s + i as f64 * d).collect(),
                float: x.float,
            }
        }
        "ConstantOfShape" => {
            let dims: Vec<usize> = x.ints().iter().map(|&d| d.max(0) as usize).collect();
            let total = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&t| t <= 1 << 24)
                .ok_or("more than 2^24 elements")?;
            let (val, float) = match attr(n, "value").and_then(|a| a.t.as_ref()) {
                Some(t) => {
                    let c = tensor_const(t).map_err(|e: Error| e.to_string())?;
                    let num = Num::of(&c);
                    (num.v.first().copied().unwrap_or(0.0), num.float)
                }
                None => (0.0, true),
            };
            Num {
                dims,
                v: vec![val; total],
                float,
            }
        }
        other => return Err(format!("{other} is not folded")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(dims: &[usize], v: &[f64]) -> Option<Num> {
        Some(Num {
            dims: dims.to_vec(),
            v: v.to_vec(),
            float: false,
        })
    }

    fn node(op: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            ..Default::default()
        }
    }

    #[test]
    fn slice_negative_step_and_transpose_agree_with_numpy() {
        // numpy: np.arange(12).reshape(3, 4)[::-1, 1:3]
        let x = num(&[3, 4], &(0..12).map(|v| v as f64).collect::<Vec<_>>());
        let r = eval(
            &node("Slice"),
            &[
                x,
                num(&[2], &[-1.0, 1.0]),
                num(&[2], &[-(i64::MAX as f64), 3.0]),
                num(&[2], &[0.0, 1.0]),
                num(&[2], &[-1.0, 1.0]),
            ],
        )
        .unwrap();
        assert_eq!(r.dims, vec![3, 2]);
        assert_eq!(r.v, vec![9.0, 10.0, 5.0, 6.0, 1.0, 2.0]);
        // np.arange(6).reshape(1, 2, 3).transpose(2, 0, 1)
        let mut t = node("Transpose");
        t.attribute.push(pb::AttributeProto {
            name: "perm".into(),
            ints: vec![2, 0, 1],
            ..Default::default()
        });
        let y = num(&[1, 2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let r = eval(&t, &[y]).unwrap();
        assert_eq!(r.dims, vec![3, 1, 2]);
        assert_eq!(r.v, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn a_repeated_axis_in_perm_is_an_error_not_a_panic() {
        let mut t = node("Transpose");
        t.attribute.push(pb::AttributeProto {
            name: "perm".into(),
            ints: vec![0, 0],
            ..Default::default()
        });
        let x = num(&[2, 3], &[0.0; 6]);
        assert!(eval(&t, &[x]).unwrap_err().contains("permutation"));
        let huge = num(&[2], &[(1u64 << 40) as f64, (1u64 << 40) as f64]);
        assert!(eval(&node("ConstantOfShape"), &[huge]).is_err());
    }

    #[test]
    fn integer_division_truncates_and_broadcasts() {
        let r = eval(
            &node("Div"),
            &[num(&[2, 2], &[7.0, -7.0, 9.0, 8.0]), num(&[2], &[2.0, 4.0])],
        )
        .unwrap();
        assert_eq!(r.v, vec![3.0, -1.0, 4.0, 2.0]);
        assert!(eval(&node("Div"), &[num(&[1], &[1.0]), num(&[1], &[0.0])]).is_err());
    }
}
