//! Quantisation: QuantizeLinear / DequantizeLinear pairs (QDQ) around the int8 kernels,
//! the dynamic quantisation of transformer MatMuls (DynamicQuantizeLinear → MatMulInteger
//! → Mul by the scales) and the rewrite of the QOperator ops into QDQ form.

use super::lower::Lowering;
use super::value::{attr_i, malformed, tensor_const, Data, Mapped, Val};
use crate::error::{Error, Result};
use crate::plan::{DType, Op, Q8};
use tract_onnx::pb;

/// Constant weights become a dequantised constant (per-tensor or per-channel on axis 0);
/// a u8 tensor becomes its dequantised view.
pub(super) fn dequantize_linear(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    match lw.val(n, 0)?.clone() {
        Val::Const(c) => {
            let scale = lw
                .constant(n, 1)?
                .f32s()
                .ok_or_else(|| lw.unsupported(n, "scale must be f32"))?;
            let zero = if n.input.len() > 2 && !n.input[2].is_empty() {
                lw.constant(n, 2)?.ints()
            } else {
                vec![0; scale.len()]
            };
            if scale.iter().any(|s| !s.is_finite()) {
                return Err(Error::NonFinite {
                    what: format!("scale of '{}'", n.name),
                });
            }
            let rank = c.dims.len() as i64;
            let axis = attr_i(n, "axis", 1);
            let axis = if axis < 0 { axis + rank } else { axis };
            if scale.len() > 1 && !(0..rank).contains(&axis) {
                return Err(lw.unsupported(n, "per-channel axis outside the tensor"));
            }
            let axis = axis.max(0) as usize;
            if scale.len() > 1 && c.dims.get(axis) != Some(&scale.len()) {
                return Err(lw.unsupported(
                    n,
                    "per-channel scales differ in number from the quantised axis",
                ));
            }
            if zero.len() != scale.len() && zero.len() != 1 {
                return Err(lw.unsupported(n, "zero points differ in number from the scales"));
            }
            lw.vals.insert(
                n.output[0].clone(),
                Val::QConst {
                    dims: c.dims.clone(),
                    q: c.ints(),
                    scale,
                    zero,
                    axis,
                },
            );
        }
        Val::Act(t) => {
            let q = lw.q8_of(n)?;
            let ti = &lw.b.tensors[t as usize];
            if ti.dtype != DType::U8 || ti.scale != q.scale || ti.zero != q.zero {
                return Err(lw.unsupported(
                    n,
                    "dequantises with parameters other than its QuantizeLinear",
                ));
            }
            lw.vals.insert(n.output[0].clone(), Val::Deq(t));
        }
        Val::Padded {
            t,
            pads,
            deq: false,
        } => {
            let q = lw.q8_of(n)?;
            let ti = &lw.b.tensors[t as usize];
            if ti.scale != q.scale || ti.zero != q.zero {
                return Err(lw.unsupported(
                    n,
                    "dequantises with parameters other than its QuantizeLinear",
                ));
            }
            lw.vals
                .insert(n.output[0].clone(), Val::Padded { t, pads, deq: true });
        }
        _ => return Err(lw.unsupported(n, "input must be a constant or a quantised tensor")),
    }
    Ok(())
}

