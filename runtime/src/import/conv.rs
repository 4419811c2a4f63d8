//! Convolutions and pooling on u8 NHWC feature maps in QDQ form: im2col and the int8 GEMM
//! for dense convolutions, the depthwise kernel for depthwise ones, max pooling and global
//! average pooling.

use super::lower::Lowering;
use super::value::{attr, attr_i, attr_ints, Mapped, Val};
use crate::error::Result;
use crate::plan::{DType, Op, Q8};
use edgetune_kernels::reference::ConvGeom;
use edgetune_kernels::winograd as wino;
use tract_onnx::pb;

/// Conv of a u8 feature map by constant int8 weights into its QuantizeLinear: dense
/// (im2col and the int8 GEMM) or depthwise.
pub(super) fn conv(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = lw.graph.node[idx].clone();
    conv_node(lw, &n)
}

/// ConvTranspose of a u8 feature map by constant int8 weights, as the convolution it
/// equals: zeros inserted between the input pixels (`stride - 1` of them), padded by
/// `dilation·(kernel - 1) - pads` (plus `output_padding` at the end), convolved with the
/// weights flipped in space and with input and output channels exchanged.
pub(super) fn conv_transpose(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = lw.graph.node[idx].clone();
    if let Some(x) = lw.fact(&n, 0) {
        return conv_transpose_float(lw, &n, x);
    }
    let x = lw.deq(&n, 0)?;
    let xi = lw.b.tensors[x as usize].clone();
    if xi.shape.len() != 4 || !xi.nhwc {
        return Err(lw.unsupported(&n, "input must be a 4-D feature map"));
    }
    let nb = xi.shape[0];
    let (wd, wq, ws, wz) = lw.qconst_axis(&n, 1, 1)?;
    if wd.len() != 4 {
        return Err(lw.unsupported(&n, "weights must be [C_in, C_out, kH, kW]"));
    }
    let (ci, co, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    let (h, w, c) = (xi.shape[1], xi.shape[2], xi.shape[3]);
    let group = attr_i(&n, "group", 1);
    let auto = attr(&n, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET");
    if group != 1 || auto || attr(&n, "output_shape").is_some() {
        return Err(lw.unsupported(&n, "group, auto_pad or output_shape"));
    }
    if ci != c || h == 0 || w == 0 || kh == 0 || kw == 0 {
        return Err(lw.unsupported(&n, "weights do not match the input, or an empty axis"));
    }
    let strides = attr_ints(&n, "strides").unwrap_or(vec![1, 1]);
    let dil = attr_ints(&n, "dilations").unwrap_or(vec![1, 1]);
    let pads = attr_ints(&n, "pads").unwrap_or(vec![0; 4]);
    let out_pad = attr_ints(&n, "output_padding").unwrap_or(vec![0, 0]);
    let ok = |v: &[i64], len: usize, lo: i64| {
        v.len() == len && v.iter().all(|&a| (lo..=1 << 12).contains(&a))
    };
    if !ok(&strides, 2, 1) || !ok(&dil, 2, 1) || !ok(&pads, 4, 0) || !ok(&out_pad, 2, 0) {
        return Err(lw.unsupported(&n, "transposed convolution attributes"));
    }
    let (sh, sw) = (strides[0] as usize, strides[1] as usize);
    let plain = dil == [1, 1] && pads.iter().chain(&out_pad).all(|&p| p == 0);
    if plain && (sh, sw) == (kh, kw) && kh * kw > 1 && !lw.plain {
        return conv_transpose_subpixel(lw, &n, x, (wd, wq, ws, wz));
    }
    // The equivalent convolution's padding on each side.
    let reach = [dil[0] * (kh as i64 - 1), dil[1] * (kw as i64 - 1)];
    let conv_pads = [
        reach[0] - pads[0],
        reach[1] - pads[1],
        reach[0] - pads[2] + out_pad[0],
        reach[1] - pads[3] + out_pad[1],
    ];
    if conv_pads.iter().any(|&p| p < 0) {
        return Err(lw.unsupported(&n, "pads larger than the kernel's reach"));
    }
    let xin = if sh > 1 || sw > 1 {
        let (dh, dw) = ((h - 1) * sh + 1, (w - 1) * sw + 1);
        let y = lw.b.tensor(
            &format!("{}#dilated", n.name),
            DType::U8,
            vec![nb, dh, dw, c],
            true,
            Some(Q8 {
                scale: xi.scale,
                zero: xi.zero,
            }),
        );
        lw.b.ops.push(Op::Dilate {
            x,
            y,
            h: h as u32,
            w: w as u32,
            c: c as u32,
            sh: sh as u32,
            sw: sw as u32,
            fill: xi.zero as u32,
        });
        y
    } else {
        x
    };
    let x_name = format!("{}#input", n.name);
    lw.vals.insert(
        x_name.clone(),
        Val::Padded {
            t: xin,
            pads: conv_pads.map(|p| p as usize),
            deq: true,
        },
    );
    // [C_in, C_out, kH, kW] → [C_out, C_in, kH, kW], flipped in space.
    let mut q = vec![0i64; wq.len()];
    for i in 0..ci {
        for o in 0..co {
            for y in 0..kh {
                for xx in 0..kw {
                    q[((o * ci + i) * kh + y) * kw + xx] =
                        wq[((i * co + o) * kh + (kh - 1 - y)) * kw + (kw - 1 - xx)];
                }
            }
        }
    }
    let w_name = format!("{}#weights", n.name);
    lw.vals.insert(
        w_name.clone(),
        Val::QConst {
            dims: vec![co, ci, kh, kw],
            q,
            scale: ws,
            zero: wz,
            axis: 0,
        },
    );
    let mut conv = pb::NodeProto {
        op_type: "Conv".into(),
        name: n.name.clone(),
        input: vec![x_name, w_name],
        output: n.output.clone(),
        ..Default::default()
    };
    conv.input.extend(n.input.get(2).cloned());
    conv.attribute.push(pb::AttributeProto {
        name: "dilations".into(),
        ints: dil,
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    });
    conv_node(lw, &conv)
}

/// ConvTranspose whose kernel equals its stride, without dilation, padding or output
/// padding (the upsampling of detection and segmentation heads): each input pixel alone
/// makes one `kH × kW` block of the output, so it is one 1×1 convolution to
/// `kH·kW·C_out` channels (ordered kernel row, column, output channel) whose output is
/// then a transpose away from NHWC: `[N·H, W, kH, kW·C_out]` → `[N·H, kH, W, kW·C_out]`
/// is `[N, H·kH, W·kW, C_out]`. No zeros inserted and multiplied.
fn conv_transpose_subpixel(
    lw: &mut Lowering<'_>,
    n: &pb::NodeProto,
    x: u32,
    (wd, wq, ws, wz): (Vec<usize>, Vec<i64>, Vec<f32>, Vec<i64>),
) -> Result<()> {
    let xi = lw.b.tensors[x as usize].clone();
    let (nb, h, w) = (xi.shape[0], xi.shape[1], xi.shape[2]);
    let (ci, co, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    let taps = kh * kw;
    let wide = |v: &[f32]| -> Vec<f32> {
        if v.len() == co {
            (0..taps * co).map(|j| v[j % co]).collect()
        } else {
            v.to_vec()
        }
    };
    let wide_i = |v: &[i64]| -> Vec<i64> {
        if v.len() == co {
            (0..taps * co).map(|j| v[j % co]).collect()
        } else {
            v.to_vec()
        }
    };
    // [C_in, C_out, kH, kW] → [(kH, kW, C_out), C_in, 1, 1].
    let mut q = vec![0i64; wq.len()];
    for t in 0..taps {
        for o in 0..co {
            for i in 0..ci {
                q[(t * co + o) * ci + i] = wq[(i * co + o) * taps + t];
            }
        }
    }
    let w_name = format!("{}#weights", n.name);
    lw.vals.insert(
        w_name.clone(),
        Val::QConst {
            dims: vec![taps * co, ci, 1, 1],
            q,
            scale: wide(&ws),
            zero: wide_i(&wz),
            axis: 0,
        },
    );
    let x_name = format!("{}#input", n.name);
    lw.vals.insert(x_name.clone(), Val::Deq(x));
    let mut conv = pb::NodeProto {
        op_type: "Conv".into(),
        name: n.name.clone(),
        input: vec![x_name, w_name],
        output: n.output.clone(),
        ..Default::default()
    };
    if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
        let (bd, bq, bs, bz) = lw.qconst(n, 2)?;
        if bd.iter().product::<usize>() != co {
            return Err(lw.unsupported(n, "bias length differs from the output channels"));
        }
        let b_name = format!("{b}#{}", n.name);
        lw.vals.insert(
            b_name.clone(),
            Val::QConst {
                dims: vec![taps * co],
                q: wide_i(&bq),
                scale: wide(&bs),
                zero: wide_i(&bz),
                axis: 0,
            },
        );
        conv.input.push(b_name);
    }
    conv_node(lw, &conv)?;
    // The 1×1 convolution's output, bound to the QuantizeLinear after the node: moved into
    // place by the transpose, which takes the binding over.
    let (qi, _) = lw.fused_q(n)?;
    let qout = lw.graph.node[qi].output[0].clone();
    let Some(&Val::Act(blocks)) = lw.vals.get(&qout) else {
        return Err(lw.unsupported(n, "output must go to a QuantizeLinear"));
    };
    let bi = lw.b.tensors[blocks as usize].clone();
    let y = lw.b.tensor(
        &format!("{}#upsampled", n.name),
        DType::U8,
        vec![nb, h * kh, w * kw, co],
        true,
        Some(Q8 {
            scale: bi.scale,
            zero: bi.zero,
        }),
    );
    lw.b.ops.push(Op::TransposeF32 {
        x: blocks,
        y,
        dims: [(nb * h) as u32, w as u32, kh as u32, (kw * co) as u32],
        perm: [0, 2, 1, 3],
    });
    lw.set_out(qi, y, &n.output[0]);
    Ok(())
}

/// AveragePool on a u8 map as the depthwise convolution it is: every weight `1/(kH·kW)`
/// (the int8 code 127 at scale `1/(127·kH·kW)`, exact), so the depthwise kernels run it with
/// their requantisation to the QuantizeLinear that follows. Padding counts as zeros
/// (`count_include_pad = 1`); without it only unpadded windows lower.
pub(super) fn average_pool(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = lw.graph.node[idx].clone();
    if let Some(x) = lw.fact(&n, 0) {
        return pool_float(lw, &n, x, false);
    }
    let x = lw.deq(&n, 0)?;
    let xi = lw.b.tensors[x as usize].clone();
    if xi.shape.len() != 4 || !xi.nhwc {
        return Err(lw.unsupported(&n, "input must be a 4-D feature map"));
    }
    let c = xi.shape[3];
    let k = attr_ints(&n, "kernel_shape").unwrap_or_default();
    if k.len() != 2 || k.iter().any(|&v| !(1..=1 << 10).contains(&v)) {
        return Err(lw.unsupported(&n, "kernel_shape must be 2-D"));
    }
    let (kh, kw) = (k[0] as usize, k[1] as usize);
    let pads = attr_ints(&n, "pads").unwrap_or(vec![0; 4]);
    let auto = attr(&n, "auto_pad")
        .map(|a| a.s.clone())
        .unwrap_or_default();
    let padded = pads.iter().any(|&p| p != 0) || !matches!(&auto[..], b"" | b"NOTSET" | b"VALID");
    if attr_i(&n, "ceil_mode", 0) != 0 {
        return Err(lw.unsupported(&n, "ceil_mode"));
    }
    if padded && attr_i(&n, "count_include_pad", 0) == 0 {
        return Err(lw.unsupported(&n, "padded windows that exclude the padding from the count"));
    }
    let w_name = format!("{}#weights", n.name);
    lw.vals.insert(
        w_name.clone(),
        Val::QConst {
            dims: vec![c, 1, kh, kw],
            q: vec![127; c * kh * kw],
            scale: vec![1.0 / (127.0 * (kh * kw) as f32); c],
            zero: vec![0; c],
            axis: 0,
        },
    );
    let mut conv = pb::NodeProto {
        op_type: "Conv".into(),
        name: n.name.clone(),
        input: vec![n.input[0].clone(), w_name],
        output: n.output.clone(),
        ..Default::default()
    };
    let ints = |name: &str, v: Vec<i64>| pb::AttributeProto {
        name: name.into(),
        ints: v,
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    };
    conv.attribute.push(ints("kernel_shape", k));
    for name in ["strides", "pads"] {
        if let Some(v) = attr_ints(&n, name) {
            conv.attribute.push(ints(name, v));
        }
    }
    if let Some(a) = attr(&n, "auto_pad") {
        conv.attribute.push(a.clone());
    }
    conv.attribute.push(pb::AttributeProto {
        name: "group".into(),
        i: c as i64,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    });
    conv_node(lw, &conv)
}

/// Conv of a float tensor (1-D `[1, C, L]` or 2-D `[1, C, H, W]`) by constant weights:
/// NCHW to NHWC, im2col and the f32 GEMM (grouped convolutions as dense ones with zeros
/// between groups), back to NCHW. The spectrogram front ends of audio models are such
/// convolutions (an STFT as a strided 1-D convolution).
fn conv_float(lw: &mut Lowering<'_>, n: &pb::NodeProto, x: u32) -> Result<()> {
    let xs = lw.fshape(x);
    let one_d = xs.len() == 3;
    if !(xs.len() == 3 || xs.len() == 4) || xs[0] == 0 {
        return Err(lw.unsupported(
            n,
            "float convolution input must be (N, C, L) or (N, C, H, W)",
        ));
    }
    let nb = xs[0];
    let (ic, h, w) = if one_d {
        (xs[1], 1, xs[2])
    } else {
        (xs[1], xs[2], xs[3])
    };
    let wd = lw
        .shape_of(n.input.get(1).map_or("", |s| s.as_str()))
        .ok_or_else(|| lw.unsupported(n, "weights of unknown shape"))?;
    let wf = lw.floats(n, 1)?;
    if wd.len() != xs.len() || wf.len() != wd.iter().product::<usize>() {
        return Err(lw.unsupported(n, "weights must be OIHW (OIL for 1-D) constants"));
    }
    let (oc, icg, kh, kw) = if one_d {
        (wd[0], wd[1], 1, wd[2])
    } else {
        (wd[0], wd[1], wd[2], wd[3])
    };
    let groups = attr_i(n, "group", 1);
    if [oc, icg, kh, kw].contains(&0) || !(1..=ic.max(1) as i64).contains(&groups) {
        return Err(lw.unsupported(n, "empty weights, or a group count outside 1..=channels"));
    }
    let groups = groups as usize;
    let two = |v: Option<Vec<i64>>, one: i64| -> Vec<i64> {
        match v {
            Some(v) if one_d && v.len() == 1 => vec![one, v[0]],
            Some(v) => v,
            None => vec![one, one],
        }
    };
    let strides = two(attr_ints(n, "strides"), 1);
    let dil = two(attr_ints(n, "dilations"), 1);
    let pads = match attr_ints(n, "pads") {
        Some(p) if one_d && p.len() == 2 => vec![0, p[0], 0, p[1]],
        _ => pads_of(lw, n, [h, w], [kh, kw], &strides, &dil)?,
    };
    if pads.len() != 4
        || strides.len() != 2
        || dil.len() != 2
        || groups == 0
        || icg * groups != ic
        || oc % groups != 0
        || pads
            .iter()
            .chain(&strides)
            .chain(&dil)
            .any(|&v| !(0..=1 << 16).contains(&v))
        || strides.iter().chain(&dil).any(|&v| v == 0)
    {
        return Err(lw.unsupported(n, "convolution attributes do not match the input"));
    }
    let geom = ConvGeom {
        h,
        w,
        ic,
        oc,
        kh,
        kw,
        stride_h: strides[0] as usize,
        stride_w: strides[1] as usize,
        dil_h: dil[0] as usize,
        dil_w: dil[1] as usize,
        pad_top: pads[0] as usize,
        pad_left: pads[1] as usize,
        pad_bottom: pads[2] as usize,
        pad_right: pads[3] as usize,
        groups,
    };
    let bias = float_bias(lw, n, oc)?;
    if groups > 1 {
        // Grouped and depthwise: directly on the NCHW planes.
        if h + geom.pad_top + geom.pad_bottom < geom.dil_h * (kh - 1) + 1
            || w + geom.pad_left + geom.pad_right < geom.dil_w * (kw - 1) + 1
        {
            return Err(lw.unsupported(n, "kernel larger than the padded input"));
        }
        let out = if one_d {
            vec![nb, oc, geom.ow()]
        } else {
            vec![nb, oc, geom.oh(), geom.ow()]
        };
        let (oh, ow) = (geom.oh(), geom.ow());
        if groups == ic && oc == ic && h * w > 1 && ic > 1 {
            // Depthwise: NCHW to NHWC, the channels in the inner loop, back to NCHW.
            let t = lw.new_f32(&format!("{}#nhwc", n.name), vec![nb, h, w, ic]);
            lw.b.ops.push(Op::TransposeF32 {
                x,
                y: t,
                dims: [nb as u32, ic as u32, (h * w) as u32, 1],
                perm: [0, 2, 1, 3],
            });
            // [c][1][kh][kw] → [kh][kw][c].
            let taps = kh * kw;
            let mut wt = vec![0f32; taps * ic];
            for c in 0..ic {
                for k in 0..taps {
                    wt[k * ic + c] = wf[c * taps + k];
                }
            }
            let yt = lw.new_f32(&format!("{}#nhwc_out", n.name), vec![nb, oh, ow, ic]);
            let (wb, bb) = (lw.b.push(&wt), lw.b.push(&bias));
            lw.b.ops.push(Op::DwF32 {
                x: t,
                y: yt,
                geom,
                w: wb,
                bias: bb,
            });
            let y = lw.new_f32(&n.output[0], out);
            lw.b.ops.push(Op::TransposeF32 {
                x: yt,
                y,
                dims: [nb as u32, (oh * ow) as u32, ic as u32, 1],
                perm: [0, 2, 1, 3],
            });
            lw.out_f32(n, y);
            return Ok(());
        }
        let y = lw.new_f32(&n.output[0], out);
        let (wb, bb) = (lw.b.push(&wf), lw.b.push(&bias));
        lw.b.ops.push(Op::GroupConvF32 {
            x,
            y,
            geom,
            w: wb,
            bias: bb,
        });
        lw.out_f32(n, y);
        return Ok(());
    }
    // NHWC in: a copy only when channels and positions both exceed one.
    let xin = if ic > 1 && h * w > 1 {
        let t = lw.new_f32(&format!("{}#nhwc", n.name), vec![nb, h, w, ic]);
        lw.b.ops.push(Op::TransposeF32 {
            x,
            y: t,
            dims: [nb as u32, ic as u32, (h * w) as u32, 1],
            perm: [0, 2, 1, 3],
        });
        t
    } else {
        x
    };
    conv_float_nhwc(lw, n, xin, geom, &wf, icg, &bias, one_d)
}

/// MaxPool or AveragePool of a float `[N, C, L]` or `[N, C, H, W]` tensor: every plane
/// pooled by the f32 loop. No indices output; ceil_mode only where it adds no window.
fn pool_float(lw: &mut Lowering<'_>, n: &pb::NodeProto, x: u32, max: bool) -> Result<()> {
    let xs = lw.fshape(x);
    let one_d = xs.len() == 3;
    if !(xs.len() == 3 || xs.len() == 4) {
        return Err(lw.unsupported(n, "float pooling input must be (N, C, L) or (N, C, H, W)"));
    }
    if n.output.len() > 1 && !n.output[1].is_empty() {
        return Err(lw.unsupported(n, "the indices output"));
    }
    let planes = xs[0] * xs[1];
    let (h, w) = if one_d { (1, xs[2]) } else { (xs[2], xs[3]) };
    let two = |v: Option<Vec<i64>>, one: i64| -> Vec<i64> {
        match v {
            Some(v) if one_d && v.len() == 1 => vec![one, v[0]],
            Some(v) => v,
            None => vec![one, one],
        }
    };
    let k = two(attr_ints(n, "kernel_shape"), 1);
    let strides = two(attr_ints(n, "strides"), 1);
    let dil = two(attr_ints(n, "dilations"), 1);
    if k.len() != 2 || k.iter().any(|&v| !(1..=1 << 12).contains(&v)) {
        return Err(lw.unsupported(n, "kernel_shape"));
    }
    let (kh, kw) = (k[0] as usize, k[1] as usize);
    let pads = match attr_ints(n, "pads") {
        Some(p) if one_d && p.len() == 2 => vec![0, p[0], 0, p[1]],
        _ => pads_of(lw, n, [h, w], [kh, kw], &strides, &dil)?,
    };
    if pads.len() != 4
        || strides.len() != 2
        || dil.len() != 2
        || pads.iter().any(|&v| !(0..=1 << 16).contains(&v))
        || strides
            .iter()
            .chain(&dil)
            .any(|&v| !(1..=1 << 16).contains(&v))
    {
        return Err(lw.unsupported(n, "pooling attributes do not match the input"));
    }
    let geom = ConvGeom {
        h,
        w,
        ic: planes,
        oc: planes,
        kh,
        kw,
        stride_h: strides[0] as usize,
        stride_w: strides[1] as usize,
        dil_h: dil[0] as usize,
        dil_w: dil[1] as usize,
        pad_top: pads[0] as usize,
        pad_left: pads[1] as usize,
        pad_bottom: pads[2] as usize,
        pad_right: pads[3] as usize,
        groups: 1,
    };
    if h + geom.pad_top + geom.pad_bottom < geom.dil_h * (kh - 1) + 1
        || w + geom.pad_left + geom.pad_right < geom.dil_w * (kw - 1) + 1
    {
        return Err(lw.unsupported(n, "kernel larger than the padded input"));
    }
    let count_pad = attr_i(n, "count_include_pad", 0) != 0;
    let mut geom = geom;
    if attr_i(n, "ceil_mode", 0) != 0 {
        // Ceil mode adds a last window where the strides do not end at the padded edge
        // (one that starts inside the input or its leading padding): extra padding at the
        // end makes the floor count include it. Max ignores padding; an average counting
        // padding would count that extra padding too, so that form is refused.
        let extra = |len: usize, p0: usize, p1: usize, k: usize, d: usize, s: usize| {
            let span = len + p0 + p1 - d * (k - 1) - 1;
            let (fl, ce) = (span / s, span.div_ceil(s));
            // ONNX drops a last window that would start in the end padding.
            let ce = if ce > fl && ce * s >= len + p0 {
                fl
            } else {
                ce
            };
            (ce - fl) * s
        };
        let eh = extra(
            h,
            geom.pad_top,
            geom.pad_bottom,
            kh,
            geom.dil_h,
            geom.stride_h,
        );
        let ew = extra(
            w,
            geom.pad_left,
            geom.pad_right,
            kw,
            geom.dil_w,
            geom.stride_w,
        );
        if (eh > 0 || ew > 0) && count_pad && !max {
            return Err(
                lw.unsupported(n, "ceil_mode with count_include_pad where it adds a window")
            );
        }
        geom.pad_bottom += eh;
        geom.pad_right += ew;
    }
    let mut out = xs.clone();
    if one_d {
        out[2] = geom.ow();
    } else {
        out[2] = geom.oh();
        out[3] = geom.ow();
    }
    let y = lw.new_f32(&n.output[0], out);
    lw.b.ops.push(Op::PoolF32 {
        x,
        y,
        geom,
        max,
        count_pad,
    });
    lw.out_f32(n, y);
    Ok(())
}

/// The float bias of a convolution (input 2), or none.
fn float_bias(lw: &Lowering<'_>, n: &pb::NodeProto, oc: usize) -> Result<Vec<f32>> {
    if n.input.len() > 2 && !n.input[2].is_empty() {
        let b = lw.floats(n, 2)?;
        if b.len() != oc {
            return Err(lw.unsupported(n, "bias length differs from the output channels"));
        }
        Ok(b)
    } else {
        Ok(vec![])
    }
}

/// Where a 3×3 stride-1 float convolution runs as Winograd's F(4×4, 3×3): from these
/// input and output channels, and tiles of the output. With fewer channels the transforms
/// cost more than the products they save; with fewer tiles, reading the weights (four
/// times the direct form's) and the partial tiles' waste do (`cargo bench -p
/// edgetune-kernels --features std --bench winograd`: 10×10×256→256 slower from memory;
/// `edgetune run --per-op` on YOLOv8n: 80×80×16→16 and 40×40×64→64 faster).
const WINO_MIN_IC: usize = 16;
const WINO_MIN_OC: usize = 16;
const WINO_MIN_TILES: usize = 16;

/// The float convolution of `geom` over the NHWC tensor `x` by OIHW weights `wf` (`icg`
/// input channels per group) into n's output, NCHW (`[1, C, L]` when `one_d`).
#[allow(clippy::too_many_arguments)]
fn conv_float_nhwc(
    lw: &mut Lowering<'_>,
    n: &pb::NodeProto,
    x: u32,
    geom: ConvGeom,
    wf: &[f32],
    icg: usize,
    bias: &[f32],
    one_d: bool,
) -> Result<()> {
    let ConvGeom {
        h,
        w,
        ic,
        oc,
        kh,
        kw,
        groups,
        ..
    } = geom;
    let geom = ConvGeom { groups: 1, ..geom };
    // Images in the batch: the first axis whether `x` is NHWC or (with one channel or one
    // position) the NCHW input itself.
    let nb = lw.fshape(x).first().copied().unwrap_or(1);
    if geom.stride_h == 0
        || geom.stride_w == 0
        || h + geom.pad_top + geom.pad_bottom < geom.dil_h * (kh - 1) + 1
        || w + geom.pad_left + geom.pad_right < geom.dil_w * (kw - 1) + 1
    {
        return Err(lw.unsupported(n, "kernel larger than the padded input"));
    }
    // B[(ky, kx, i)][o], zero where i and o are in different groups.
    let k = kh * kw * ic;
    let ocg = oc / groups;
    let mut b = vec![0f32; k * oc];
    for o in 0..oc {
        let g = o / ocg;
        for i in g * icg..(g + 1) * icg {
            for t in 0..kh * kw {
                b[(t * ic + i) * oc + o] = wf[((o * icg + (i - g * icg)) * kh * kw) + t];
            }
        }
    }
    // 3×3 stride-1 layers of enough channels and tiles run as Winograd's F(4×4, 3×3)
    // (four times fewer multiply-adds, a few 1e-6 of rounding apart); the weights' length
    // tells the executor which form it holds. Not in the unfused lowering, the direct
    // form's check.
    let (th, tw) = wino::tiles(&geom);
    let winograd = wino::eligible(&geom)
        && ic >= WINO_MIN_IC
        && oc >= WINO_MIN_OC
        && th * tw >= WINO_MIN_TILES
        && !lw.plain;
    let packed = if winograd {
        let mut u = vec![0f32; wino::weights_len(ic, oc)];
        wino::pack_weights(&b, ic, oc, &mut u);
        u
    } else {
        let mut p = vec![0f32; edgetune_kernels::pack::packed_f32_len(k, oc)];
        edgetune_kernels::pack::pack_f32(&b, k, oc, &mut p);
        p
    };
    let (oh, ow) = (geom.oh(), geom.ow());
    let out_shape = if one_d {
        vec![nb, oc, ow]
    } else {
        vec![nb, oc, oh, ow]
    };
    let direct = oc == 1 || oh * ow == 1;
    let y = if direct {
        lw.new_f32(&n.output[0], out_shape.clone())
    } else {
        lw.new_f32(&format!("{}#nhwc_out", n.name), vec![nb, oh, ow, oc])
    };
    let scratch_len = if winograd {
        wino::plan_scratch_len(&geom)
    } else {
        edgetune_kernels::ops::conv_scratch_len(&geom)
    };
    let scratch =
        (scratch_len > 0).then(|| lw.new_f32(&format!("{}#im2col", n.name), vec![scratch_len]));
    let (w, bias) = (lw.b.push(&packed), lw.b.push(bias));
    lw.b.ops.push(Op::ConvF32 {
        x,
        y,
        scratch,
        geom,
        w,
        bias,
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    });
    let y = if direct {
        y
    } else {
        to_nchw_out(lw, n, y, out_shape, [nb, oh * ow, oc])
    };
    lw.out_f32(n, y);
    Ok(())
}

/// n's output: the NHWC map `x` (`[n, pixels, channels]`) transposed to NCHW `shape`.
fn to_nchw_out(
    lw: &mut Lowering<'_>,
    n: &pb::NodeProto,
    x: u32,
    shape: Vec<usize>,
    [nb, hw, c]: [usize; 3],
) -> u32 {
    let y = lw.new_f32(&n.output[0], shape);
    lw.b.ops.push(Op::TransposeF32 {
        x,
        y,
        dims: [nb as u32, hw as u32, c as u32, 1],
        perm: [0, 2, 1, 3],
    });
    y
}

/// ConvTranspose of a float `[N, C, H, W]` tensor, group 1: the input to NHWC, zeros
/// inserted for the stride, the convolution with the weights flipped in space and the
/// channel axes exchanged (as for int8 maps).
fn conv_transpose_float(lw: &mut Lowering<'_>, n: &pb::NodeProto, x: u32) -> Result<()> {
    let xs = lw.fshape(x);
    if xs.len() != 4 || xs[0] == 0 {
        return Err(lw.unsupported(n, "float transposed convolution input must be (N, C, H, W)"));
    }
    let (nb, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let wd = lw
        .shape_of(n.input.get(1).map_or("", |s| s.as_str()))
        .ok_or_else(|| lw.unsupported(n, "weights of unknown shape"))?;
    let wf = lw.floats(n, 1)?;
    if wd.len() != 4 || wf.len() != wd.iter().product::<usize>() {
        return Err(lw.unsupported(n, "weights must be [C_in, C_out, kH, kW] constants"));
    }
    let (ci, co, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    let auto = attr(n, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET");
    if attr_i(n, "group", 1) != 1 || auto || attr(n, "output_shape").is_some() {
        return Err(lw.unsupported(n, "group, auto_pad or output_shape"));
    }
    if ci != c || h == 0 || w == 0 || kh == 0 || kw == 0 {
        return Err(lw.unsupported(n, "weights do not match the input, or an empty axis"));
    }
    let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
    let dil = attr_ints(n, "dilations").unwrap_or(vec![1, 1]);
    let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
    let out_pad = attr_ints(n, "output_padding").unwrap_or(vec![0, 0]);
    let ok = |v: &[i64], len: usize, lo: i64| {
        v.len() == len && v.iter().all(|&a| (lo..=1 << 12).contains(&a))
    };
    if !ok(&strides, 2, 1) || !ok(&dil, 2, 1) || !ok(&pads, 4, 0) || !ok(&out_pad, 2, 0) {
        return Err(lw.unsupported(n, "transposed convolution attributes"));
    }
    let (sh, sw) = (strides[0] as usize, strides[1] as usize);
    let reach = [dil[0] * (kh as i64 - 1), dil[1] * (kw as i64 - 1)];
    let conv_pads = [
        reach[0] - pads[0],
        reach[1] - pads[1],
        reach[0] - pads[2] + out_pad[0],
        reach[1] - pads[3] + out_pad[1],
    ];
    if conv_pads.iter().any(|&p| p < 0) {
        return Err(lw.unsupported(n, "pads larger than the kernel's reach"));
    }
    let mut xin = x;
    if c > 1 && h * w > 1 {
        let t = lw.new_f32(&format!("{}#nhwc", n.name), vec![nb, h, w, c]);
        lw.b.ops.push(Op::TransposeF32 {
            x,
            y: t,
            dims: [nb as u32, c as u32, (h * w) as u32, 1],
            perm: [0, 2, 1, 3],
        });
        xin = t;
    }
    let plain = dil == [1, 1] && pads.iter().chain(&out_pad).all(|&p| p == 0);
    if plain && (sh, sw) == (kh, kw) && kh * kw > 1 && !lw.plain {
        // As `conv_transpose_subpixel`: a 1×1 convolution to (kernel row, column, output
        // channel), a transpose to the NHWC output map, and the one to NCHW.
        let taps = kh * kw;
        let mut b = vec![0f32; ci * taps * co];
        for i in 0..ci {
            for o in 0..co {
                for t in 0..taps {
                    b[i * taps * co + t * co + o] = wf[(i * co + o) * taps + t];
                }
            }
        }
        let mut packed = vec![0f32; edgetune_kernels::pack::packed_f32_len(ci, taps * co)];
        edgetune_kernels::pack::pack_f32(&b, ci, taps * co, &mut packed);
        let bias = float_bias(lw, n, co)?;
        // None stays none (empty).
        let bias: Vec<f32> = bias
            .iter()
            .cycle()
            .take(taps * bias.len())
            .copied()
            .collect();
        let (wb, bb) = (lw.b.push(&packed), lw.b.push(&bias));
        let blocks = lw.new_f32(&format!("{}#blocks", n.name), vec![nb, h, w, taps * co]);
        lw.b.ops.push(Op::ConvF32 {
            x: xin,
            y: blocks,
            scratch: None,
            geom: ConvGeom::pointwise(h, w, c, taps * co),
            w: wb,
            bias: bb,
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        });
        let (oh, ow) = (h * kh, w * kw);
        // One output channel: the NHWC map is the NCHW tensor.
        let (name, shape) = if co == 1 {
            (n.output[0].clone(), vec![nb, 1, oh, ow])
        } else {
            (format!("{}#nhwc_out", n.name), vec![nb, oh, ow, co])
        };
        let up = lw.new_f32(&name, shape);
        lw.b.ops.push(Op::TransposeF32 {
            x: blocks,
            y: up,
            dims: [(nb * h) as u32, w as u32, kh as u32, (kw * co) as u32],
            perm: [0, 2, 1, 3],
        });
        let y = if co == 1 {
            up
        } else {
            to_nchw_out(lw, n, up, vec![nb, co, oh, ow], [nb, oh * ow, co])
        };
        lw.out_f32(n, y);
        return Ok(());
    }
    let (dh, dw) = ((h - 1) * sh + 1, (w - 1) * sw + 1);
    if sh > 1 || sw > 1 {
        let t = lw.new_f32(&format!("{}#dilated", n.name), vec![nb, dh, dw, c]);
        lw.b.ops.push(Op::Dilate {
            x: xin,
            y: t,
            h: h as u32,
            w: w as u32,
            c: c as u32,
            sh: sh as u32,
            sw: sw as u32,
            fill: 0f32.to_bits(),
        });
        xin = t;
    }
    // [C_in, C_out, kH, kW] → [C_out, C_in, kH, kW], flipped in space.
    let mut f = vec![0f32; wf.len()];
    for i in 0..ci {
        for o in 0..co {
            for y in 0..kh {
                for xx in 0..kw {
                    f[((o * ci + i) * kh + y) * kw + xx] =
                        wf[((i * co + o) * kh + (kh - 1 - y)) * kw + (kw - 1 - xx)];
                }
            }
        }
    }
    let geom = ConvGeom {
        h: dh,
        w: dw,
        ic: c,
        oc: co,
        kh,
        kw,
        stride_h: 1,
        stride_w: 1,
        dil_h: dil[0] as usize,
        dil_w: dil[1] as usize,
        pad_top: conv_pads[0] as usize,
        pad_left: conv_pads[1] as usize,
        pad_bottom: conv_pads[2] as usize,
        pad_right: conv_pads[3] as usize,
        groups: 1,
    };
    let bias = float_bias(lw, n, co)?;
    conv_float_nhwc(lw, n, xin, geom, &f, ci, &bias, false)
}

fn conv_node(lw: &mut Lowering<'_>, n: &pb::NodeProto) -> Result<()> {
    if let Some(x) = lw.fact(n, 0) {
        return conv_float(lw, n, x);
    }
    // A Pad before the convolution adds to its padding.
    let (x, extra) = match lw.val(n, 0)? {
        Val::Padded { t, pads, deq: true } => (*t, *pads),
        _ => (lw.deq(n, 0)?, [0; 4]),
    };
    let (wd, mut wq, ws, wz) = lw.qconst(n, 1)?;
    if wd.len() != 4 || wz.iter().any(|&z| z != 0) || wq.iter().any(|&v| !(-128..=127).contains(&v))
    {
        return Err(lw.unsupported(n, "weights must be symmetric int8 OIHW"));
    }
    let xi = lw.b.tensors[x as usize].clone();
    if xi.shape.len() != 4 {
        return Err(lw.unsupported(n, "convolution input must be 4-D (N, C, H, W)"));
    }
    let (oc, icg, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    let (h, w, ic) = (xi.shape[1], xi.shape[2], xi.shape[3]);
    let groups = attr_i(n, "group", 1) as usize;
    let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
    let dil = attr_ints(n, "dilations").unwrap_or(vec![1, 1]);
    let pads = pads_of(lw, n, [h, w], [kh, kw], &strides, &dil)?;
    if pads.len() != 4
        || strides.len() != 2
        || dil.len() != 2
        || groups == 0
        || icg * groups != ic
        || pads.iter().chain(&strides).chain(&dil).any(|&v| v < 0)
    {
        return Err(lw.unsupported(n, "convolution attributes do not match the input"));
    }
    let geom = ConvGeom {
        h,
        w,
        ic,
        oc,
        kh,
        kw,
        stride_h: strides[0] as usize,
        stride_w: strides[1] as usize,
        dil_h: dil[0] as usize,
        dil_w: dil[1] as usize,
        pad_top: pads[0] as usize + extra[0],
        pad_left: pads[1] as usize + extra[1],
        pad_bottom: pads[2] as usize + extra[2],
        pad_right: pads[3] as usize + extra[3],
        groups,
    };
    if geom.stride_h == 0
        || geom.stride_w == 0
        || h + geom.pad_top + geom.pad_bottom < geom.dil_h * (kh - 1) + 1
    {
        return Err(lw.unsupported(n, "kernel larger than the padded input"));
    }
    let (bias, scale) = lw.bias_scale(n, 2, oc, xi.scale, &ws, &mut wq, icg * kh * kw)?;
    let (qi, qy) = lw.fused_q(n)?;
    let y = lw.b.tensor(
        &n.output[0],
        DType::U8,
        vec![xi.shape[0], geom.oh(), geom.ow(), oc],
        true,
        Some(qy),
    );
    let scale: Vec<f32> = scale.iter().map(|s| s / qy.scale).collect();
    let (bias, scale) = (lw.b.push(&bias), lw.b.push(&scale));
    let depthwise = groups == ic && oc == ic && icg == 1;
    // The depthwise kernels take no dilation, and one stride for both axes or, row by row,
    // a height stride of its own where every output row reads the image; other grouped
    // convolutions (and depthwise ones outside that) run as a dense convolution whose
    // weights are zero between groups.
    let rows_read = (0..geom.oh()).all(|r| crate::par::conv_rows(&geom, r, r + 1).0.h > 0);
    let dw_kernel = depthwise
        && geom.dil_h == 1
        && geom.dil_w == 1
        && (geom.stride_h == geom.stride_w || (rows_read && !lw.plain));
    if groups != 1 && !dw_kernel && oc % groups != 0 {
        return Err(lw.unsupported(n, "output channels not divisible by the groups"));
    }
    if !dw_kernel {
        let geom = ConvGeom { groups: 1, ..geom };
        let k = kh * kw * ic;
        let ocg = oc / groups;
        let (w, colsum) = lw.b.push_packed_i8(k, oc, |kk, o| {
            let (tap, i) = (kk / ic, kk % ic);
            let g = o / ocg;
            if i / icg != g {
                return 0;
            }
            wq[((o * icg + (i - g * icg)) * kh + tap / kw) * kw + tap % kw] as i8
        });
        let scratch_len = edgetune_kernels::ops::conv_scratch_len(&geom);
        let scratch = (scratch_len > 0).then(|| {
            lw.b.tensor(
                &format!("{}#im2col", n.name),
                DType::U8,
                vec![scratch_len],
                false,
                None,
            )
        });
        lw.b.ops.push(Op::ConvI8 {
            x,
            y,
            scratch,
            geom,
            x_zero: xi.zero,
            y_zero: qy.zero,
            w,
            colsum,
            bias,
            scale,
        });
    } else {
        let mut wt = vec![0i16; kh * kw * oc];
        for c in 0..oc {
            for t in 0..kh * kw {
                wt[t * oc + c] = wq[c * kh * kw + t] as i16;
            }
        }
        let w = lw.b.push(&wt);
        lw.b.ops.push(Op::DwI8 {
            x,
            y,
            geom,
            x_zero: xi.zero,
            y_zero: qy.zero,
            w,
            bias,
            scale,
        });
    }
    lw.set_out(qi, y, &n.output[0]);
    Ok(())
}

/// Max pooling of a u8 map, or of a non-decreasing table of one (the table moves past it).
pub(super) fn max_pool(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    if let Some(x) = lw.fact(n, 0) {
        let n = n.clone();
        return pool_float(lw, &n, x, true);
    }
    let v = lw.val(n, 0)?.clone();
    let (t, mapped) = match v {
        Val::Deq(t) => (t, None),
        Val::Mapped(m) if m.monotone => (m.t, Some(m)),
        // A function that does not commute with max (a PReLU with negative slopes): its
        // values quantised first, with the parameters of the QuantizeLinear after the
        // pooling (max commutes with that rounding, which is non-decreasing).
        Val::Mapped(m) => {
            let q = match lw.consumers.get(&n.output[0]).map(|c| c.as_slice()) {
                Some([qi]) if lw.graph.node[*qi].op_type == "QuantizeLinear" => {
                    lw.q8_of(&lw.graph.node[*qi])?
                }
                _ => {
                    return Err(lw.unsupported(
                        n,
                        "input must be a quantised tensor or a non-decreasing function of one",
                    ))
                }
            };
            let ti = lw.b.tensors[m.t as usize].clone();
            if m.table.iter().any(|v| !v.is_finite()) || (m.channels > 1 && !ti.nhwc) {
                return Err(lw.unsupported(n, "a table of non-finite values"));
            }
            let codes: Vec<u8> = m
                .table
                .iter()
                .map(|&v| edgetune_kernels::quant::requant(v / q.scale, q.zero, 0, 255) as u8)
                .collect();
            let y = lw.b.tensor(
                &format!("{}#quantised", n.input[0]),
                DType::U8,
                ti.shape.clone(),
                ti.nhwc,
                Some(q),
            );
            let table = lw.b.push(&codes);
            lw.b.ops.push(Op::LutU8 {
                x: m.t,
                y,
                channels: m.channels as u32,
                table,
            });
            (y, None)
        }
        _ => return Err(lw.unsupported(n, "input must be a quantised tensor or a function of one")),
    };
    let xi = lw.b.tensors[t as usize].clone();
    if xi.shape.len() != 4 || !xi.nhwc {
        return Err(lw.unsupported(n, "needs a 4-D feature map"));
    }
    if n.output.len() > 1 && !n.output[1].is_empty() {
        return Err(lw.unsupported(n, "the indices output"));
    }
    let ceil = attr_i(n, "ceil_mode", 0) != 0;
    let k = attr_ints(n, "kernel_shape").unwrap_or_default();
    let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
    let dil = attr_ints(n, "dilations").unwrap_or(vec![1, 1]);
    if k.len() != 2 || k.iter().any(|&v| !(1..=1 << 16).contains(&v)) {
        return Err(lw.unsupported(n, "pooling attributes"));
    }
    let pads = pads_of(
        lw,
        n,
        [xi.shape[1], xi.shape[2]],
        [k[0] as usize, k[1] as usize],
        &strides,
        &dil,
    )?;
    if k.len() != 2
        || strides.len() != 2
        || pads.len() != 4
        || dil.len() != 2
        || k.iter()
            .chain(&strides)
            .chain(&dil)
            .any(|&v| !(1..=1 << 16).contains(&v))
        || pads.iter().any(|&v| !(0..=1 << 16).contains(&v))
    {
        return Err(lw.unsupported(n, "pooling attributes"));
    }
    let (h, w, c) = (xi.shape[1], xi.shape[2], xi.shape[3]);
    let geom = ConvGeom {
        h,
        w,
        ic: c,
        oc: c,
        kh: k[0] as usize,
        kw: k[1] as usize,
        stride_h: strides[0] as usize,
        stride_w: strides[1] as usize,
        dil_h: dil[0] as usize,
        dil_w: dil[1] as usize,
        pad_top: pads[0] as usize,
        pad_left: pads[1] as usize,
        pad_bottom: pads[2] as usize,
        pad_right: pads[3] as usize,
        groups: 1,
    };
    if h + geom.pad_top + geom.pad_bottom < geom.dil_h * (geom.kh - 1) + 1
        || w + geom.pad_left + geom.pad_right < geom.dil_w * (geom.kw - 1) + 1
    {
        return Err(lw.unsupported(n, "kernel larger than the padded input"));
    }
    let mut geom = geom;
    if ceil {
        // ceil_mode: one more window where a partial one is left, as long as it starts
        // inside the input or its leading padding; padded positions are ignored by the
        // kernel, so extra trailing padding gives exactly those windows.
        let extra = |len: usize, pa: usize, pb: usize, k: usize, d: usize, s: usize| {
            let span = len + pa + pb;
            let reach = d * (k - 1) + 1;
            let mut out = (span - reach).div_ceil(s) + 1;
            if (out - 1) * s >= len + pa {
                out -= 1;
            }
            ((out - 1) * s + reach).saturating_sub(span)
        };
        geom.pad_bottom += extra(
            h,
            geom.pad_top,
            geom.pad_bottom,
            geom.kh,
            geom.dil_h,
            geom.stride_h,
        );
        geom.pad_right += extra(
            w,
            geom.pad_left,
            geom.pad_right,
            geom.kw,
            geom.dil_w,
            geom.stride_w,
        );
    }
    let q = Q8 {
        scale: xi.scale,
        zero: xi.zero,
    };
    let y = lw.b.tensor(
        &n.output[0],
        DType::U8,
        vec![xi.shape[0], geom.oh(), geom.ow(), c],
        true,
        Some(q),
    );
    lw.b.ops.push(Op::MaxPoolU8 { x: t, y, geom });
    let out = match mapped {
        None => Val::Deq(y),
        Some(m) => Val::Mapped(Mapped { t: y, ..m }),
    };
    lw.vals.insert(n.output[0].clone(), out);
    lw.block_taps.push((n.output[0].clone(), y));
    Ok(())
}

/// Global average pooling of a u8 map into its QuantizeLinear; when no QuantizeLinear
/// follows (onnxruntime's QOperator form leaves the pooled vector in float), in float.
pub(super) fn global_average_pool(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    if let Some(x) = lw.fact(n, 0) {
        // A float NCHW tensor: the mean over its spatial axes.
        let s = lw.fshape(x);
        if s.len() < 3 {
            return Err(lw.unsupported(n, "needs a (N, C, spatial...) input"));
        }
        let (outer, len) = (
            s[..2].iter().product::<usize>(),
            s[2..].iter().product::<usize>(),
        );
        let mut out = s.clone();
        out[2..].iter_mut().for_each(|d| *d = 1);
        let sum = lw.new_f32(&format!("{}#sum", n.output[0]), out.clone());
        lw.b.ops.push(Op::SumF32 {
            x,
            y: sum,
            outer: outer as u32,
            len: len as u32,
            inner: 1,
        });
        let y = lw.new_f32(&n.output[0], out);
        let k = lw.b.push(&[1.0 / len.max(1) as f32]);
        lw.b.ops.push(Op::BinF32 {
            a: crate::plan::Src::T(sum),
            b: crate::plan::Src::C(k),
            y,
            f: crate::plan::BinOp::Mul,
            dims: [1, 1, 1, outer as u32],
            sa: [0, 0, 0, 1],
            sb: [0; 4],
        });
        lw.out_f32(n, y);
        return Ok(());
    }
    let x = lw.deq(n, 0)?;
    let xi = lw.b.tensors[x as usize].clone();
    if xi.shape.len() != 4 {
        return Err(lw.unsupported(n, "needs a 4-D input"));
    }
    let single_q = matches!(
        lw.consumers.get(&n.output[0]).map(|c| c.as_slice()),
        Some([q]) if lw.graph.node[*q].op_type == "QuantizeLinear"
    );
    if !single_q {
        // The map in float, still NHWC, pooled by the f32 kernel into [1, C, 1, 1].
        let xf = lw.b.tensor(
            &format!("{}#float", n.input[0]),
            DType::F32,
            xi.shape.clone(),
            true,
            None,
        );
        lw.b.ops.push(Op::Dequantize {
            x,
            y: xf,
            q: Q8 {
                scale: xi.scale,
                zero: xi.zero,
            },
            to_nchw: false,
        });
        let y = lw.new_f32(&n.output[0], vec![xi.shape[0], xi.shape[3], 1, 1]);
        lw.b.ops.push(Op::GapF32 { x: xf, y });
        lw.out_f32(n, y);
        lw.block_taps.push((n.output[0].clone(), y));
        return Ok(());
    }
    let (qi, qy) = lw.fused_q(n)?;
    let y = lw.b.tensor(
        &n.output[0],
        DType::U8,
        vec![xi.shape[0], 1, 1, xi.shape[3]],
        true,
        Some(qy),
    );
    lw.b.ops.push(Op::GapU8 {
        x,
        y,
        qx: Q8 {
            scale: xi.scale,
            zero: xi.zero,
        },
        qy,
    });
    lw.set_out(qi, y, &n.output[0]);
    lw.block_taps.push((n.input[0].clone(), x));
    Ok(())
}

/// ReduceMean over the two spatial axes of a quantised 4-D map, keeping them: the
/// global average pooling that torch's dynamo exporter writes (and onnxruntime's
/// quantiser leaves in float between DequantizeLinear and QuantizeLinear).
pub(super) fn reduce_mean(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    if super::norm::reduce_float(lw, idx, super::norm::Reduce::Mean)? {
        return Ok(());
    }
    let n = &lw.graph.node[idx];
    let axes = match attr_ints(n, "axes") {
        Some(a) => a,
        // Opset 18 moved the axes to an input.
        None if n.input.len() > 1 && !n.input[1].is_empty() => lw.constant(n, 1)?.ints(),
        None => return Err(lw.unsupported(n, "reduces every axis (no axes)")),
    };
    let rank = lw.shape_of(&n.input[0]).map_or(0, |s| s.len());
    let mut norm: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + 4 } else { a })
        .collect();
    norm.sort_unstable();
    if rank != 4 || norm != [2, 3] {
        return Err(lw.unsupported(
            n,
            format!(
                "only the spatial mean of a 4-D map (axes 2, 3) lowers, got axes {axes:?} of a rank-{rank} tensor"
            ),
        ));
    }
    if attr_i(n, "keepdims", 1) != 1 {
        return Err(lw.unsupported(n, "keepdims = 0 (the pooled map keeps its 1x1 axes)"));
    }
    global_average_pool(lw, idx)
}

impl Lowering<'_> {
    /// Bias in units of `s_x·s_w[c]` and the per-channel `s_x·s_w[c]`. A channel whose
    /// bias would not fit the accumulator (dead channels with near-zero weight scales)
    /// has its weights requantised to a coarser scale first; `wq` holds the weights of
    /// channel `c` at `c·per..(c+1)·per`.
    pub(super) fn bias_scale(
        &self,
        n: &pb::NodeProto,
        i: usize,
        oc: usize,
        sx: f32,
        ws: &[f32],
        wq: &mut [i64],
        per: usize,
    ) -> Result<(Vec<i32>, Vec<f32>)> {
        // Per-tensor (1) or per-channel (oc) quantisation parameters only.
        let fits = |n: usize| n == 1 || n == oc;
        if !fits(ws.len()) {
            return Err(self.unsupported(n, "weight scales are neither per-tensor nor per-channel"));
        }
        let mut sw: Vec<f32> = (0..oc)
            .map(|c| if ws.len() == 1 { ws[0] } else { ws[c] })
            .collect();
        let mut bias = vec![0i32; oc];
        let has_bias = n.input.len() > i && !n.input[i].is_empty();
        let real: Vec<f64> = if has_bias {
            let (bd, bq, bs, bz) = self.qconst(n, i)?;
            if bd.iter().product::<usize>() != oc
                || bq.len() != oc
                || !fits(bs.len())
                || !fits(bz.len())
            {
                return Err(self.unsupported(n, "bias length differs from the output channels"));
            }
            (0..oc)
                .map(|c| {
                    (bq[c] - if bz.len() == 1 { bz[0] } else { bz[c] }) as f64
                        * (if bs.len() == 1 { bs[0] } else { bs[c] }) as f64
                })
                .collect()
        } else {
            vec![0.0; oc]
        };
        const LIMIT: f64 = (1u64 << 29) as f64;
        for c in 0..oc {
            let need = (real[c].abs() / (sx as f64 * LIMIT)) as f32;
            if need > sw[c] {
                if ws.len() == 1 {
                    return Err(self.unsupported(n, "bias does not fit the int32 accumulator"));
                }
                let ratio = sw[c] / need;
                for v in &mut wq[c * per..(c + 1) * per] {
                    *v = ((*v as f32 * ratio).round_ties_even() as i64).clamp(-127, 127);
                }
                sw[c] = need;
            }
        }
        let acc_scale: Vec<f32> = (0..oc).map(|c| sx * sw[c]).collect();
        for c in 0..oc {
            bias[c] = (real[c] / acc_scale[c] as f64).round_ties_even() as i32;
        }
        Ok((bias, acc_scale))
    }
}

/// The pads of a 2-D convolution or pooling over an `hw` input: `pads`, or what
/// `auto_pad` asks for (`SAME_UPPER`/`SAME_LOWER`: an output of ceil(in / stride), the odd
/// padding at the end or the start; `VALID`: none).
fn pads_of(
    lw: &Lowering,
    n: &pb::NodeProto,
    hw: [usize; 2],
    k: [usize; 2],
    strides: &[i64],
    dil: &[i64],
) -> Result<Vec<i64>> {
    let mode = attr(n, "auto_pad").map(|a| a.s.clone()).unwrap_or_default();
    match &mode[..] {
        b"" | b"NOTSET" => Ok(attr_ints(n, "pads").unwrap_or(vec![0; 4])),
        b"VALID" => Ok(vec![0; 4]),
        b"SAME_UPPER" | b"SAME_LOWER" => {
            if strides.len() != 2 || dil.len() != 2 || strides.iter().chain(dil).any(|&v| v < 1) {
                return Err(lw.unsupported(n, "auto_pad with these strides or dilations"));
            }
            let upper = &mode[..] == b"SAME_UPPER";
            let (t, b) = same_pads(hw[0] as i64, k[0] as i64, strides[0], dil[0], upper);
            let (l, r) = same_pads(hw[1] as i64, k[1] as i64, strides[1], dil[1], upper);
            Ok(vec![t, l, b, r])
        }
        _ => Err(lw.unsupported(n, "unknown auto_pad")),
    }
}

/// `auto_pad = SAME_*` along one axis (ONNX's rule): the output has ceil(len / stride)
/// entries, the padding it needs is split in two, the odd one at the end (`upper`) or
/// the start.
fn same_pads(len: i64, k: i64, stride: i64, dil: i64, upper: bool) -> (i64, i64) {
    let out = (len + stride - 1) / stride;
    let total = ((out - 1) * stride + dil * (k - 1) + 1 - len).max(0);
    let small = total / 2;
    if upper {
        (small, total - small)
    } else {
        (total - small, small)
    }
}

#[cfg(test)]
mod tests {
    use super::same_pads;

    #[test]
    fn same_padding_follows_the_onnx_rule() {
        // ONNX's own node tests: MaxPool 5x5 input, 3x3 kernel, stride 1 (pads 1 each
        // side); 32x32, 2x2 kernel, stride 1 (upper: 0 then 1; lower: 1 then 0).
        assert_eq!(same_pads(5, 3, 1, 1, true), (1, 1));
        assert_eq!(same_pads(32, 2, 1, 1, true), (0, 1));
        assert_eq!(same_pads(32, 2, 1, 1, false), (1, 0));
        // Stride 2 over an odd and an even input; dilation widens the kernel.
        assert_eq!(same_pads(5, 3, 2, 1, true), (1, 1));
        assert_eq!(same_pads(4, 3, 2, 1, true), (0, 1));
        assert_eq!(same_pads(4, 3, 2, 1, false), (1, 0));
        assert_eq!(same_pads(8, 3, 1, 2, true), (2, 2));
        // A kernel covered by the stride needs no padding.
        assert_eq!(same_pads(8, 2, 2, 1, true), (0, 0));
    }
}
