//! Elementwise ops. On row-major float tensors: binary arithmetic with NumPy broadcasting
//! and unary functions on the f32 kernels. On quantised tensors: Add of two u8 tensors,
//! and every other function folded into a table over the u8 codes (one `LutU8` at the
//! next QuantizeLinear; tables in a row fuse into one).

use super::lower::Lowering;
use super::value::{attr, attr_i, Builder, Mapped, Val};
use crate::error::{Error, Result};
use crate::plan::{BinOp, DType, Op, Src, Unary, Q8};

/// The float form: both operands row-major f32 tensors or constants, and the steps of the
/// dynamic-quantised MatMul. False when an operand is a quantised tensor.
fn binary_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let op = n.op_type.as_str();
    let (a, b) = (lw.val(n, 0)?.clone(), lw.val(n, 1)?.clone());
    match (&a, &b) {
        (Val::Deq(_), _) | (_, Val::Deq(_)) => return Ok(false),
        (Val::DynScale(t), Val::Const(c)) | (Val::Const(c), Val::DynScale(t)) if op == "Mul" => {
            let ws = c.f32s().ok_or_else(|| lw.unsupported(n, "f32 scales"))?;
            lw.vals
                .insert(n.output[0].clone(), Val::ScaleProd { t: *t, ws });
            return Ok(true);
        }
        (Val::IntMM { t, k, n: nn, w }, Val::ScaleProd { t: t2, ws })
        | (Val::ScaleProd { t: t2, ws }, Val::IntMM { t, k, n: nn, w })
            if op == "Mul" =>
        {
            if t != t2 || !(ws.len() == 1 || ws.len() == *nn) {
                return Err(lw.unsupported(n, "scale of another quantisation"));
            }
            let ws: Vec<f32> = (0..*nn)
                .map(|c| ws[if ws.len() == 1 { 0 } else { c }])
                .collect();
            lw.dyn_matmul(n, *t, *k, *nn, w, &ws)?;
            return Ok(true);
        }
        _ => {}
    }
    // Integers ride the float path exactly below 2^24; a quotient would need truncating.
    let ints = n
        .input
        .iter()
        .take(2)
        .filter(|i| lw.int_names.contains(*i))
        .count();
    if ints > 0 && op == "Div" {
        return Err(lw.unsupported(n, "integer division (Cast the operands to float)"));
    }
    let int_const = |name: &String| matches!(lw.vals.get(name), Some(Val::Const(c)) if !matches!(c.data, super::value::Data::F32(_)));
    if ints > 0
        && n.input
            .iter()
            .take(2)
            .all(|i| lw.int_names.contains(i) || int_const(i))
    {
        lw.int_names.insert(n.output[0].clone());
    }
    let (sa, sb) = (lw.operand(n, 0)?, lw.operand(n, 1)?);
    if sa.0.tensor().is_none() && sb.0.tensor().is_none() {
        return Err(lw.unsupported(n, "both operands constant"));
    }
    let out = broadcast(&sa.1, &sb.1)
        .ok_or_else(|| lw.unsupported(n, "shapes do not broadcast (or rank > 4)"))?;
    let f = match op {
        "Add" => BinOp::Add,
        "Sub" => BinOp::Sub,
        "Mul" => BinOp::Mul,
        "Max" => BinOp::Max,
        "Min" => BinOp::Min,
        "Pow" => BinOp::Pow,
        _ => BinOp::Div,
    };
    let y = lw.new_f32(&n.output[0], out.clone());
    lw.b.ops.push(Op::BinF32 {
        a: sa.0,
        b: sb.0,
        y,
        f,
        dims: pad4(&out).map(|v| v as u32),
        sa: strides4(&sa.1, &out),
        sb: strides4(&sb.1, &out),
    });
    lw.out_f32(n, y);
    Ok(true)
}

/// Add of two u8 tensors of one shape into the QuantizeLinear that follows (QDQ form).
fn add_quantised(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let (a, b) = (lw.deq(n, 0)?, lw.deq(n, 1)?);
    let (sa, sb) = (
        lw.b.tensors[a as usize].shape.clone(),
        lw.b.tensors[b as usize].shape.clone(),
    );
    if sa != sb {
        return Err(lw.unsupported(n, "int8 Add needs equal shapes"));
    }
    let (qi, qy) = lw.fused_q(n)?;
    let nhwc = lw.b.tensors[a as usize].nhwc;
    let y = lw.b.tensor(&n.output[0], DType::U8, sa, nhwc, Some(qy));
    let q = |t: u32, b: &Builder| Q8 {
        scale: b.tensors[t as usize].scale,
        zero: b.tensors[t as usize].zero,
    };
    lw.b.ops.push(Op::AddU8 {
        a,
        b,
        y,
        qa: q(a, &lw.b),
        qb: q(b, &lw.b),
        qy,
    });
    lw.set_out(qi, y, &n.output[0]);
    lw.block_taps.push((n.output[0].clone(), y));
    Ok(())
}

/// Add, Sub, Mul and Div: float arithmetic with broadcasting, the dynamic-quantisation
/// scale products (Mul), or Add of two quantised tensors.
pub(super) fn binary(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if mul_of_tables(lw, idx)?
        || binary_float(lw, idx)?
        || binary_table(lw, idx)?
        || mul_by_channels(lw, idx)?
    {
        Ok(())
    } else if lw.graph.node[idx].op_type == "Add" {
        add_quantised(lw, idx)
    } else {
        Err(lw.no_form(idx))
    }
}

/// The two sides of a Mul of quantised values (each as its codes' values), outside the
/// plain lowering; None for any other node.
fn quantised_factors(lw: &Lowering<'_>, idx: usize) -> Result<Option<(Mapped, Mapped)>> {
    let n = &lw.graph.node[idx];
    let is_q = |v: &Val| matches!(v, Val::Deq(_) | Val::Mapped(_));
    if lw.plain
        || n.op_type != "Mul"
        || n.input.len() != 2
        || !is_q(lw.val(n, 0)?)
        || !is_q(lw.val(n, 1)?)
    {
        return Ok(None);
    }
    Ok(Some((lw.mapped(n, 0)?, lw.mapped(n, 1)?)))
}

/// Mul of two functions of one quantised tensor, `x·f(x)` (SiLU and hard-swish as QDQ
/// exporters write them: the `f(x)` quantised on its own, a table of `x`): a function of
/// `x`'s code, so one table, the same values the float ops give (each side dequantised as
/// Dequantize does, the product in f32, quantised by the QuantizeLinear after). False when
/// the operands are not of that kind.
fn mul_of_tables(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let Some((ma, mb)) = quantised_factors(lw, idx)? else {
        return Ok(false);
    };
    let n = &lw.graph.node[idx];
    // The table (channels, codes) taking x's codes to the other side's source codes.
    let lut_of = |b: &Builder, t: u32, of: u32| -> Option<(usize, Vec<u8>)> {
        b.ops.iter().rev().find_map(|op| match op {
            Op::LutU8 {
                x,
                y,
                channels,
                table,
            } if *y == t && *x == of => Some((
                *channels as usize,
                b.blob[table.off as usize..][..table.len as usize].to_vec(),
            )),
            _ => None,
        })
    };
    // (x's side, the other side, the codes between: None when both read x itself).
    let (mx, mf, link) = if ma.t == mb.t {
        (ma, mb, None)
    } else if let Some(l) = lut_of(&lw.b, mb.t, ma.t) {
        (ma, mb, Some(l))
    } else if let Some(l) = lut_of(&lw.b, ma.t, mb.t) {
        (mb, ma, Some(l))
    } else {
        return Ok(false);
    };
    let ti = &lw.b.tensors[mx.t as usize];
    if ti.dtype != DType::U8 {
        return Ok(false);
    }
    let counts = [mx.channels, mf.channels, link.as_ref().map_or(1, |l| l.0)];
    let channels = counts.iter().copied().max().unwrap_or(1);
    if counts.iter().any(|&c| c != 1 && c != channels) {
        return Ok(false);
    }
    let mut table = vec![0f32; channels * 256];
    for ch in 0..channels {
        for code in 0..256 {
            let inner = match &link {
                Some((lc, codes)) => codes[(ch % lc) * 256 + code] as usize,
                None => code,
            };
            table[ch * 256 + code] = mx.value(ch, code) * mf.value(ch, inner);
        }
    }
    let m = Mapped {
        t: mx.t,
        table,
        channels,
        monotone: false,
    };
    lw.vals.insert(n.output[0].clone(), Val::Mapped(m));
    Ok(true)
}