/// Per-tensor u8 quantisation of a float tensor, a requantisation, or the table of the
/// float functions applied since the last dequantisation.
pub(super) fn quantize_linear(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    if lw.skip.contains(&idx) {
        return Ok(());
    }
    let q = lw.q8_of(n)?;
    match lw.val(n, 0)?.clone() {
        Val::Act(t) if lw.b.tensors[t as usize].dtype == DType::F32 => {
            let ti = lw.b.tensors[t as usize].clone();
            let s = ti.shape.clone();
            let (shape, nhwc) = if s.len() == 4 {
                (vec![s[0], s[2], s[3], s[1]], true)
            } else {
                (s, false)
            };
            let y = lw.b.tensor(&n.output[0], DType::U8, shape, nhwc, Some(q));
            lw.b.ops.push(Op::Quantize {
                x: t,
                y,
                q,
                to_nhwc: nhwc,
            });
            lw.vals.insert(n.output[0].clone(), Val::Act(y));
        }
        Val::Deq(t) => {
            let ti = &lw.b.tensors[t as usize];
            if ti.scale != q.scale || ti.zero != q.zero {
                let m = lw.mapped(n, 0)?;
                lw.lut(n, m, q)?;
            } else {
                lw.vals.insert(n.output[0].clone(), Val::Act(t));
            }
        }
        Val::Mapped(m) => lw.lut(n, m, q)?,
        // A constant (folded arithmetic): its codes, a constant too.
        Val::Const(c) if c.f32s().is_some() => {
            let v = c.f32s().unwrap_or_default();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    what: format!("constant quantised by '{}'", n.name),
                });
            }
            let codes: Vec<u8> = v
                .iter()
                .map(|&x| edgetune_kernels::quant::requant(x / q.scale, q.zero, 0, 255) as u8)
                .collect();
            lw.vals.insert(
                n.output[0].clone(),
                Val::Const(super::value::Const {
                    dims: c.dims.clone(),
                    data: Data::U8(codes),
                }),
            );
        }
        Val::Padded {
            t,
            pads,
            deq: false,
        } if lw.b.tensors[t as usize].dtype == DType::F32 && !lw.b.tensors[t as usize].nhwc => {
            // A float map padded with zeros: quantised first, the padding still pending
            // (0.0 quantises to the zero point, the value a convolution pads with).
            let s = lw.b.tensors[t as usize].shape.clone();
            let y = lw.b.tensor(
                &n.output[0],
                DType::U8,
                vec![s[0], s[2], s[3], s[1]],
                true,
                Some(q),
            );
            lw.b.ops.push(Op::Quantize {
                x: t,
                y,
                q,
                to_nhwc: true,
            });
            lw.vals.insert(
                n.output[0].clone(),
                Val::Padded {
                    t: y,
                    pads,
                    deq: false,
                },
            );
        }
        Val::Padded { t, pads, deq: true } => {
            let ti = &lw.b.tensors[t as usize];
            if ti.scale != q.scale || ti.zero != q.zero {
                return Err(lw.unsupported(n, "requantises a padded map"));
            }
            lw.vals.insert(
                n.output[0].clone(),
                Val::Padded {
                    t,
                    pads,
                    deq: false,
                },
            );
        }
        _ => return Err(lw.unsupported(n, "input must be a float tensor")),
    }
    Ok(())
}

/// False when the input is not a row-major f32 tensor.
fn dynamic_quantize_float(lw: &mut Lowering<'_>, idx: usize) -> Result<bool> {
    let n = &lw.graph.node[idx];
    let x0 = lw.fact(n, 0);
    let Some(x) = x0 else { return Ok(false) };
    let o = &n.output;
    if o.len() != 3 {
        return Err(lw.unsupported(n, "needs its three outputs"));
    }
    lw.vals.insert(o[0].clone(), Val::DynQ(x));
    lw.vals.insert(o[1].clone(), Val::DynScale(x));
    lw.vals.insert(o[2].clone(), Val::DynZero(x));
    Ok(true)
}

/// Marks a float tensor as dynamically quantised; MatMulInteger and Mul complete it.
pub(super) fn dynamic_quantize_linear(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if dynamic_quantize_float(lw, idx)? {
        Ok(())
    } else {
        Err(lw.no_form(idx))
    }
}

/// Dynamic codes by constant symmetric int8 weights; the Mul by the scales lowers it.
pub(super) fn matmul_integer(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let t = match (lw.val(n, 0)?, n.input.get(2).map(|s| lw.vals.get(s))) {
        (Val::DynQ(t), Some(Some(Val::DynZero(z)))) if t == z => *t,
        _ => {
            return Err(lw.unsupported(
                n,
                "A must be DynamicQuantizeLinear's codes with its zero point",
            ))
        }
    };
    let w = lw.constant(n, 1)?;
    if w.dims.len() != 2 || !matches!(w.data, Data::I8(_)) {
        return Err(lw.unsupported(n, "B must be constant int8 [K, N]"));
    }
    let wz = if n.input.len() > 3 && !n.input[3].is_empty() {
        lw.constant(n, 3)?.ints()
    } else {
        vec![0]
    };
    if wz.iter().any(|&z| z != 0) {
        return Err(lw.unsupported(n, "weights must be symmetric (zero point 0)"));
    }
    let (k, nn) = (w.dims[0], w.dims[1]);
    if lw.fshape(t).last() != Some(&k) {
        return Err(lw.unsupported(n, "inner dimensions differ"));
    }
    lw.vals.insert(
        n.output[0].clone(),
        Val::IntMM {
            t,
            k,
            n: nn,
            w: w.ints(),
        },
    );
    Ok(())
}

