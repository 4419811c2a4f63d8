//! Matrix products: Gemm in QDQ form on the int8 GEMM (as a 1×1 convolution), MatMul of
//! float tensors on the f32 GEMM.

use super::lower::Lowering;
use super::value::{attr, attr_i};
use crate::error::{Error, Result};
use crate::plan::{DType, Op};
use edgetune_kernels::reference::ConvGeom;

/// Gemm of a u8 `[1, K]` tensor by constant int8 weights, as a 1×1 convolution.
pub(super) fn gemm(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    if let Some(a) = lw.fact(n, 0) {
        return gemm_float(lw, idx, a);
    }
    let x = lw.deq(n, 0)?;
    let xi = lw.b.tensors[x as usize].clone();
    let trans_b = attr_i(n, "transB", 0) == 1;
    // Per-channel weights are quantised along the output axis: 0 of [N, K], 1 of [K, N].
    let (mut wd, mut wq, ws, wz) = lw.qconst_axis(n, 1, if trans_b { 0 } else { 1 })?;
    if attr_i(n, "transA", 0) != 0
        || attr(n, "alpha").is_some_and(|a| a.f != 1.0)
        || attr(n, "beta").is_some_and(|a| a.f != 1.0)
    {
        return Err(lw.unsupported(n, "transA, alpha and beta other than defaults"));
    }
    if wd.len() != 2 || wz.iter().any(|&z| z != 0) {
        return Err(lw.unsupported(n, "weights must be symmetric int8 2-D"));
    }
    if !trans_b {
        // [K, N] → [N, K]: the layout the bias check and the packing read.
        let (kk, nn) = (wd[0], wd[1]);
        wq = (0..nn * kk).map(|j| wq[(j % kk) * nn + j / kk]).collect();
        wd = vec![nn, kk];
    }
    let (nn, kk) = (wd[0], wd[1]);
    let k = kk;
    // One row (a pooled vector, any layout), or rows of a row-major tensor whose last axis
    // is K (tokens by channels): each row is a pixel of a 1x1 convolution.
    // A batch of pooled maps ([N, 1, 1, K] NHWC, flattened or not) is N rows too.
    let pooled_batch = xi.nhwc && xi.shape.len() == 4 && xi.shape[1] * xi.shape[2] == 1;
    let rows = if xi.len() == kk {
        1
    } else if (pooled_batch || !xi.nhwc) && kk > 0 && xi.shape.last() == Some(&kk) {
        xi.len() / kk
    } else {
        return Err(Error::ShapeMismatch {
            op: format!("Gemm '{}'", n.name),
            expected: vec![1, kk],
            got: xi.logical_shape(),
        });
    };
    let out_shape = if rows == 1 {
        vec![1, nn]
    } else if pooled_batch {
        vec![rows, nn]
    } else {
        let mut s = xi.logical_shape();
        if let Some(l) = s.last_mut() {
            *l = nn;
        }
        s
    };
    let (bias, scale) = lw.bias_scale(n, 2, nn, xi.scale, &ws, &mut wq, k)?;
    let (qi, qy) = lw.fused_q(n)?;
    let scale: Vec<f32> = scale.iter().map(|s| s / qy.scale).collect();
    let (w, colsum) = lw.b.push_packed_i8(k, nn, |r, c| wq[c * k + r] as i8);
    let y =
        lw.b.tensor(&n.output[0], DType::U8, out_shape, false, Some(qy));
    let geom = ConvGeom::pointwise(1, rows, k, nn);
    let (bias, scale) = (lw.b.push(&bias), lw.b.push(&scale));
    lw.b.ops.push(Op::ConvI8 {
        x,
        y,
        scratch: None,
        geom,
        x_zero: xi.zero,
        y_zero: qy.zero,
        w,
        colsum,
        bias,
        scale,
    });
    lw.set_out(qi, y, &n.output[0]);
    Ok(())
}