/// Mul of a quantised NHWC map by a quantised value per channel of each image (the
/// squeeze-and-excitation scale: a map times a sigmoid of its pooled channels), into the
/// QuantizeLinear after it: one op that builds, image by image, each channel's table of
/// the map's codes, with the values the float ops give (each side as Dequantize or its
/// table gives it, the product in f32, quantised as QuantizeLinear is), and looks the map
/// up in them. False when the operands are not of that kind.
fn mul_by_channels(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let Some((ma, mb)) = quantised_factors(lw, idx)? else {
        return Ok(false);
    };
    let n = &lw.graph.node[idx];
    let map_of = |m: &Mapped, o: &Mapped| -> bool {
        let (x, s) = (&lw.b.tensors[m.t as usize], &lw.b.tensors[o.t as usize]);
        let (xs, ss) = (x.logical_shape(), s.logical_shape());
        x.dtype == DType::U8
            && s.dtype == DType::U8
            && x.nhwc
            && xs.len() == 4
            && xs[2] * xs[3] > 1
            && ss == [xs[0], xs[1], 1, 1]
            && [m.channels, o.channels]
                .iter()
                .all(|&k| k == 1 || k == xs[1])
    };
    let (mx, ms) = if map_of(&ma, &mb) {
        (ma, mb)
    } else if map_of(&mb, &ma) {
        (mb, ma)
    } else {
        return Ok(false);
    };
    let Ok((qi, qy)) = lw.fused_q(n) else {
        return Ok(false);
    };
    let n = n.clone();
    let shape = lw.b.tensors[mx.t as usize].shape.clone();
    let c = shape[3];
    let y = lw.b.tensor(&n.output[0], DType::U8, shape, true, Some(qy));
    let tables = lw.b.tensor(
        &format!("{}#tables", n.name),
        DType::U8,
        vec![c * 256],
        false,
        None,
    );
    // Each side's code values, one table or one per channel.
    let values = |m: &Mapped| -> Vec<f32> {
        if m.channels == 1 {
            m.table[..256].to_vec()
        } else {
            m.table[..c * 256].to_vec()
        }
    };
    let (xf, sf) = (lw.b.push(&values(&mx)), lw.b.push(&values(&ms)));
    lw.b.ops.push(Op::MulChanU8 {
        x: mx.t,
        s: ms.t,
        y,
        tables,
        xf,
        sf,
        qy,
    });
    lw.set_out(qi, y, &n.output[0]);
    Ok(true)
}

/// A quantised tensor and a constant (one value, or one per channel of an NHWC map): the
/// arithmetic folds into the tensor's table. False when the operands are not of that kind.
fn binary_table(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let is_q = |v: &Val| matches!(v, Val::Deq(_) | Val::Mapped(_));
    let is_c = |v: &Val| matches!(v, Val::Const(_) | Val::QConst { .. });
    let (a, b) = (lw.val(n, 0)?, lw.val(n, 1)?);
    let xi = if is_q(a) && is_c(b) {
        0
    } else if is_c(a) && is_q(b) {
        1
    } else {
        return Ok(false);
    };
    let c = match lw.val(n, 1 - xi)? {
        Val::Const(k) if k.f32s().is_none() => k.ints().iter().map(|&v| v as f32).collect(),
        _ => lw.floats(n, 1 - xi)?,
    };
    if c.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("constant of '{}'", n.name),
        });
    }
    let mut m = lw.mapped(n, xi)?;
    let ti = lw.b.tensors[m.t as usize].clone();
    let dims = lw.shape_of(&n.input[1 - xi]).unwrap_or_default();
    let xshape = ti.logical_shape();
    // One value, or one per channel: [C, 1, 1] / [1, C, 1, 1] against an NHWC [1, C, H, W].
    let per_channel = c.len() > 1;
    if per_channel {
        let ch = ti.shape.last().copied().unwrap_or(0);
        let ok = ti.nhwc
            && xshape.len() == 4
            && c.len() == ch
            && dims.len() <= 4
            && dims.len() >= 3
            && dims[dims.len() - 3] == ch
            && dims[dims.len() - 2..] == [1, 1];
        if !ok {
            return Ok(false);
        }
        if m.channels == 1 {
            m.table = m.table.repeat(ch);
        } else if m.channels != ch {
            return Ok(false);
        }
        m.channels = ch;
    } else if dims.len() > xshape.len() {
        return Ok(false);
    }
    let op = n.op_type.clone();
    let k = |ch: usize| c[if per_channel { ch } else { 0 }];
    // Non-decreasing in x stays so: x + c, x - c, x·c and x / c with c ≥ 0 (> 0).
    let rising = match (op.as_str(), xi) {
        ("Add", _) | ("Sub", 0) => true,
        ("Mul", _) => c.iter().all(|&v| v >= 0.0),
        ("Div", 0) => c.iter().all(|&v| v > 0.0),
        _ => false,
    };
    m.monotone &= rising;
    for ch in 0..m.channels {
        for code in 0..256 {
            let v = m.value(ch, code);
            m.table[ch * 256 + code] = match (op.as_str(), xi) {
                ("Add", _) => v + k(ch),
                ("Sub", 0) => v - k(ch),
                ("Sub", _) => k(ch) - v,
                ("Mul", _) => v * k(ch),
                ("Div", 0) => v / k(ch),
                _ => k(ch) / v,
            };
        }
    }
    lw.vals.insert(n.output[0].clone(), Val::Mapped(m));
    Ok(true)
}