/// QOperator form → QDQ form: each `QLinearConv` becomes DequantizeLinear (input,
/// weights, bias) → Conv → QuantizeLinear and each `QLinearMatMul` DequantizeLinear → MatMul
/// → QuantizeLinear, so both lower through the same int8 kernels as QDQ models. The bias
/// scale (`x_scale · w_scale[c]`) is computed here, so scales must be initializers.
///
/// Registered for both ops; `g` is the rewritten graph being built from `src`.
pub(super) fn qlinear(
    src: &pb::GraphProto,
    n: &pb::NodeProto,
    g: &mut pb::GraphProto,
) -> Result<()> {
    let init = |name: &str| src.initializer.iter().find(|t| t.name == name);
    let node = |op: &str, name: String, input: Vec<String>, output: String| pb::NodeProto {
        input,
        output: vec![output],
        name,
        op_type: op.into(),
        ..Default::default()
    };
    let unsupported = |n: &pb::NodeProto, why: &str| Error::UnsupportedOp {
        op: n.op_type.clone(),
        node: n.name.clone(),
        inputs: vec![],
        why: why.into(),
    };
    let conv = n.op_type == "QLinearConv";
    if n.input.len() < 8 || n.output.len() != 1 {
        return Err(malformed(format!(
            "{} '{}' needs 8 inputs and one output",
            n.op_type, n.name
        )));
    }
    let i = |k: usize| n.input[k].clone();
    let p = format!("{}#qlinear", n.output[0]);
    let dq_x = node(
        "DequantizeLinear",
        format!("{p}/x"),
        vec![i(0), i(1), i(2)],
        format!("{p}/x"),
    );
    let mut dq_w = node(
        "DequantizeLinear",
        format!("{p}/w"),
        vec![i(3), i(4), i(5)],
        format!("{p}/w"),
    );
    // Per-channel weights: QLinearConv's on the output axis 0, QLinearMatMul's on B's
    // last axis (the columns).
    dq_w.attribute.push(pb::AttributeProto {
        name: "axis".into(),
        i: if conv { 0 } else { -1 },
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    });
    let mut core_in = vec![format!("{p}/x"), format!("{p}/w")];
    let mut extra = vec![];
    if conv && n.input.len() > 8 && !n.input[8].is_empty() {
        let scalar = |name: &str| -> Result<Vec<f32>> {
            let t = init(name).ok_or_else(|| unsupported(n, "scales must be initializers"))?;
            tensor_const(t)?
                .f32s()
                .ok_or_else(|| unsupported(n, "scales must be f32"))
        };
        let (xs, ws) = (scalar(&n.input[1])?, scalar(&n.input[4])?);
        if xs.len() != 1 || ws.is_empty() {
            return Err(unsupported(n, "input scale must be per-tensor"));
        }
        let bs: Vec<u8> = ws.iter().flat_map(|w| (xs[0] * w).to_le_bytes()).collect();
        g.initializer.push(pb::TensorProto {
            name: format!("{p}/bias_scale"),
            dims: vec![ws.len() as i64],
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: bs,
            ..Default::default()
        });
        let mut dq_b = node(
            "DequantizeLinear",
            format!("{p}/b"),
            vec![i(8), format!("{p}/bias_scale")],
            format!("{p}/b"),
        );
        dq_b.attribute = dq_w.attribute.clone();
        extra.push(dq_b);
        core_in.push(format!("{p}/b"));
    }
    let mut core = node(
        if conv { "Conv" } else { "MatMul" },
        n.name.clone(),
        core_in,
        format!("{p}/y"),
    );
    if conv {
        core.attribute = n.attribute.clone();
    }
    let q = node(
        "QuantizeLinear",
        format!("{p}/q"),
        vec![format!("{p}/y"), i(6), i(7)],
        n.output[0].clone(),
    );
    g.node.extend([dq_x, dq_w]);
    g.node.extend(extra);
    g.node.extend([core, q]);
    Ok(())
}