/// The float form; false unless both operands are row-major f32 tensors.
fn matmul_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let x0 = lw.fact(n, 0);
    let Some(a) = x0 else { return Ok(false) };
    let Some(b) = lw.fact(n, 1) else {
        return matmul_float_by_constant(lw, idx, a);
    };
    let (sa, sb) = (lw.fshape(a), lw.fshape(b));
    if sa.len() < 2 || sa.len() != sb.len() || sa[..sa.len() - 2] != sb[..sb.len() - 2] {
        return Err(lw.unsupported(n, "batched operands of the same batch shape"));
    }
    let r = sa.len();
    let (m, k, nn) = (sa[r - 2], sa[r - 1], sb[r - 1]);
    if sb[r - 2] != k {
        return Err(lw.unsupported(n, "inner dimensions differ"));
    }
    let batch: usize = sa[..r - 2].iter().product();
    let mut out = sa.clone();
    out[r - 1] = nn;
    let y = lw.new_f32(&n.output[0], out);
    let packed = edgetune_kernels::pack::packed_f32_len(k, nn);
    let scratch = lw.new_f32(&format!("{}#packed", n.name), vec![packed]);
    lw.b.ops.push(Op::MatMulF32 {
        a,
        b,
        y,
        scratch,
        batch: batch as u32,
        m: m as u32,
        k: k as u32,
        n: nn as u32,
    });
    lw.out_f32(n, y);
    Ok(true)
}

/// A float `[..., M, K]` tensor by constant `[K, N]` weights (plain or dequantised): every
/// row through the f32 GEMM with the weights packed at compile time (a 1×1 convolution).
fn matmul_float_by_constant(lw: &mut Lowering<'_>, idx: usize, a: u32) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let Some(wd) = lw.shape_of(n.input.get(1).map_or("", |s| s.as_str())) else {
        return Ok(false);
    };
    let Ok(w) = lw.floats(n, 1) else {
        return Ok(false);
    };
    let sa = lw.fshape(a);
    if wd.len() != 2 || sa.is_empty() || sa[sa.len() - 1] != wd[0] {
        return Err(lw.unsupported(
            n,
            "constant weights must be [K, N] with K the input's last axis",
        ));
    }
    let (k, nn) = (wd[0], wd[1]);
    let mut out = sa.clone();
    *out.last_mut().unwrap_or(&mut 0) = nn;
    let y = lw.new_f32(&n.output[0], out);
    dense_f32(lw, a, y, k, nn, &w, &[]);
    lw.out_f32(&lw.graph.node[idx], y);
    Ok(true)
}

/// `y = a · w + bias` on the f32 GEMM, every row of `a` (last axis `k`) by `w` `[k, n]`
/// packed at compile time (a 1×1 convolution).
fn dense_f32(lw: &mut Lowering<'_>, a: u32, y: u32, k: usize, nn: usize, w: &[f32], bias: &[f32]) {
    let rows = lw.fshape(a).iter().product::<usize>() / k.max(1);
    let mut packed = vec![0f32; edgetune_kernels::pack::packed_f32_len(k, nn)];
    edgetune_kernels::pack::pack_f32(w, k, nn, &mut packed);
    let geom = edgetune_kernels::reference::ConvGeom::pointwise(1, rows, k, nn);
    let (w, bias) = (lw.b.push(&packed), lw.b.push(bias));
    lw.b.ops.push(Op::ConvF32 {
        x: a,
        y,
        scratch: None,
        geom,
        w,
        bias,
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    });
}