/// The float form; false when the input is not a row-major f32 tensor.
fn unary_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let op = n.op_type.as_str();
    let x0 = lw.fact(n, 0);
    let Some(x) = x0 else { return Ok(false) };
    let f = match op {
        "Sqrt" => Unary::Sqrt,
        "Erf" => Unary::Erf,
        "Relu" => Unary::Relu,
        "Sigmoid" => Unary::Sigmoid,
        "HardSwish" => Unary::HardSwish,
        "Tanh" => Unary::Tanh,
        "Exp" => Unary::Exp,
        "Log" => Unary::Log,
        "Abs" => Unary::Abs,
        "Neg" => Unary::Neg,
        "Softplus" => Unary::Softplus,
        "Reciprocal" => Unary::Reciprocal,
        "Floor" => Unary::Floor,
        "Ceil" => Unary::Ceil,
        "Round" => Unary::Round,
        "Gelu" => match attr(n, "approximate").map_or(&b"none"[..], |a| a.s.as_slice()) {
            b"tanh" => Unary::GeluTanh,
            _ => Unary::GeluErf,
        },
        "LeakyRelu" | "Elu" => {
            // x < 0: alpha·x, or alpha·(e^x - 1); the constant alpha as the operand.
            let (d, f) = if op == "Elu" {
                (1.0, BinOp::Elu)
            } else {
                (0.01, BinOp::PRelu)
            };
            let alpha = attr(n, "alpha").map_or(d, |a| a.f);
            if !alpha.is_finite() {
                return Err(Error::NonFinite {
                    what: format!("alpha of '{}'", n.name),
                });
            }
            let shape = lw.fshape(x);
            let y = lw.new_f32(&n.output[0], shape.clone());
            let c = lw.b.push(&[alpha]);
            lw.b.ops.push(Op::BinF32 {
                a: crate::plan::Src::T(x),
                b: crate::plan::Src::C(c),
                y,
                f,
                dims: pad4(&shape).map(|v| v as u32),
                sa: strides4(&shape, &shape),
                sb: [0; 4],
            });
            lw.out_f32(n, y);
            return Ok(true);
        }
        "HardSigmoid" => {
            // clamp(alpha·x + beta, 0, 1) on the float kernels.
            let (alpha, beta) = hard_sigmoid_params(lw, idx)?;
            let n = &lw.graph.node[idx];
            let shape = lw.fshape(x);
            let d = pad4(&shape).map(|v| v as u32);
            let st = strides4(&shape, &shape);
            let mut t = x;
            for (f, c) in [(BinOp::Mul, alpha), (BinOp::Add, beta)] {
                let y = lw.new_f32(&format!("{}#{f:?}", n.output[0]), shape.clone());
                let c = lw.b.push(&[c]);
                lw.b.ops.push(Op::BinF32 {
                    a: crate::plan::Src::T(t),
                    b: crate::plan::Src::C(c),
                    y,
                    f,
                    dims: d,
                    sa: st,
                    sb: [0; 4],
                });
                t = y;
            }
            let y = lw.new_f32(&n.output[0], shape);
            lw.b.ops.push(Op::ClampF32 {
                x: t,
                y,
                lo: 0.0,
                hi: 1.0,
            });
            lw.out_f32(n, y);
            return Ok(true);
        }
        _ => return Ok(false),
    };
    let y = lw.new_f32(&n.output[0], lw.fshape(x));
    lw.b.ops.push(Op::UnaryF32 { x, y, f });
    lw.out_f32(n, y);
    Ok(true)
}

fn hard_sigmoid_params(lw: &Lowering<'_>, idx: usize) -> Result<(f32, f32)> {
    let n = &lw.graph.node[idx];
    let alpha = attr(n, "alpha").map_or(0.2, |a| a.f);
    let beta = attr(n, "beta").map_or(0.5, |a| a.f);
    if !(alpha.is_finite() && beta.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("alpha or beta of '{}'", n.name),
        });
    }
    Ok((alpha, beta))
}

/// Unary functions: on a float tensor by the f32 kernels (where a float form exists), on a
/// quantised tensor folded into its table.
pub(super) fn unary(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if unary_float(lw, idx)? {
        Ok(())
    } else if !matches!(
        lw.graph.node[idx].op_type.as_str(),
        "Sqrt" | "Erf" | "Reciprocal" | "Floor" | "Ceil" | "Round" | "Gelu"
    ) {
        table(lw, idx)
    } else {
        Err(lw.no_form(idx))
    }
}

/// Pow by one constant exponent: on a float tensor `x·x` (2, the variance of a layer
/// norm written out), `√x` (0.5) or `x` (1) by the f32 kernels; on a quantised tensor any
/// exponent, folded into its table.
pub(super) fn pow(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let e = match lw.floats(n, 1).as_deref() {
        Ok([e]) if e.is_finite() => *e,
        _ if lw.fact(n, 0).is_some() => {
            // Exponents computed at run time, or one per element: powf elementwise.
            return if binary_float(lw, idx)? {
                Ok(())
            } else {
                Err(lw.no_form(idx))
            };
        }
        _ => return Err(lw.unsupported(n, "the exponent must be one finite constant")),
    };
    let Some(x) = lw.fact(n, 0) else {
        return table(lw, idx);
    };
    let shape = lw.fshape(x);
    if e == 1.0 {
        lw.out_f32(n, x);
        return Ok(());
    }
    let y = lw.new_f32(&n.output[0], shape.clone());
    if e == 2.0 {
        let st = strides4(&shape, &shape);
        lw.b.ops.push(Op::BinF32 {
            a: crate::plan::Src::T(x),
            b: crate::plan::Src::T(x),
            y,
            f: BinOp::Mul,
            dims: pad4(&shape).map(|v| v as u32),
            sa: st,
            sb: st,
        });
    } else if e == 0.5 {
        lw.b.ops.push(Op::UnaryF32 {
            x,
            y,
            f: Unary::Sqrt,
        });
    } else {
        let c = lw.b.push(&[e]);
        lw.b.ops.push(Op::BinF32 {
            a: crate::plan::Src::T(x),
            b: crate::plan::Src::C(c),
            y,
            f: BinOp::Pow,
            dims: pad4(&shape).map(|v| v as u32),
            sa: strides4(&shape, &shape),
            sb: [0; 4],
        });
    }
    let n = &lw.graph.node[idx];
    lw.out_f32(n, y);
    Ok(())
}

/// Identity and Dropout (inference: the identity): the output is the input, whatever it
/// holds.
pub(super) fn identity(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    if n.op_type == "Dropout" {
        // Training mode (input 2, or opset ≤ 6's is_test = 0) drops values at random.
        let training = n.input.len() > 2
            && !n.input[2].is_empty()
            && lw
                .constant(n, 2)
                .map_or(true, |c| c.ints().iter().any(|&v| v != 0));
        if training || attr_i(n, "is_test", 1) == 0 {
            return Err(lw.unsupported(n, "training mode (only inference lowers)"));
        }
        if n.output.len() > 1 && !n.output[1].is_empty() {
            return Err(lw.unsupported(n, "the mask output"));
        }
    }
    let v = lw.val(n, 0)?.clone();
    lw.vals.insert(n.output[0].clone(), v);
    Ok(())
}

/// The float form; false when the input is not a row-major f32 tensor.
fn clip_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let x0 = lw.fact(n, 0);
    let Some(x) = x0 else { return Ok(false) };
    let given = |i: usize| n.input.len() > i && !n.input[i].is_empty();
    if (1..3).any(|i| given(i) && lw.fact(n, i).is_some()) {
        // Bounds computed at run time: Max by the lower, Min by the upper.
        let mut cur = x;
        for (i, f) in [(1, BinOp::Max), (2, BinOp::Min)] {
            if !given(i) {
                continue;
            }
            let n = &lw.graph.node[idx];
            let (b, bs) = lw.operand(n, i)?;
            let xs = lw.fshape(cur);
            if broadcast(&xs, &bs).as_ref() != Some(&xs) {
                return Err(lw.unsupported(n, "bounds must broadcast to the input"));
            }
            let name = if i == 2 || !given(2) {
                n.output[0].clone()
            } else {
                format!("{}#lo", n.output[0])
            };
            let y = lw.new_f32(&name, xs.clone());
            lw.b.ops.push(Op::BinF32 {
                a: crate::plan::Src::T(cur),
                b,
                y,
                f,
                dims: pad4(&xs).map(|v| v as u32),
                sa: strides4(&xs, &xs),
                sb: strides4(&bs, &xs),
            });
            cur = y;
        }
        let n = &lw.graph.node[idx];
        lw.out_f32(n, cur);
        return Ok(true);
    }
    let bound = |s: &Lowering<'_>, i: usize, d: f32| -> Result<f32> {
        if n.input.len() > i && !n.input[i].is_empty() {
            match s.constant(n, i)?.f32s().as_deref() {
                Some([v]) if !v.is_nan() => Ok(*v),
                _ => Err(s.unsupported(n, "bounds must be scalar constants")),
            }
        } else {
            Ok(d)
        }
    };
    let (lo, hi) = (
        bound(lw, 1, f32::NEG_INFINITY)?,
        bound(lw, 2, f32::INFINITY)?,
    );
    let y = lw.new_f32(&n.output[0], lw.fshape(x));
    lw.b.ops.push(Op::ClampF32 { x, y, lo, hi });
    lw.out_f32(n, y);
    Ok(true)
}