impl Lowering<'_> {
    /// QuantizeLinear of a table-mapped tensor: one `LutU8`.
    fn lut(&mut self, n: &pb::NodeProto, m: Mapped, q: Q8) -> Result<()> {
        let ti = self.b.tensors[m.t as usize].clone();
        if m.channels > 1
            && !((ti.nhwc || ti.shape.len() == 2) && ti.shape.last() == Some(&m.channels))
        {
            return Err(self.unsupported(n, "per-channel table over a non-NHWC tensor"));
        }
        if m.table.iter().any(|v| v.is_nan()) {
            return Err(Error::NonFinite {
                what: format!("values quantised by '{}'", n.name),
            });
        }
        let codes: Vec<u8> = m
            .table
            .iter()
            .map(|&v| edgetune_kernels::quant::requant(v / q.scale, q.zero, 0, 255) as u8)
            .collect();
        let y = self
            .b
            .tensor(&n.output[0], DType::U8, ti.shape.clone(), ti.nhwc, Some(q));
        let table = self.b.push(&codes);
        self.b.ops.push(Op::LutU8 {
            x: m.t,
            y,
            channels: m.channels as u32,
            table,
        });
        self.vals.insert(n.output[0].clone(), Val::Act(y));
        self.produced.insert(n.input[0].clone(), y);
        Ok(())
    }

    pub(super) fn dyn_matmul(
        &mut self,
        n: &pb::NodeProto,
        t: u32,
        k: usize,
        nn: usize,
        w: &[i64],
        ws: &[f32],
    ) -> Result<()> {
        let shape = self.fshape(t);
        let m: usize = shape[..shape.len() - 1].iter().product();
        let (wp, colsum) = self.b.push_packed_i8(k, nn, |kk, c| w[kk * nn + c] as i8);
        if ws.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("weight scales of '{}'", n.name),
            });
        }
        let wscale = self.b.push(ws);
        let mut out = shape.clone();
        *out.last_mut().expect("rank checked by MatMulInteger") = nn;
        let y = self.new_f32(&n.output[0], out);
        let scratch_len = (m * k).div_ceil(4) * 4 + 4 * nn;
        let scratch = self.b.tensor(
            &format!("{}#dynq", n.name),
            DType::U8,
            vec![scratch_len],
            false,
            None,
        );
        self.b.ops.push(Op::MatMulDynI8 {
            x: t,
            y,
            scratch,
            m: m as u32,
            k: k as u32,
            n: nn as u32,
            w: wp,
            colsum,
            wscale,
        });
        self.out_f32(n, y);
        Ok(())
    }
}