/// Gemm of a float `[M, K]` tensor (`[K, M]` with transA) by constant weights: alpha
/// folded into the weights, beta·C into the bias when C is a vector of N (or one value),
/// else added after.
fn gemm_float(lw: &mut Lowering<'_>, idx: usize, a: u32) -> Result<()> {
    let n = &lw.graph.node[idx];
    let sa = lw.fshape(a);
    let wd = lw
        .shape_of(n.input.get(1).map_or("", |s| s.as_str()))
        .ok_or_else(|| lw.unsupported(n, "weights of unknown shape"))?;
    let w = lw
        .floats(n, 1)
        .map_err(|_| lw.unsupported(n, "B must be a constant"))?;
    if sa.len() != 2 || wd.len() != 2 {
        return Err(lw.unsupported(n, "A and B must be 2-D"));
    }
    let (trans_a, trans_b) = (attr_i(n, "transA", 0) == 1, attr_i(n, "transB", 0) == 1);
    let (m, k) = if trans_a {
        (sa[1], sa[0])
    } else {
        (sa[0], sa[1])
    };
    let (kb, nn) = if trans_b {
        (wd[1], wd[0])
    } else {
        (wd[0], wd[1])
    };
    if kb != k {
        return Err(lw.unsupported(n, "inner dimensions differ"));
    }
    let alpha = attr(n, "alpha").map_or(1.0, |a| a.f);
    let beta = attr(n, "beta").map_or(1.0, |a| a.f);
    if !alpha.is_finite() || !beta.is_finite() {
        return Err(Error::NonFinite {
            what: format!("alpha or beta of '{}'", n.name),
        });
    }
    // W as [K, N], times alpha.
    let wkn: Vec<f32> = (0..k * nn)
        .map(|j| {
            let (kk, c) = (j / nn, j % nn);
            alpha
                * if trans_b {
                    w[c * k + kk]
                } else {
                    w[kk * nn + c]
                }
        })
        .collect();
    let x = if trans_a {
        let t = lw.new_f32(&format!("{}#at", n.name), vec![m, k]);
        lw.b.ops.push(Op::TransposeF32 {
            x: a,
            y: t,
            dims: [1, 1, k as u32, m as u32],
            perm: [0, 1, 3, 2],
        });
        t
    } else {
        a
    };
    let n = &lw.graph.node[idx];
    let c = (n.input.len() > 2 && !n.input[2].is_empty()).then(|| n.input[2].clone());
    let cshape = c.as_ref().and_then(|c| lw.shape_of(c));
    let cvals = c.as_ref().and_then(|_| lw.floats(n, 2).ok());
    let vector = match (&cshape, &cvals) {
        (Some(s), Some(v)) if s.iter().product::<usize>() == 1 => Some(vec![beta * v[0]; nn]),
        (Some(s), Some(v)) if s.last() == Some(&nn) && s.iter().product::<usize>() == nn => {
            Some(v.iter().map(|x| beta * x).collect())
        }
        _ => None,
    };
    let y_name = n.output[0].clone();
    match (c, vector) {
        (None, bias) | (Some(_), bias @ Some(_)) => {
            let y = lw.new_f32(&y_name, vec![m, nn]);
            let bias = bias.unwrap_or_default();
            dense_f32(lw, x, y, k, nn, &wkn, &bias);
            lw.out_f32(&lw.graph.node[idx], y);
        }
        (Some(_), None) => {
            // C of another shape (or at run time): beta·C added after the product.
            let p = lw.new_f32(&format!("{y_name}#ab"), vec![m, nn]);
            dense_f32(lw, x, p, k, nn, &wkn, &[]);
            let n = &lw.graph.node[idx];
            let (cs, cshape) = lw.operand(n, 2)?;
            let out = vec![m, nn];
            if super::elementwise::broadcast(&out, &cshape).as_ref() != Some(&out) {
                return Err(lw.unsupported(n, "C does not broadcast to [M, N]"));
            }
            let cs = if beta == 1.0 {
                cs
            } else {
                let Some(v) = cvals else {
                    return Err(lw.unsupported(n, "beta other than 1 with C at run time"));
                };
                let v: Vec<f32> = v.iter().map(|x| beta * x).collect();
                crate::plan::Src::C(lw.b.push(&v))
            };
            let y = lw.new_f32(&y_name, out.clone());
            lw.b.ops.push(Op::BinF32 {
                a: crate::plan::Src::T(p),
                b: cs,
                y,
                f: crate::plan::BinOp::Add,
                dims: super::elementwise::pad4(&out).map(|v| v as u32),
                sa: super::elementwise::strides4(&out, &out),
                sb: super::elementwise::strides4(&cshape, &out),
            });
            lw.out_f32(&lw.graph.node[idx], y);
        }
    }
    Ok(())
}

pub(super) fn matmul(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    use super::value::Val;
    let n = &lw.graph.node[idx];
    let quantised_by_weights = matches!(lw.val(n, 0)?, Val::Deq(_))
        && matches!(lw.val(n, 1)?, Val::QConst { dims, .. } if dims.len() == 2);
    if quantised_by_weights {
        // A u8 row by int8 weights [K, N]: a Gemm with transB = 0 and no bias.
        gemm(lw, idx)
    } else if matmul_float(lw, idx)? {
        Ok(())
    } else {
        Err(lw.no_form(idx))
    }
}