/// BatchNormalization (inference): of a float `[N, C, ...]` tensor as `x·s + t` per
/// channel, or folded into a quantised map's table.
pub(super) fn batch_norm(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let Some(x) = lw.fact(n, 0) else {
        return table(lw, idx);
    };
    if n.output.len() > 1 && n.output[1..].iter().any(|o| !o.is_empty()) {
        return Err(lw.unsupported(n, "training mode (running statistics outputs)"));
    }
    let xs = lw.fshape(x);
    if xs.len() < 2 || xs.len() > 4 {
        return Err(lw.unsupported(n, "input rank 2 to 4"));
    }
    let c = xs[1];
    let p: Vec<Vec<f32>> = (1..5).map(|i| lw.floats(n, i)).collect::<Result<_>>()?;
    if p.iter().any(|v| v.len() != c) {
        return Err(lw.unsupported(n, "parameters differ from the channel count"));
    }
    let eps = attr(n, "epsilon").map_or(1e-5, |a| a.f);
    let (mul, add): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|k| {
            let s = p[0][k] / (p[3][k] + eps).sqrt();
            (s, p[1][k] - p[2][k] * s)
        })
        .unzip();
    if mul.iter().chain(&add).any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("batch norm '{}'", n.name),
        });
    }
    // [C, 1, ...]: broadcast over the axes after the channels.
    let mut cs = vec![c];
    cs.extend(std::iter::repeat_n(1, xs.len() - 2));
    let name = n.output[0].clone();
    let mut t = x;
    for (f, v, last) in [(BinOp::Mul, &mul, false), (BinOp::Add, &add, true)] {
        let y = if last {
            lw.new_f32(&name, xs.clone())
        } else {
            lw.new_f32(&format!("{name}#scaled"), xs.clone())
        };
        let k = lw.b.push(v);
        lw.b.ops.push(Op::BinF32 {
            a: crate::plan::Src::T(t),
            b: crate::plan::Src::C(k),
            y,
            f,
            dims: pad4(&xs).map(|v| v as u32),
            sa: strides4(&xs, &xs),
            sb: strides4(&cs, &xs),
        });
        t = y;
    }
    lw.out_f32(&lw.graph.node[idx], t);
    Ok(())
}

/// PRelu: of a float tensor by a slope that broadcasts to it, or folded into a quantised
/// tensor's table.
pub(super) fn prelu(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let Some(x) = lw.fact(n, 0) else {
        return table(lw, idx);
    };
    let xs = lw.fshape(x);
    let (s, ss) = lw.operand(n, 1)?;
    if broadcast(&xs, &ss).as_ref() != Some(&xs) {
        return Err(lw.unsupported(n, "the slope must broadcast to the input (rank ≤ 4)"));
    }
    let n = &lw.graph.node[idx];
    let y = lw.new_f32(&n.output[0], xs.clone());
    lw.b.ops.push(Op::BinF32 {
        a: crate::plan::Src::T(x),
        b: s,
        y,
        f: BinOp::PRelu,
        dims: pad4(&xs).map(|v| v as u32),
        sa: strides4(&xs, &xs),
        sb: strides4(&ss, &xs),
    });
    lw.out_f32(n, y);
    Ok(())
}

/// Max and Min: of two float tensors (broadcasting), or of a quantised tensor and a
/// scalar constant (folded into its table).
pub(super) fn max_min(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    if n.input.len() != 2 && (0..n.input.len()).any(|i| lw.fact(n, i).is_some()) {
        return variadic(lw, idx);
    }
    if n.input.len() == 2
        && (lw.fact(n, 0).is_some() || lw.fact(n, 1).is_some())
        && binary_float(lw, idx)?
    {
        return Ok(());
    }
    table(lw, idx)
}

/// Max, Min, Sum and Mean of any number of float tensors (broadcasting): a chain of
/// binary ops (Mean: the Sum times 1/count).
pub(super) fn variadic(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let op = n.op_type.clone();
    let f = match op.as_str() {
        "Max" => BinOp::Max,
        "Min" => BinOp::Min,
        _ => BinOp::Add,
    };
    if n.input.is_empty() || (0..n.input.len()).all(|i| lw.fact(n, i).is_none()) {
        return Err(lw.unsupported(n, "needs a float tensor among the inputs"));
    }
    let out_name = n.output[0].clone();
    let count = n.input.len();
    let (mut acc, mut shape) = lw.operand(n, 0)?;
    for i in 1..count {
        let n = &lw.graph.node[idx];
        let (b, sb) = lw.operand(n, i)?;
        let n = &lw.graph.node[idx];
        let out = broadcast(&shape, &sb)
            .ok_or_else(|| lw.unsupported(n, "shapes do not broadcast (or rank > 4)"))?;
        let last = i + 1 == count && op != "Mean";
        let name = if last {
            out_name.clone()
        } else {
            format!("{out_name}#{i}")
        };
        let y = lw.new_f32(&name, out.clone());
        lw.b.ops.push(Op::BinF32 {
            a: acc,
            b,
            y,
            f,
            dims: pad4(&out).map(|v| v as u32),
            sa: strides4(&shape, &out),
            sb: strides4(&sb, &out),
        });
        acc = crate::plan::Src::T(y);
        shape = out;
    }
    let n = &lw.graph.node[idx];
    let y = match acc {
        crate::plan::Src::T(t) => {
            if op == "Mean" {
                let y = lw.new_f32(&out_name, shape.clone());
                let k = lw.b.push(&[1.0 / count as f32]);
                lw.b.ops.push(Op::BinF32 {
                    a: crate::plan::Src::T(t),
                    b: crate::plan::Src::C(k),
                    y,
                    f: BinOp::Mul,
                    dims: pad4(&shape).map(|v| v as u32),
                    sa: strides4(&shape, &shape),
                    sb: [0; 4],
                });
                y
            } else {
                t
            }
        }
        crate::plan::Src::C(_) => return Err(lw.unsupported(n, "a single constant input")),
    };
    let n = &lw.graph.node[idx];
    lw.out_f32(n, y);
    Ok(())
}

/// Clip of a float tensor by constant bounds, or folded into a quantised tensor's table.
pub(super) fn clip(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if clip_float(lw, idx)? {
        Ok(())
    } else {
        table(lw, idx)
    }
}