/// onnxruntime's QOperator contrib ops (domain `com.microsoft`) → QDQ form: each
/// quantised input becomes a DequantizeLinear, the op its float ONNX counterpart, and the
/// output a QuantizeLinear with the op's output parameters, so they lower as QDQ models
/// do. `QGemm` without an output scale keeps a float output; its int32 bias is
/// dequantised with `a_scale · b_scale`, so those scales must be initializers.
pub(super) fn qlinear_ms(
    src: &pb::GraphProto,
    n: &pb::NodeProto,
    g: &mut pb::GraphProto,
) -> Result<()> {
    let p = format!("{}#{}", n.output[0], n.op_type);
    let inp = |k: usize| n.input.get(k).cloned().unwrap_or_default();
    let need = |count: usize| -> Result<()> {
        if n.input.len() < count || n.output.len() != 1 {
            Err(malformed(format!(
                "{} '{}' needs {count} inputs and one output",
                n.op_type, n.name
            )))
        } else {
            Ok(())
        }
    };
    let int_attr = |name: &str, i: i64| pb::AttributeProto {
        name: name.into(),
        i,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    };
    let mut nodes = vec![];
    let mut dq = |x: String, s: String, z: String, tag: &str, axis: Option<i64>| {
        let y = format!("{p}/{tag}");
        let mut d = pb::NodeProto {
            input: if z.is_empty() {
                vec![x, s]
            } else {
                vec![x, s, z]
            },
            output: vec![y.clone()],
            name: y.clone(),
            op_type: "DequantizeLinear".into(),
            ..Default::default()
        };
        if let Some(a) = axis {
            d.attribute.push(int_attr("axis", a));
        }
        nodes.push(d);
        y
    };
    // (float op, its inputs, the output's scale and zero point, attributes kept)
    let (op, core_in, out_q, attrs): (
        &str,
        Vec<String>,
        Option<(String, String)>,
        Vec<pb::AttributeProto>,
    ) = match n.op_type.as_str() {
        "QLinearAdd" | "QLinearMul" => {
            need(7)?;
            let a = dq(inp(0), inp(1), inp(2), "a", None);
            let b = dq(inp(3), inp(4), inp(5), "b", None);
            (&n.op_type[7..], vec![a, b], Some((inp(6), inp(7))), vec![])
        }
        "QLinearSigmoid"
        | "QLinearLeakyRelu"
        | "QLinearGlobalAveragePool"
        | "QLinearAveragePool"
        | "QLinearSoftmax" => {
            need(4)?;
            if n.attribute
                .iter()
                .any(|a| a.name == "channels_last" && a.i != 0)
            {
                return Err(Error::UnsupportedOp {
                    op: n.op_type.clone(),
                    node: n.name.clone(),
                    inputs: vec![],
                    why: "channels_last".into(),
                });
            }
            let x = dq(inp(0), inp(1), inp(2), "x", None);
            let attrs = n
                .attribute
                .iter()
                .filter(|a| a.name != "channels_last" && a.name != "opset")
                .cloned()
                .collect();
            (&n.op_type[7..], vec![x], Some((inp(3), inp(4))), attrs)
        }
        "QLinearConcat" => {
            need(5)?;
            if !(n.input.len() - 2).is_multiple_of(3) {
                return Err(malformed(format!(
                    "QLinearConcat '{}' needs (tensor, scale, zero point) triples",
                    n.name
                )));
            }
            let xs = (0..(n.input.len() - 2) / 3)
                .map(|j| {
                    let k = 2 + 3 * j;
                    dq(inp(k), inp(k + 1), inp(k + 2), &format!("x{j}"), None)
                })
                .collect();
            ("Concat", xs, Some((inp(0), inp(1))), n.attribute.clone())
        }
        "QGemm" => {
            need(6)?;
            let trans_b = n
                .attribute
                .iter()
                .find(|a| a.name == "transB")
                .is_some_and(|a| a.i == 1);
            let a = dq(inp(0), inp(1), inp(2), "a", None);
            let b = dq(
                inp(3),
                inp(4),
                inp(5),
                "b",
                Some(if trans_b { 0 } else { 1 }),
            );
            let mut core_in = vec![a, b];
            if !inp(6).is_empty() {
                let init = |name: &str| -> Result<Vec<f32>> {
                    let t = src
                        .initializer
                        .iter()
                        .find(|t| t.name == name)
                        .ok_or_else(|| Error::UnsupportedOp {
                            op: n.op_type.clone(),
                            node: n.name.clone(),
                            inputs: vec![],
                            why: "scales must be initializers".into(),
                        })?;
                    tensor_const(t)?
                        .f32s()
                        .ok_or_else(|| malformed("QGemm scales must be f32"))
                };
                let (sa, sb) = (init(&inp(1))?, init(&inp(4))?);
                if sa.len() != 1 {
                    return Err(malformed("QGemm: a_scale must be per-tensor"));
                }
                let bs: Vec<u8> = sb.iter().flat_map(|w| (sa[0] * w).to_le_bytes()).collect();
                g.initializer.push(pb::TensorProto {
                    name: format!("{p}/bias_scale"),
                    dims: vec![sb.len() as i64],
                    data_type: pb::tensor_proto::DataType::Float as i32,
                    raw_data: bs,
                    ..Default::default()
                });
                core_in.push(dq(
                    inp(6),
                    format!("{p}/bias_scale"),
                    String::new(),
                    "c",
                    Some(0),
                ));
            }
            let out_q = (!inp(7).is_empty()).then(|| (inp(7), inp(8)));
            let attrs = n
                .attribute
                .iter()
                .filter(|a| a.name == "transA" || a.name == "transB" || a.name == "alpha")
                .cloned()
                .collect();
            ("Gemm", core_in, out_q, attrs)
        }
        other => {
            return Err(Error::UnsupportedOp {
                op: other.into(),
                node: n.name.clone(),
                inputs: vec![],
                why: "domain com.microsoft".into(),
            })
        }
    };
    let core_out = if out_q.is_some() {
        format!("{p}/y")
    } else {
        n.output[0].clone()
    };
    nodes.push(pb::NodeProto {
        input: core_in,
        output: vec![core_out.clone()],
        name: n.name.clone(),
        op_type: op.into(),
        attribute: attrs,
        ..Default::default()
    });
    if let Some((s, z)) = out_q {
        nodes.push(pb::NodeProto {
            input: if z.is_empty() {
                vec![core_out, s]
            } else {
                vec![core_out, s, z]
            },
            output: vec![n.output[0].clone()],
            name: format!("{p}/q"),
            op_type: "QuantizeLinear".into(),
            ..Default::default()
        });
    }
    g.node.extend(nodes);
    Ok(())
}