/// Elementwise float ops on a quantised tensor fold into its table.
pub(super) fn table(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let op = n.op_type.as_str();
    // Max/Min: one operand is a scalar constant, the other the tensor.
    let xi = if matches!(op, "Max" | "Min") {
        if n.input.len() != 2 {
            return Err(lw.unsupported(n, "needs exactly two operands"));
        }
        match lw.val(n, 0)? {
            Val::Const(_) | Val::QConst { .. } => 1,
            _ => 0,
        }
    } else {
        0
    };
    let mut m = lw.mapped(n, xi)?;
    let scalar = |s: &Lowering<'_>, i: usize| -> Result<f32> {
        match s.floats(n, i)?.as_slice() {
            [v] if !v.is_nan() => Ok(*v),
            _ => Err(s.unsupported(n, format!("input {i} must be a scalar constant"))),
        }
    };
    let f: Box<dyn Fn(usize, f32) -> f32> = match op {
        "Relu" => Box::new(|_, v: f32| v.max(0.0)),
        "Sigmoid" => Box::new(|_, v| edgetune_kernels::elementwise::sigmoid1(v)),
        "HardSigmoid" => {
            let (a, b) = hard_sigmoid_params(lw, idx)?;
            m.monotone &= a >= 0.0;
            Box::new(move |_, v: f32| (a * v + b).clamp(0.0, 1.0))
        }
        "HardSwish" => {
            m.monotone = false;
            Box::new(|_, v: f32| v * (v / 6.0 + 0.5).clamp(0.0, 1.0))
        }
        "Tanh" => Box::new(|_, v: f32| libm::tanhf(v)),
        "Exp" => Box::new(|_, v: f32| libm::expf(v)),
        "Log" => Box::new(|_, v: f32| libm::logf(v)),
        "Softplus" => Box::new(|_, v: f32| {
            if v > 20.0 {
                v
            } else {
                libm::log1pf(libm::expf(v))
            }
        }),
        "Abs" => {
            m.monotone = false;
            Box::new(|_, v: f32| v.abs())
        }
        "Neg" => {
            m.monotone = false;
            Box::new(|_, v: f32| -v)
        }
        "Elu" => {
            let a = attr(n, "alpha").map_or(1.0, |a| a.f);
            if !a.is_finite() {
                return Err(Error::NonFinite {
                    what: format!("alpha of '{}'", n.name),
                });
            }
            m.monotone &= a >= 0.0;
            Box::new(move |_, v: f32| {
                if v < 0.0 {
                    a * (libm::expf(v) - 1.0)
                } else {
                    v
                }
            })
        }
        "PRelu" => {
            // One slope, or one per channel ([C], [C, 1, 1] or [1, C, 1, 1]).
            let slope = lw.floats(n, 1)?;
            if slope.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: format!("slope of '{}'", n.name),
                });
            }
            m.monotone &= slope.iter().all(|&s| s >= 0.0);
            if slope.len() > 1 {
                // The channel is the innermost stored axis of an NHWC map or a [N, C] tensor.
                let c = lw
                    .b
                    .tensors
                    .get(m.t as usize)
                    .filter(|t| t.nhwc || t.shape.len() == 2)
                    .and_then(|t| t.shape.last().copied())
                    .filter(|&c| c == slope.len())
                    .ok_or_else(|| lw.unsupported(n, "per-channel slopes need an NHWC map or a [N, C] tensor of as many channels"))?;
                if m.channels == 1 {
                    m.table = m.table.repeat(c);
                } else if m.channels != c {
                    return Err(lw.unsupported(n, "per-channel tables of different widths"));
                }
                m.channels = c;
            }
            Box::new(move |k, v: f32| {
                if v < 0.0 {
                    slope[if slope.len() == 1 { 0 } else { k }] * v
                } else {
                    v
                }
            })
        }
        "LeakyRelu" => {
            let a = attr(n, "alpha").map_or(0.01, |a| a.f);
            if !a.is_finite() {
                return Err(Error::NonFinite {
                    what: format!("alpha of '{}'", n.name),
                });
            }
            m.monotone &= a >= 0.0;
            Box::new(move |_, v: f32| if v < 0.0 { a * v } else { v })
        }
        "Pow" => {
            let e = scalar(lw, 1)?;
            m.monotone &= e == 1.0;
            Box::new(move |_, v: f32| v.powf(e))
        }
        "Max" | "Min" => {
            let c = scalar(lw, 1 - xi)?;
            if op == "Max" {
                Box::new(move |_, v: f32| v.max(c))
            } else {
                Box::new(move |_, v: f32| v.min(c))
            }
        }
        "Clip" => {
            let get = |s: &Lowering<'_>, i: usize, d: f32| -> Result<f32> {
                if n.input.len() > i && !n.input[i].is_empty() {
                    scalar(s, i)
                } else {
                    Ok(d)
                }
            };
            let lo = get(lw, 1, attr(n, "min").map_or(f32::NEG_INFINITY, |a| a.f))?;
            let hi = get(lw, 2, attr(n, "max").map_or(f32::INFINITY, |a| a.f))?;
            Box::new(move |_, v: f32| v.max(lo).min(hi))
        }
        "BatchNormalization" => {
            let c =
                lw.b.tensors
                    .get(m.t as usize)
                    .and_then(|t| {
                        if t.nhwc {
                            t.shape.last().copied()
                        } else {
                            None
                        }
                    })
                    .ok_or_else(|| lw.unsupported(n, "needs an NHWC feature map"))?;
            let p: Vec<Vec<f32>> = (1..5).map(|i| lw.floats(n, i)).collect::<Result<_>>()?;
            if p.iter().any(|v| v.len() != c) {
                return Err(lw.unsupported(n, "parameters differ from the channel count"));
            }
            let eps = attr(n, "epsilon").map_or(1e-5, |a| a.f);
            let (mul, add): (Vec<f32>, Vec<f32>) = (0..c)
                .map(|k| {
                    let s = p[0][k] / (p[3][k] + eps).sqrt();
                    (s, p[1][k] - p[2][k] * s)
                })
                .unzip();
            if mul.iter().chain(&add).any(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: format!("batch norm '{}'", n.name),
                });
            }
            m.monotone &= mul.iter().all(|&s| s >= 0.0);
            if m.channels == 1 {
                m.table = m.table.repeat(c);
            } else if m.channels != c {
                return Err(lw.unsupported(n, "per-channel tables of different widths"));
            }
            m.channels = c;
            // The ONNX formula in its own order, so table entries round as a float
            // evaluation of the graph does.
            let (g, b, mu, den): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) = (
                p[0].clone(),
                p[1].clone(),
                p[2].clone(),
                p[3].iter().map(|v| (v + eps).sqrt()).collect(),
            );
            Box::new(move |k, v: f32| (v - mu[k]) / den[k] * g[k] + b[k])
        }
        _ => return Err(lw.unsupported(n, "no lowering for this op")),
    };
    for c in 0..m.channels {
        for code in 0..256 {
            m.table[c * 256 + code] = f(c, m.value(c, code));
        }
    }
    lw.vals.insert(n.output[0].clone(), Val::Mapped(m));
    Ok(())
}

/// NumPy broadcast of two shapes, ≤ 4 axes.
pub(super) fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    if r > 4 {
        return None;
    }
    let get = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

pub(super) fn pad4(s: &[usize]) -> [usize; 4] {
    let mut d = [1; 4];
    d[4 - s.len()..].copy_from_slice(s);
    d
}

/// Element strides of an operand of shape `s` read over the broadcast shape `out`.
pub(super) fn strides4(s: &[usize], out: &[usize]) -> [u32; 4] {
    let (d, o) = (pad4(s), pad4(out));
    let mut st = [0u32; 4];
    let mut acc = 1usize;
    for i in (0..4).rev() {
        st[i] = if d[i] == 1 && o[i] != 1 {
            0
        } else {
            acc as u32
        };
        acc *= d[i];
    }
    st
}

/// Elementwise float ops between transposes to NCHW and the inverse one (float
/// convolutions' NHWC results to NCHW, their batch norms, activations and residual add,
/// back to NHWC for the next convolution) run on the NHWC maps themselves, and the
/// transposes go: an elementwise op commutes with any reordering of its values, and a
/// constant operand broadcast over NCHW axes (a batch norm's per-channel scale and shift)
/// is read through its strides permuted the same way. Only where the ops between read
/// nothing else but constants and none of their values is an input, output or tap; a
/// value also read elsewhere (a residual path) is transposed back to NCHW for those
/// readers alone.
pub(super) fn cancel_transposes(b: &mut Builder, pin_start: &[u32], pin_end: &[u32]) {
    let mut k = 0;
    while k < b.ops.len() {
        match transpose_region(b, k, pin_start, pin_end) {
            Some(i) => k = i,
            None => k += 1,
        }
    }
}

/// A clamp (ReLU, ReLU6, Clip) of a float convolution's or Gemm's result that nothing else
/// reads is the convolution's own bounds: its epilogue clamps each value as it is
/// written, with the same `max(lo)` then `min(hi)`, and the map is not read and written
/// again. Not where the convolution already clamps or the result is an output or a tap.
pub(super) fn clamp_into_convs(b: &mut Builder, pin_start: &[u32], pin_end: &[u32]) {
    let mut k = 0;
    while k < b.ops.len() {
        let Op::ClampF32 {
            x: mid,
            y: out,
            lo,
            hi,
        } = b.ops[k]
        else {
            k += 1;
            continue;
        };
        let pinned = pin_start.contains(&mid) || pin_end.contains(&mid);
        let readers = b.ops.iter().filter(|op| op.io().0.contains(&mid)).count();
        let producer = b.ops[..k].iter().rposition(|op| op.io().1.contains(&mid));
        let same = b.tensors[mid as usize].len() == b.tensors[out as usize].len();
        let fused = match producer.map(|j| &mut b.ops[j]) {
            Some(Op::ConvF32 {
                y,
                lo: clo,
                hi: chi,
                ..
            }) if *y == mid
                && *clo == f32::NEG_INFINITY
                && *chi == f32::INFINITY
                && readers == 1
                && !pinned
                && same =>
            {
                (*y, *clo, *chi) = (out, lo, hi);
                true
            }
            _ => false,
        };
        if fused {
            b.ops.remove(k);
        } else {
            k += 1;
        }
    }
}

/// Ops none of whose results is read by another op, an output or a tap go (a table of x
/// that a product `x·f(x)` folded into its own table, when nothing else reads it).
pub(super) fn drop_unread(b: &mut Builder, pin_start: &[u32], pin_end: &[u32]) {
    loop {
        let pinned = |t: &u32| pin_start.contains(t) || pin_end.contains(t);
        let unread = (0..b.ops.len()).rev().find(|&k| {
            let outs = b.ops[k].io().1;
            !outs.is_empty()
                && outs
                    .iter()
                    .all(|t| !pinned(t) && !b.ops.iter().any(|op| op.io().0.contains(t)))
        });
        match unread {
            Some(k) => {
                b.ops.remove(k);
            }
            None => return,
        }
    }
}

/// A transpose of a transpose's output that undoes it (a float convolution's NHWC result
/// taken to NCHW for the graph and back to NHWC for the next convolution) is its first
/// input again: its readers read that, and the transposes go (the first stays while the
/// NCHW tensor has other readers). Not where the second's output is an output or a tap.
pub(super) fn inverse_transposes(b: &mut Builder, pin_start: &[u32], pin_end: &[u32]) {
    let mut k = 0;
    while k < b.ops.len() {
        let Op::TransposeF32 {
            x: mid,
            y: out,
            dims: d2,
            perm: p2,
        } = b.ops[k]
        else {
            k += 1;
            continue;
        };
        let first = b.ops[..k].iter().rposition(|op| op.io().1.contains(&mid));
        let undone = first.and_then(|j| match b.ops[j] {
            Op::TransposeF32 {
                x: src,
                dims: d1,
                perm: p1,
                ..
            } => {
                let fits = (0..4).all(|a| d2[a] == d1[p1[a] as usize])
                    && (0..4).all(|a| p1[p2[a] as usize] as usize == a)
                    && b.tensors[src as usize].dtype == b.tensors[out as usize].dtype;
                fits.then_some((j, src))
            }
            _ => None,
        });
        let pinned = |t: u32| pin_start.contains(&t) || pin_end.contains(&t);
        let Some((j, src)) = undone.filter(|_| !pinned(out)) else {
            k += 1;
            continue;
        };
        for op in &mut b.ops[k + 1..] {
            op.rename_reads(out, src);
        }
        b.ops.remove(k);
        let read = b.ops.iter().any(|op| op.io().0.contains(&mid));
        if !read && !pinned(mid) {
            b.ops.remove(j);
            k -= 1;
        }
    }
}

/// The NHWC source and `(n, hw, c)` of tensor `t` if an NHWC → NCHW float transpose
/// (before op `k`) writes it.
fn nchw_of(b: &Builder, k: usize, t: u32) -> Option<(u32, [usize; 3])> {
    let j = b.ops[..k].iter().rposition(|op| op.io().1.contains(&t))?;
    match b.ops[j] {
        Op::TransposeF32 {
            x,
            y,
            dims: [n, hw, c, 1],
            perm: [0, 2, 1, 3],
        } if y == t && b.tensors[x as usize].dtype == DType::F32 => {
            Some((x, [n as usize, hw as usize, c as usize]))
        }
        _ => None,
    }
}

/// The float transposes the lowering put around each convolution and those of the
/// graph: each one undone by the next goes, transposes move below the data movement and
/// elementwise ops that commute with them, and the elementwise ops between a transpose
/// and its inverse run on the untransposed map.
pub(super) fn move_transposes(b: &mut Builder, pin_start: &[u32], pin_end: &[u32]) {
    sink_transposes(b, pin_start, pin_end);
    inverse_transposes(b, pin_start, pin_end);
    cancel_transposes(b, pin_start, pin_end);
    inverse_transposes(b, pin_start, pin_end);
}

/// Whether op `k` is the only reader of `t`.
fn only_reader(b: &Builder, t: u32, k: usize) -> bool {
    b.ops
        .iter()
        .enumerate()
        .all(|(j, op)| j == k || !op.io().0.contains(&t))
}

/// Moves NHWC → NCHW transposes of float maps below the data movement that commutes with
/// them: a concatenation or a slice along the channels, a nearest upsampling. The op
/// runs on the NHWC maps (the same values copied) and its NCHW result becomes a
/// transpose of the NHWC one, which the passes after this one cancel against the
/// transpose into the next convolution or carry through elementwise ops. A transpose
/// whose NCHW output nothing reads any more goes. (Detectors' necks: YOLO's split and
/// concatenated branches, a feature pyramid's upsampled levels.)
fn sink_transposes(b: &mut Builder, pin_start: &[u32], pin_end: &[u32]) {
    // Sweeps until none moves (a transpose moved below a later reader, or cancelled
    // against the next one, may leave an earlier reader the only one).
    loop {
        inverse_transposes(b, pin_start, pin_end);
        if !sink_sweep(b, pin_start, pin_end) {
            break;
        }
    }
}

/// One pass of [`sink_transposes`] over the ops; whether a transpose moved.
fn sink_sweep(b: &mut Builder, pin_start: &[u32], pin_end: &[u32]) -> bool {
    let mut moved = false;
    let mut k = 0;
    while k < b.ops.len() {
        let rewrite = match b.ops[k] {
            Op::Concat {
                a,
                b: rb,
                y,
                outer,
                ia,
                ib,
                ..
            } => match (nchw_of(b, k, a), nchw_of(b, k, rb)) {
                (Some((sa, [n, hw, ca])), Some((sb, [n2, hw2, cb])))
                    if (n, hw) == (n2, hw2)
                        && (outer as usize, ia as usize, ib as usize) == (n, ca * hw, cb * hw)
                        && b.tensors[y as usize].dtype == DType::F32 =>
                {
                    Some((
                        [a, rb],
                        Op::Concat {
                            a: sa,
                            b: sb,
                            y,
                            outer: (n * hw) as u32,
                            ia: ca as u32,
                            ib: cb as u32,
                            ta: crate::plan::Blob { off: 0, len: 0 },
                            tb: crate::plan::Blob { off: 0, len: 0 },
                        },
                        [n, hw, ca + cb],
                        y,
                    ))
                }
                _ => None,
            },
            Op::Slice {
                x,
                y,
                outer,
                inner,
                off,
                len,
            } => match nchw_of(b, k, x) {
                Some((src, [n, hw, c]))
                    if (outer as usize, inner as usize) == (n, c * hw)
                        && (off as usize).is_multiple_of(hw)
                        && (len as usize).is_multiple_of(hw) =>
                {
                    let (c0, cl) = (off as usize / hw, len as usize / hw);
                    Some((
                        [x, x],
                        Op::Slice {
                            x: src,
                            y,
                            outer: (n * hw) as u32,
                            inner: c as u32,
                            off: c0 as u32,
                            len: cl as u32,
                        },
                        [n, hw, cl],
                        y,
                    ))
                }
                _ => None,
            },
            Op::Upsample {
                x,
                y,
                outer,
                h,
                w,
                inner: 1,
                fh,
                fw,
            } => match nchw_of(b, k, x) {
                Some((src, [n, hw, c])) if outer as usize == n * c && (h * w) as usize == hw => {
                    Some((
                        [x, x],
                        Op::Upsample {
                            x: src,
                            y,
                            outer: n as u32,
                            h,
                            w,
                            inner: c as u32,
                            fh,
                            fw,
                        },
                        [n, hw * (fh * fw) as usize, c],
                        y,
                    ))
                }
                _ => None,
            },
            // Elementwise ops whose inputs are read by them alone: moving the transpose
            // below them adds none.
            Op::UnaryF32 { x, y, .. } | Op::ClampF32 { x, y, .. }
                if b.tensors[x as usize].len() == b.tensors[y as usize].len()
                    && only_reader(b, x, k) =>
            {
                nchw_of(b, k, x).map(|(src, d)| {
                    let mut op = b.ops[k].clone();
                    if let Op::UnaryF32 { x, .. } | Op::ClampF32 { x, .. } = &mut op {
                        *x = src;
                    }
                    ([x, x], op, d, y)
                })
            }
            Op::ChainF32 { a, b: rb, y, .. }
                if super::chains::pointwise_inputs(b, &b.ops[k])
                    && only_reader(b, a, k)
                    && rb.is_none_or(|t| t != a && only_reader(b, t, k)) =>
            {
                match (nchw_of(b, k, a), rb.map(|t| nchw_of(b, k, t))) {
                    (Some((sa, d)), None) | (Some((sa, d)), Some(Some((_, _)))) => {
                        let sb = rb.and_then(|t| nchw_of(b, k, t));
                        if sb.is_some_and(|(_, d2)| d2 != d) {
                            None
                        } else {
                            let mut op = b.ops[k].clone();
                            if let Op::ChainF32 { a, b: second, .. } = &mut op {
                                *a = sa;
                                *second = sb.map(|s| s.0);
                            }
                            Some(([a, rb.unwrap_or(a)], op, d, y))
                        }
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        // The op writes a new NHWC tensor; a transpose right after it writes the NCHW one.
        let Some((ins, op, [n, hw, c], y)) = rewrite.filter(|r| {
            let l = &b.tensors[r.3 as usize].shape;
            l.len() == 4 && l[0] * l[1] == r.2[0] * r.2[2] && l[2] * l[3] == r.2[1]
        }) else {
            k += 1;
            continue;
        };
        let l = &b.tensors[y as usize].shape;
        let shape = vec![l[0], l[2], l[3], l[1]];
        let name = format!("{}#nhwc", b.tensors[y as usize].name);
        let z = b.tensor(&name, DType::F32, shape, false, None);
        let mut op = op;
        match &mut op {
            Op::Concat { y, .. }
            | Op::Slice { y, .. }
            | Op::Upsample { y, .. }
            | Op::UnaryF32 { y, .. }
            | Op::ClampF32 { y, .. }
            | Op::ChainF32 { y, .. } => *y = z,
            _ => {}
        }
        b.ops[k] = op;
        b.ops.insert(
            k + 1,
            Op::TransposeF32 {
                x: z,
                y,
                dims: [n as u32, hw as u32, c as u32, 1],
                perm: [0, 2, 1, 3],
            },
        );
        // Transposes whose NCHW output nothing reads any more go.
        let pinned = |t: u32| pin_start.contains(&t) || pin_end.contains(&t);
        let mut gone: Vec<usize> = vec![];
        for t in ins {
            let read = b.ops.iter().any(|op| op.io().0.contains(&t));
            if let Some(j) = b.ops[..k].iter().rposition(|op| op.io().1.contains(&t)) {
                if !read && !pinned(t) && !gone.contains(&j) {
                    gone.push(j);
                }
            }
        }
        gone.sort_unstable();
        for &j in gone.iter().rev() {
            b.ops.remove(j);
        }
        k = k + 1 - gone.len();
        moved = true;
    }
    moved
}

/// Whether a [`Op::BinF32`] operand's strides over `[N, C, H, W]` repeat it over the
/// pixels: one value per image and channel at most, the same bytes in NCHW and NHWC.
fn per_channel(st: &[u32; 4]) -> bool {
    st[2] == 0 && st[3] == 0
}

/// Most ops between a transpose and its inverse that [`cancel_transposes`] looks through.
const MAX_REGION: usize = 16;

/// If op `k` is an NCHW → NHWC transpose whose input comes from inverse transposes
/// through elementwise ops only, rewrites those ops onto the NHWC maps, removes the
/// transposes and returns where to look next.
fn transpose_region(
    b: &mut Builder,
    k: usize,
    pin_start: &[u32],
    pin_end: &[u32],
) -> Option<usize> {
    let Op::TransposeF32 {
        x: mid2,
        y: out,
        dims: d2,
        perm: [0, 2, 1, 3],
    } = b.ops[k]
    else {
        return None;
    };
    let (n, c, hw) = (d2[0] as usize, d2[1] as usize, d2[2] as usize);
    if d2[3] != 1 {
        return None;
    }
    let len = |b: &Builder, t: u32| b.tensors[t as usize].len();
    let producer = |b: &Builder, t: u32| b.ops[..k].iter().rposition(|op| op.io().1.contains(&t));
    // The ops between, found from mid2 back to the first transpose's output.
    // The ops between, and the NHWC → NCHW transposes feeding them: (index, source).
    let (mut region, mut entries): (Vec<usize>, Vec<(usize, u32)>) = (vec![], vec![]);
    let mut todo = vec![mid2];
    let mut seen: Vec<u32> = vec![];
    while let Some(t) = todo.pop() {
        if seen.contains(&t) {
            continue;
        }
        seen.push(t);
        let j = producer(b, t)?;
        let ins: Vec<u32> = match b.ops[j] {
            Op::TransposeF32 {
                x,
                dims: d1,
                perm: [0, 2, 1, 3],
                ..
            } if d1 == [n as u32, hw as u32, c as u32, 1] => {
                if !entries.iter().any(|e| e.0 == j) {
                    entries.push((j, x));
                }
                continue;
            }
            Op::UnaryF32 { x, y, .. } | Op::ClampF32 { x, y, .. } if len(b, x) == len(b, y) => {
                vec![x]
            }
            Op::ChainF32 { a, .. } if super::chains::pointwise(b, &b.ops[j]) => vec![a],
            Op::BinF32 {
                a,
                b: rhs,
                dims,
                sa,
                sb,
                ..
            } => {
                let d = dims.map(|v| v as usize);
                if d[0] != n || d[1] != c || d[2] * d[3] != hw {
                    return None;
                }
                // A tensor repeated over the map's pixels (a squeeze-and-excitation
                // block's channel scales) is read from outside, as a constant is.
                [(a, sa), (rhs, sb)]
                    .iter()
                    .filter(|(_, st)| !per_channel(st))
                    .filter_map(|(s, _)| s.tensor())
                    .collect()
            }
            _ => return None,
        };
        if !region.contains(&j) {
            region.push(j);
        }
        if region.len() > MAX_REGION {
            return None;
        }
        todo.extend(ins);
    }
    // A transpose straight into its inverse is the importer's to avoid: nothing to run.
    if region.is_empty() || entries.is_empty() {
        return None;
    }
    // Each entry's NCHW output and NHWC source.
    let mids: Vec<(u32, u32)> = entries
        .iter()
        .filter_map(|&(i, src)| match b.ops[i] {
            Op::TransposeF32 { y, .. } => Some((y, src)),
            _ => None,
        })
        .collect();
    let src_of = |t: u32| mids.iter().find(|m| m.0 == t).map(|m| m.1);
    // Every value between (the entries' outputs included) read by the region alone (mid2
    // by the second transpose alone), none pinned; every tensor a BinF32 reads is such a
    // value, whole.
    let values: Vec<u32> = region
        .iter()
        .flat_map(|&j| b.ops[j].io().1)
        .chain(mids.iter().map(|m| m.0))
        .collect();
    let pinned = |t: &u32| pin_start.contains(t) || pin_end.contains(t);
    // Values also read outside the region (a residual path's NCHW input): an entry's
    // output keeps its transpose; an op's result is transposed back to NCHW for them. A
    // sum or max over each channel's pixels (a global pool) reads the NHWC map instead,
    // in the same order (the executor reduces strided positions as it reduces runs).
    let mut escapes: Vec<(u32, Vec<usize>)> = vec![];
    let mut pools: Vec<(usize, u32)> = vec![];
    for &t in &values {
        let inside = |r: &usize| region.contains(r) || (t == mid2 && *r == k);
        let (reds, outside): (Vec<usize>, Vec<usize>) = (0..b.ops.len())
            .filter(|&r| b.ops[r].io().0.contains(&t) && !inside(&r))
            .partition(|&r| match b.ops[r] {
                Op::SumF32 {
                    outer, len, inner, ..
                }
                | Op::MaxF32 {
                    outer, len, inner, ..
                } => (outer, len, inner) == ((n * c) as u32, hw as u32, 1),
                _ => false,
            });
        if pinned(&t) || len(b, t) != n * c * hw {
            return None;
        }
        pools.extend(reds.into_iter().map(|r| (r, t)));
        if !outside.is_empty() && src_of(t).is_none() {
            escapes.push((t, outside));
        }
    }
    let dense = [(c * hw) as u32, hw as u32, 0, 1];
    for &j in &region {
        if let Op::BinF32 {
            a,
            b: rhs,
            dims,
            sa,
            sb,
            ..
        } = b.ops[j]
        {
            for (s, st) in [(a, sa), (rhs, sb)] {
                if let Some(t) = s.tensor().filter(|_| !per_channel(&st)) {
                    let want = [dense[0], dense[1], dims[3], 1];
                    if !values.contains(&t) || st != want {
                        return None;
                    }
                }
            }
        }
    }
    // The rewrite: the ops read the NHWC source, a BinF32 runs over [N, H, W, C] with its
    // constants' strides permuted alike, the last op writes the second transpose's output.
    let nhwc_shape = b.tensors[mids[0].1 as usize].shape.clone();
    for &j in &region {
        let op = &mut b.ops[j];
        match op {
            Op::UnaryF32 { x, .. } | Op::ClampF32 { x, .. } | Op::ChainF32 { a: x, .. } => {
                if let Some(src) = src_of(*x) {
                    *x = src;
                }
            }
            Op::BinF32 {
                a,
                b: rhs,
                dims,
                sa,
                sb,
                ..
            } => {
                let d = *dims;
                *dims = [d[0], d[2], d[3], d[1]];
                let whole = [d[2] * d[3] * d[1], d[3] * d[1], d[1], 1];
                for (s, st) in [(a, sa), (rhs, sb)] {
                    match s {
                        Src::T(_) if per_channel(st) => *st = [st[0], st[2], st[3], st[1]],
                        Src::T(t) => {
                            if let Some(src) = src_of(*t) {
                                *t = src;
                            }
                            *st = whole;
                        }
                        Src::C(_) => *st = [st[0], st[2], st[3], st[1]],
                    }
                }
            }
            _ => {}
        }
        for &t in op.io().1.iter() {
            if t == mid2 {
                continue;
            }
            b.tensors[t as usize].shape = nhwc_shape.clone();
        }
    }
    for &j in &region {
        let op = &mut b.ops[j];
        match op {
            Op::UnaryF32 { y, .. }
            | Op::ClampF32 { y, .. }
            | Op::ChainF32 { y, .. }
            | Op::BinF32 { y, .. }
                if *y == mid2 =>
            {
                *y = out;
            }
            _ => {}
        }
    }
    // The pools over each channel read the NHWC map holding their value.
    for (r, t) in pools {
        let nhwc = if t == mid2 {
            out
        } else {
            src_of(t).unwrap_or(t)
        };
        if let Op::SumF32 {
            x,
            outer,
            len,
            inner,
            ..
        }
        | Op::MaxF32 {
            x,
            outer,
            len,
            inner,
            ..
        } = &mut b.ops[r]
        {
            (*x, *outer, *len, *inner) = (nhwc, n as u32, hw as u32, c as u32);
        }
    }
    // The escaping values' other readers read an NCHW copy (mid2's readers, mid2 itself:
    // its data is now `out`, and the copy's transpose writes mid2).
    let nchw_shape = b.tensors[mid2 as usize].shape.clone();
    let mut backs: Vec<(u32, u32)> = vec![];
    for (t, readers) in escapes {
        if t == mid2 {
            backs.push((out, mid2));
            continue;
        }
        let name = format!("{}#nchw", b.tensors[t as usize].name);
        let to = b.tensor(&name, DType::F32, nchw_shape.clone(), false, None);
        for r in readers {
            b.ops[r].rename_reads(t, to);
        }
        backs.push((t, to));
    }
    // Entries whose NCHW output nothing reads any more go, and so does the exit.
    let mut gone: Vec<usize> = mids
        .iter()
        .zip(&entries)
        .filter(|(m, _)| !b.ops.iter().any(|op| op.io().0.contains(&m.0)))
        .map(|(_, e)| e.0)
        .chain([k])
        .collect();
    gone.sort_unstable();
    for &g in gone.iter().rev() {
        b.ops.remove(g);
    }
    // Each copy right after its value's producer.
    for (from, to) in backs {
        let Some(at) = b.ops.iter().rposition(|op| op.io().1.contains(&from)) else {
            continue;
        };
        b.ops.insert(
            at + 1,
            Op::TransposeF32 {
                x: from,
                y: to,
                dims: [n as u32, hw as u32, c as u32, 1],
                perm: [0, 2, 1, 3],
            },
        );
    }
    Some(gone[0])
}

/// A table applied to a table's output, where nothing else reads the middle tensor, is
/// one table: `t2[t1[x]]` (e.g. LeakyReLU then the clamp `Max(x, -0.4)`).
pub(super) fn fuse_luts(b: &mut Builder, pin_start: &[u32], pin_end: &[u32]) {
    let mut j = 0;
    while j < b.ops.len() {
        let Op::LutU8 {
            x: mid,
            y,
            channels: c2,
            table: t2,
        } = b.ops[j]
        else {
            j += 1;
            continue;
        };
        let producer = b.ops[..j].iter().rposition(|op| op.io().1.contains(&mid));
        let readers = b.ops.iter().filter(|op| op.io().0.contains(&mid)).count();
        let pinned = pin_start.contains(&mid) || pin_end.contains(&mid);
        let fusable = match producer.map(|i| &b.ops[i]) {
            Some(&Op::LutU8 { channels: c1, .. }) => {
                readers == 1 && !pinned && (c1 == c2 || c1 == 1 || c2 == 1)
            }
            _ => false,
        };
        if !fusable {
            j += 1;
            continue;
        }
        let i = producer.unwrap_or(j);
        let Op::LutU8 {
            x,
            channels: c1,
            table: t1,
            ..
        } = b.ops[i]
        else {
            unreachable!("checked above")
        };
        let c = c1.max(c2) as usize;
        let (a, z) = (
            b.blob[t1.off as usize..][..t1.len as usize].to_vec(),
            b.blob[t2.off as usize..][..t2.len as usize].to_vec(),
        );
        let table: Vec<u8> = (0..c * 256)
            .map(|k| {
                let (ch, v) = (k / 256, k % 256);
                let m = a[(ch % c1 as usize) * 256 + v] as usize;
                z[(ch % c2 as usize) * 256 + m]
            })
            .collect();
        let table = b.push(&table);
        b.ops[j] = Op::LutU8 {
            x,
            y,
            channels: c as u32,
            table,
        };
        b.ops.remove(i);
        // The op now at j-1 may fuse with its own producer: look again from there.
        j = j.saturating_sub(1);
    }
}
