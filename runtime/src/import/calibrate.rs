//! Post-training quantisation of a float model at compile time: the float graph runs on
//! calibration inputs (tract-onnx, on the host), every activation that an int8 op reads or
//! writes gets the range it took, and the graph is rewritten into QDQ form — u8
//! activations (min/max ranges widened to include 0, as onnxruntime's MinMax calibrator
//! does), int8 weights symmetric per output channel, int32 biases in units of
//! `x_scale·w_scale` — which then lowers like any quantised model.

use super::value::{attr_i, malformed, tensor_const};
use super::{registry, ImportOptions};
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Ops whose activations (float inputs that are not constants, and float outputs) are
/// quantised.
const QUANTISED: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "PRelu",
    "Tanh",
    "Elu",
    "GlobalAveragePool",
    "ReduceMean",
    "MaxPool",
    "AveragePool",
    "Concat",
    "Pad",
    "BatchNormalization",
];

/// What the calibration measured and wrote, for the compile summary.
#[derive(Clone, Debug, Default)]
pub struct CalibrationReport {
    pub samples: usize,
    pub activations: usize,
    pub weights: usize,
}

/// A float constant: an initializer, or the value of a Constant node.
fn float_init(g: &pb::GraphProto, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
    let t = g.initializer.iter().find(|t| t.name == name).or_else(|| {
        g.node
            .iter()
            .find(|n| n.op_type == "Constant" && n.output.first().is_some_and(|o| o == name))
            .and_then(|n| n.attribute.iter().find(|a| a.name == "value"))
            .and_then(|a| a.t.as_ref())
    })?;
    let c = tensor_const(t).ok()?;
    Some((c.dims.clone(), c.f32s()?))
}

fn tensor(name: String, dims: Vec<i64>, data_type: i32, raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims,
        data_type,
        raw_data: raw,
        ..Default::default()
    }
}

fn node(op: &str, name: String, input: Vec<String>, output: String) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name,
        input,
        output: vec![output],
        ..Default::default()
    }
}

const F32: i32 = pb::tensor_proto::DataType::Float as i32;
const U8: i32 = pb::tensor_proto::DataType::Uint8 as i32;
const I8: i32 = pb::tensor_proto::DataType::Int8 as i32;
const I32: i32 = pb::tensor_proto::DataType::Int32 as i32;

/// Dynamic quantisation (onnxruntime's `quantize_dynamic`) undone, so that calibration
/// can quantise the model statically: each DynamicQuantizeLinear whose codes feed only
/// ConvInteger and MatMulInteger (with its zero point) is dropped, those become Conv and
/// MatMul on its float input with the weights `w - w_zero` as floats, the Casts of their
/// int32 results go, and its scale becomes 1, so the Mul by `x_scale · w_scale` that
/// follows multiplies by `w_scale` alone. What remains is the float model with the weights
/// rounded as the producer rounded them. `None` when there is no dynamic quantisation.
///
/// With `codes`, the input keeps its dynamic quantisation: it is replaced by its codes
/// less their zero point, `q - zero`, with the scale and zero point computed from its
/// range at run time as DynamicQuantizeLinear computes them (in float ops), and the scale
/// stays the run-time scale. The convolution sums the integer products the integer kernel
/// sums (exactly, below 2^24), the Mul by `x_scale · w_scale` after it is the model's, and
/// the model computes what onnxruntime computes for it; without `codes`, calibration sees
/// the float model.
pub fn dynamic_to_float(model: &pb::ModelProto, codes: bool) -> Result<Option<pb::ModelProto>> {
    let g = model.graph.as_ref().ok_or_else(|| malformed("no graph"))?;
    let dyn_q: Vec<usize> = (0..g.node.len())
        .filter(|&i| {
            let n = &g.node[i];
            registry::is_default_domain(&n.domain) && n.op_type == "DynamicQuantizeLinear"
        })
        .collect();
    if dyn_q.is_empty() {
        return Ok(None);
    }
    let unsupported = |n: &pb::NodeProto, why: String| Error::UnsupportedOp {
        op: n.op_type.clone(),
        node: n.name.clone(),
        inputs: vec![],
        why,
    };
    let consumers = |name: &str| -> Vec<usize> {
        (0..g.node.len())
            .filter(|&i| g.node[i].input.iter().any(|s| s == name))
            .collect()
    };
    let init = |name: &str| g.initializer.iter().find(|t| t.name == name);
    let mut out = model.clone();
    let og = out.graph.as_mut().expect("checked above");
    let mut drop: HashSet<usize> = HashSet::new();
    // Node index → its replacement; value renames (a dropped Cast's output is its input's).
    let mut replace: HashMap<usize, pb::NodeProto> = HashMap::new();
    let mut rename: HashMap<String, String> = HashMap::new();
    // Node index → the nodes that take its place.
    let mut spell: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    for &d in &dyn_q {
        let dn = &g.node[d];
        if dn.input.len() != 1 || dn.output.len() != 3 {
            return Err(malformed(format!(
                "DynamicQuantizeLinear '{}' needs one input and three outputs",
                dn.name
            )));
        }
        let (x0, q, sc, z) = (&dn.input[0], &dn.output[0], &dn.output[1], &dn.output[2]);
        let x = &if codes {
            let (nodes, inits, xq) = dequantised_codes(x0, sc, &format!("{q}#codes"));
            og.initializer.extend(inits);
            spell.insert(d, nodes);
            xq
        } else {
            x0.clone()
        };
        let users = consumers(q);
        for &u in &users {
            let n = &g.node[u];
            let integer = registry::is_default_domain(&n.domain)
                && matches!(n.op_type.as_str(), "ConvInteger" | "MatMulInteger");
            if !integer
                || n.input[0] != *q
                || n.input.iter().skip(1).any(|s| s == q)
                || n.input.get(2).is_some_and(|s| !s.is_empty() && s != z)
            {
                return Err(unsupported(
                    dn,
                    format!(
                        "its codes feed {} '{}'; only ConvInteger and MatMulInteger (with its zero point) are undone",
                        n.op_type, n.name
                    ),
                ));
            }
            let w = n
                .input
                .get(1)
                .and_then(|w| init(w))
                .ok_or_else(|| unsupported(n, "weights must be an initializer".into()))?;
            let w = tensor_const(w)?;
            let wz = match n.input.get(3).filter(|s| !s.is_empty()) {
                Some(name) => tensor_const(init(name).ok_or_else(|| {
                    unsupported(n, "weight zero point must be an initializer".into())
                })?)?
                .ints(),
                None => vec![0],
            };
            let conv = n.op_type == "ConvInteger";
            let wv = w.ints();
            // Per output channel (axis 0) for a convolution, per column for a MatMul.
            let outer = if conv {
                w.dims.first().copied().unwrap_or(1)
            } else {
                1
            };
            let cols = if conv {
                1
            } else {
                w.dims.last().copied().unwrap_or(1)
            };
            if wz.len() != 1 && wz.len() != if conv { outer } else { cols } {
                return Err(unsupported(
                    n,
                    format!("weight zero point of {} values", wz.len()),
                ));
            }
            let per = wv.len() / outer.max(1);
            let f: Vec<u8> = wv
                .iter()
                .enumerate()
                .flat_map(|(i, &v)| {
                    let zi = if wz.len() == 1 {
                        0
                    } else if conv {
                        i / per.max(1)
                    } else {
                        i % cols.max(1)
                    };
                    ((v - wz[zi]) as f32).to_le_bytes()
                })
                .collect();
            let wname = format!("{}#float_w", n.output[0]);
            og.initializer.push(tensor(
                wname.clone(),
                w.dims.iter().map(|&d| d as i64).collect(),
                F32,
                f,
            ));
            let mut r = n.clone();
            r.op_type = if conv { "Conv" } else { "MatMul" }.into();
            r.input = vec![x.clone(), wname];
            // The int32 result's Casts to float go: their readers read the float result.
            for c in consumers(&n.output[0]) {
                let cn = &g.node[c];
                if cn.op_type == "Cast" && attr_i(cn, "to", 0) == F32 as i64 {
                    rename.insert(cn.output[0].clone(), n.output[0].clone());
                    drop.insert(c);
                }
            }
            replace.insert(u, r);
        }
        if codes {
            // The scale is the run-time scale the spelt-out nodes compute.
            drop.insert(d);
            continue;
        }
        // The scale is 1 now: a Mul of it by a constant is that constant.
        for u in consumers(sc) {
            let n = &g.node[u];
            let other = n.input.iter().find(|s| *s != sc);
            match other.and_then(|o| init(o)) {
                Some(t) if n.op_type == "Mul" && n.input.len() == 2 => {
                    let mut t = t.clone();
                    t.name = n.output[0].clone();
                    og.initializer.push(t);
                    drop.insert(u);
                }
                _ => {}
            }
        }
        if !og.initializer.iter().any(|t| &t.name == sc) {
            og.initializer
                .push(tensor(sc.clone(), vec![], F32, 1f32.to_le_bytes().to_vec()));
        }
        drop.insert(d);
    }
    let mut nodes = vec![];
    for (i, n) in g.node.iter().enumerate() {
        if let Some(v) = spell.remove(&i) {
            nodes.extend(v);
        }
        if drop.contains(&i) {
            continue;
        }
        let mut n = replace.remove(&i).unwrap_or_else(|| n.clone());
        for s in n.input.iter_mut() {
            if let Some(r) = rename.get(s) {
                *s = r.clone();
            }
        }
        nodes.push(n);
    }
    og.node = nodes;
    // A graph output that was a dropped Cast's keeps its name: the float result is renamed.
    for o in og.output.iter() {
        if let Some(src) = rename.get(&o.name) {
            for n in og.node.iter_mut() {
                for out in n.output.iter_mut() {
                    if out == src {
                        *out = o.name.clone();
                    }
                }
                for i in n.input.iter_mut() {
                    if i == src {
                        *i = o.name.clone();
                    }
                }
            }
        }
    }
    Ok(Some(out))
}

/// DynamicQuantizeLinear of `x` in float ops: `min` and `max` over the tensor widened to
/// include 0, `scale = (max - min) / 255` (1 when 0; written to `scale_out`), `zero =
/// round(clamp(-min / scale, 0, 255))`, `q = clamp(round(x / scale) + zero, 0, 255)`,
/// rounding half to even. Returns the nodes, their constants and the name of `q - zero`.
fn dequantised_codes(
    x: &str,
    scale_out: &str,
    p: &str,
) -> (Vec<pb::NodeProto>, Vec<pb::TensorProto>, String) {
    let scalar =
        |name: &str, v: f32| tensor(format!("{p}/{name}"), vec![], F32, v.to_le_bytes().to_vec());
    let inits = vec![scalar("0", 0.0), scalar("1", 1.0), scalar("255", 255.0)];
    let c = |name: &str| format!("{p}/{name}");
    let mut nodes = vec![];
    let mut op = |op: &str, out: &str, ins: &[String]| {
        let out = match out {
            "scale" => scale_out.to_string(),
            _ => c(out),
        };
        let mut n = node(op, out.clone(), ins.to_vec(), out.clone());
        if op == "ReduceMax" {
            n.attribute.push(pb::AttributeProto {
                name: "keepdims".into(),
                i: 1,
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                ..Default::default()
            });
        }
        nodes.push(n);
        out
    };
    let x = x.to_string();
    let hi = op("ReduceMax", "max", std::slice::from_ref(&x));
    let neg = op("Neg", "neg", std::slice::from_ref(&x));
    let nlo = op("ReduceMax", "negmin", &[neg]);
    let lo = op("Neg", "min", &[nlo]);
    let hi = op("Max", "max0", &[hi, c("0")]);
    let lo = op("Min", "min0", &[lo, c("0")]);
    let range = op("Sub", "range", &[hi, lo.clone()]);
    let s = op("Div", "scale255", &[range, c("255")]);
    let zero_s = op("Equal", "scale_is_0", &[s.clone(), c("0")]);
    let s = op("Where", "scale", &[zero_s, c("1"), s]);
    let lo_s = op("Div", "min_over_scale", &[lo, s.clone()]);
    let z = op("Sub", "zero_f", &[c("0"), lo_s]);
    let z = op("Clip", "zero_c", &[z, c("0"), c("255")]);
    let z = op("Round", "zero", &[z]);
    let xs = op("Div", "x_over_scale", &[x, s.clone()]);
    let r = op("Round", "x_round", &[xs]);
    let qz = op("Add", "q_f", &[r, z.clone()]);
    let q = op("Clip", "q", &[qz, c("0"), c("255")]);
    let d = op("Sub", "q_minus_zero", &[q, z]);
    (nodes, inits, d)
}

/// u8 scale and zero point covering `[lo, hi]` widened to include 0.
fn u8_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / 255.0).max(1e-8);
    let zero = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zero)
}

/// Bins of the histograms a percentile calibration reads its ranges from.
const HIST_BINS: usize = 2048;

/// The range from the `100 - p` to the `p` percentile of the values counted in `hist`
/// (equal bins over `[lo, hi]`): the lower edge of the bin where more than the
/// `(1 - p/100)` share of the values lies below, and the upper edge of the bin where more
/// than that share lies above, so each end is within one bin width of the exact
/// percentile.
pub fn percentile_range(hist: &[u64], lo: f32, hi: f32, p: f32) -> (f32, f32) {
    let total: u64 = hist.iter().sum();
    if total == 0 || hist.is_empty() || hi <= lo {
        return (lo, hi);
    }
    let cut = ((1.0 - f64::from(p) / 100.0).max(0.0) * total as f64).floor() as u64;
    let first = |bins: &mut dyn Iterator<Item = (usize, &u64)>| {
        let mut seen = 0;
        for (b, &c) in bins {
            seen += c;
            if seen > cut {
                return Some(b);
            }
        }
        None
    };
    let lb = first(&mut hist.iter().enumerate()).unwrap_or(0);
    let ub = first(&mut hist.iter().enumerate().rev()).unwrap_or(hist.len() - 1);
    let w = (hi - lo) / hist.len() as f32;
    let (a, b) = (lo + lb as f32 * w, (lo + (ub + 1) as f32 * w).min(hi));
    if a < b {
        (a, b)
    } else {
        (lo, hi)
    }
}

/// The float model `model` in QDQ form, with activation ranges measured on `samples`
/// (each: one f32 tensor per graph input, in graph-input order, of the shapes `opts`
/// fixes or the model declares).
pub fn quantise(
    model: &pb::ModelProto,
    opts: &ImportOptions,
    samples: &[Vec<Vec<f32>>],
) -> Result<(pb::ModelProto, CalibrationReport)> {
    let undone = dynamic_to_float(model, false)?;
    let model = undone.as_ref().unwrap_or(model);
    let g = model.graph.as_ref().ok_or_else(|| malformed("no graph"))?;
    if samples.is_empty() {
        return Err(Error::Invalid {
            what: "calibration needs at least one input".into(),
        });
    }
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let constants: HashSet<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .flat_map(|n| n.output.iter().map(|s| s.as_str()))
        .collect();
    let is_const = |s: &str| inits.contains(s) || constants.contains(s);
    // Graph inputs that are not initialisers, with their fixed shapes.
    let mut inputs: Vec<(String, Vec<usize>)> = vec![];
    for vi in &g.input {
        if inits.contains(vi.name.as_str()) {
            continue;
        }
        let shape = match opts.inputs.iter().find(|(n, _)| n == &vi.name) {
            Some((_, s)) => s.clone(),
            None => super::value_info_shape(vi)?,
        };
        inputs.push((vi.name.clone(), shape));
    }
    for (k, s) in samples.iter().enumerate() {
        if s.len() != inputs.len()
            || s.iter()
                .zip(&inputs)
                .any(|(v, (_, shape))| v.len() != shape.iter().product::<usize>())
        {
            return Err(Error::Invalid {
                what: format!("calibration input {k} does not match the model's input shapes"),
            });
        }
        if s.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("calibration input {k}"),
            });
        }
    }
    if g.node.iter().any(|n| {
        n.op_type.starts_with("QLinear")
            || matches!(
                n.op_type.as_str(),
                "QuantizeLinear" | "DequantizeLinear" | "DynamicQuantizeLinear"
            )
    }) {
        return Err(Error::Invalid {
            what: "the model is already quantised; compile it without --calibrate".into(),
        });
    }
    // Candidate activations: float inputs (not constants) and outputs of the ops above.
    let mut wanted: Vec<String> = vec![];
    let mut seen = HashSet::new();
    for n in &g.node {
        if !registry::is_default_domain(&n.domain) || !QUANTISED.contains(&n.op_type.as_str()) {
            continue;
        }
        // Only the data inputs: Clip bounds, Pad amounts and BatchNormalization's
        // statistics stay as they are.
        let data_inputs = match n.op_type.as_str() {
            "Conv" | "ConvTranspose" | "Gemm" | "Clip" | "Pad" | "BatchNormalization" | "PRelu"
            | "ReduceMean" | "AveragePool" => 1,
            // A MatMul by a constant is a Gemm; by another activation both are data.
            "MatMul" if n.input.get(1).is_some_and(|b| is_const(b)) => 1,
            _ => n.input.len(),
        };
        for s in n.input.iter().take(data_inputs).chain(&n.output) {
            if !s.is_empty() && !is_const(s) && seen.insert(s.clone()) {
                wanted.push(s.clone());
            }
        }
    }
    // Run the float model with every candidate as an output.
    let mut probe = model.clone();
    {
        let pg = probe.graph.as_mut().expect("checked above");
        let outs: HashSet<String> = pg.output.iter().map(|o| o.name.clone()).collect();
        for w in &wanted {
            if !outs.contains(w) {
                pg.output.push(pb::ValueInfoProto {
                    name: w.clone(),
                    ..Default::default()
                });
            }
        }
    }
    let run_err = |e: TractError| Error::Invalid {
        what: format!("running the float model for calibration: {e:#}"),
    };
    let mut m = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(&probe)
        .map_err(run_err)?;
    for (i, (_, shape)) in inputs.iter().enumerate() {
        m = m
            .with_input_fact(i, f32::fact(shape.clone()).into())
            .map_err(run_err)?;
    }
    let runnable = m
        .into_optimized()
        .map_err(run_err)?
        .into_runnable()
        .map_err(run_err)?;
    let out_names: Vec<String> = probe
        .graph
        .as_ref()
        .expect("checked above")
        .output
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let run = |s: &Vec<Vec<f32>>| -> Result<TVec<TValue>> {
        let tv: TVec<TValue> = s
            .iter()
            .zip(&inputs)
            .map(|(v, (_, shape))| {
                Tensor::from_shape(shape, v)
                    .map(|t| t.into())
                    .map_err(run_err)
            })
            .collect::<Result<_>>()?;
        runnable.run(tv).map_err(run_err)
    };
    let mut range: HashMap<String, (f32, f32)> = HashMap::new();
    let mut not_float: HashSet<String> = HashSet::new();
    for s in samples {
        let outs = run(s)?;
        // Graph inputs are not outputs of the run: their ranges come from the samples.
        for (v, (name, _)) in s.iter().zip(&inputs) {
            let (lo, hi) = v
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let r = range.entry(name.clone()).or_insert((lo, hi));
            *r = (r.0.min(lo), r.1.max(hi));
        }
        for (name, t) in out_names.iter().zip(outs.iter()) {
            match t.to_plain_array_view::<f32>() {
                Ok(view) => {
                    let (lo, hi) = view
                        .iter()
                        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                    if !(lo.is_finite() && hi.is_finite()) {
                        return Err(Error::NonFinite {
                            what: format!("value of '{name}' during calibration"),
                        });
                    }
                    let r = range.entry(name.clone()).or_insert((lo, hi));
                    *r = (r.0.min(lo), r.1.max(hi));
                }
                Err(_) => {
                    not_float.insert(name.clone());
                }
            }
        }
    }
    if let super::Calibration::Percentile(p) = opts.calibration {
        // A second pass: every value into a histogram over its tensor's min-max range.
        let mut hist: HashMap<String, Vec<u64>> = range
            .keys()
            .map(|k| (k.clone(), vec![0u64; HIST_BINS]))
            .collect();
        let mut add = |name: &str, values: &mut dyn Iterator<Item = f32>| {
            if let (Some(h), Some(&(lo, hi))) = (hist.get_mut(name), range.get(name)) {
                let w = (hi - lo).max(f32::MIN_POSITIVE);
                for x in values {
                    h[((((x - lo) / w) * HIST_BINS as f32) as usize).min(HIST_BINS - 1)] += 1;
                }
            }
        };
        for s in samples {
            let outs = run(s)?;
            for (v, (name, _)) in s.iter().zip(&inputs) {
                add(name, &mut v.iter().copied());
            }
            for (name, t) in out_names.iter().zip(outs.iter()) {
                if let Ok(view) = t.to_plain_array_view::<f32>() {
                    add(name, &mut view.iter().copied());
                }
            }
        }
        for (name, h) in hist {
            let (lo, hi) = range[&name];
            range.insert(name, percentile_range(&h, lo, hi, p));
        }
    }
    let quantised: HashSet<String> = wanted
        .into_iter()
        .filter(|w| !not_float.contains(w) && range.contains_key(w))
        .collect();
    // A tensor read only by a Relu or a Clip (ReLU6) takes that activation's output range,
    // as onnxruntime's quantiser folds them: the clamp happens in the quantisation, and the
    // activation after it is exact on the codes that are left.
    let mut readers: HashMap<&str, Vec<&pb::NodeProto>> = HashMap::new();
    for n in &g.node {
        for i in &n.input {
            readers.entry(i.as_str()).or_default().push(n);
        }
    }
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    for w in &quantised {
        let Some([r]) = readers.get(w.as_str()).map(|v| v.as_slice()) else {
            continue;
        };
        if outputs.contains(w.as_str()) || !matches!(r.op_type.as_str(), "Relu" | "Clip") {
            continue;
        }
        if let Some(&(lo, hi)) = r.output.first().and_then(|o| range.get(o)) {
            if lo >= 0.0 {
                range.insert(w.clone(), (lo, hi));
            }
        }
    }
    let params: HashMap<String, (f32, u8)> = quantised
        .iter()
        .map(|w| (w.clone(), u8_params(range[w].0, range[w].1)))
        .collect();

    // The rewritten graph.
    let mut out = g.clone();
    out.node.clear();
    let mut report = CalibrationReport {
        samples: samples.len(),
        activations: quantised.len(),
        weights: 0,
    };
    let mut pre: Vec<pb::NodeProto> = vec![];
    let add_qparams = |out: &mut pb::GraphProto, name: &str, (s, z): (f32, u8)| {
        out.initializer.push(tensor(
            format!("{name}#scale"),
            vec![],
            F32,
            s.to_le_bytes().to_vec(),
        ));
        out.initializer
            .push(tensor(format!("{name}#zero"), vec![], U8, vec![z]));
    };
    let qdq = |name: &str, src: String, dst: String| -> [pb::NodeProto; 2] {
        [
            node(
                "QuantizeLinear",
                format!("{name}#Q"),
                vec![src, format!("{name}#scale"), format!("{name}#zero")],
                format!("{name}#q"),
            ),
            node(
                "DequantizeLinear",
                format!("{name}#DQ"),
                vec![
                    format!("{name}#q"),
                    format!("{name}#scale"),
                    format!("{name}#zero"),
                ],
                dst,
            ),
        ]
    };
    // Graph inputs: quantised at the start, consumers read the dequantised copy.
    let mut rename: HashMap<String, String> = HashMap::new();
    for (name, _) in &inputs {
        if let Some(&p) = params.get(name) {
            add_qparams(&mut out, name, p);
            pre.extend(qdq(name, name.clone(), format!("{name}#dq")));
            rename.insert(name.clone(), format!("{name}#dq"));
        }
    }
    // Weights and biases of convolutions and Gemms, per node.
    let mut drop_inits: HashSet<String> = HashSet::new();
    let mut body: Vec<pb::NodeProto> = vec![];
    for (k, n0) in g.node.iter().enumerate() {
        let mut n = n0.clone();
        for i in n.input.iter_mut() {
            if let Some(r) = rename.get(i) {
                *i = r.clone();
            }
        }
        let conv = n.op_type == "Conv";
        let conv_t = n.op_type == "ConvTranspose";
        // MatMul by constant [K, N] weights quantises like a Gemm with transB = 0.
        let gemm = n.op_type == "Gemm"
            || (n.op_type == "MatMul"
                && n.input
                    .get(1)
                    .and_then(|w| float_init(g, w))
                    .is_some_and(|(d, _)| d.len() == 2));
        let x_q = n0.input.first().and_then(|x| params.get(x)).copied();
        if let (true, Some((sx, _))) = (
            (conv || conv_t || gemm) && registry::is_default_domain(&n.domain),
            x_q,
        ) {
            if let Some((wd, w)) = n.input.get(1).and_then(|w| float_init(g, w)) {
                let trans_b = attr_i(&n, "transB", 0) == 1;
                // The output-channel axis: 0 of OIHW and of Gemm's [N, K], 1 of [K, N] and
                // of ConvTranspose's [C_in, C_out, kH, kW].
                let axis = if conv_t || (gemm && !trans_b) { 1 } else { 0 };
                if wd.len() >= 2 {
                    let oc = wd[axis];
                    let inner: usize = wd[axis + 1..].iter().product();
                    let ch = |j: usize| (j / inner) % oc;
                    let mut amax = vec![0f32; oc];
                    for (j, &v) in w.iter().enumerate() {
                        if !v.is_finite() {
                            return Err(Error::NonFinite {
                                what: format!("weights of '{}'", n.name),
                            });
                        }
                        amax[ch(j)] = amax[ch(j)].max(v.abs());
                    }
                    let sw: Vec<f32> = amax
                        .iter()
                        .map(|&a| if a > 0.0 { a / 127.0 } else { 1.0 })
                        .collect();
                    let q: Vec<u8> = w
                        .iter()
                        .enumerate()
                        .map(|(j, &v)| (v / sw[ch(j)]).round().clamp(-127.0, 127.0) as i8 as u8)
                        .collect();
                    let wn = format!("{}#w{k}", n.input[1]);
                    let dims: Vec<i64> = wd.iter().map(|&d| d as i64).collect();
                    out.initializer.push(tensor(format!("{wn}#q"), dims, I8, q));
                    out.initializer.push(tensor(
                        format!("{wn}#scale"),
                        vec![oc as i64],
                        F32,
                        sw.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ));
                    out.initializer.push(tensor(
                        format!("{wn}#zero"),
                        vec![oc as i64],
                        I8,
                        vec![0; oc],
                    ));
                    let mut dq = node(
                        "DequantizeLinear",
                        format!("{wn}#DQ"),
                        vec![
                            format!("{wn}#q"),
                            format!("{wn}#scale"),
                            format!("{wn}#zero"),
                        ],
                        wn.clone(),
                    );
                    dq.attribute.push(pb::AttributeProto {
                        name: "axis".into(),
                        i: axis as i64,
                        r#type: pb::attribute_proto::AttributeType::Int as i32,
                        ..Default::default()
                    });
                    body.push(dq);
                    drop_inits.insert(n.input[1].clone());
                    n.input[1] = wn;
                    report.weights += 1;
                    // The bias, in units of x_scale·w_scale[c].
                    if let Some((bd, b)) = n.input.get(2).and_then(|b| float_init(g, b)) {
                        if b.len() == oc && bd.iter().product::<usize>() == oc {
                            let bs: Vec<f32> = sw.iter().map(|&s| s * sx).collect();
                            let bq: Vec<u8> = b
                                .iter()
                                .zip(&bs)
                                .flat_map(|(&v, &s)| ((v / s).round() as i32).to_le_bytes())
                                .collect();
                            let bn = format!("{}#b{k}", n.input[2]);
                            out.initializer.push(tensor(
                                format!("{bn}#q"),
                                vec![oc as i64],
                                I32,
                                bq,
                            ));
                            out.initializer.push(tensor(
                                format!("{bn}#scale"),
                                vec![oc as i64],
                                F32,
                                bs.iter().flat_map(|v| v.to_le_bytes()).collect(),
                            ));
                            let mut dq = node(
                                "DequantizeLinear",
                                format!("{bn}#DQ"),
                                vec![format!("{bn}#q"), format!("{bn}#scale")],
                                bn.clone(),
                            );
                            dq.attribute.push(pb::AttributeProto {
                                name: "axis".into(),
                                i: 0,
                                r#type: pb::attribute_proto::AttributeType::Int as i32,
                                ..Default::default()
                            });
                            body.push(dq);
                            drop_inits.insert(n.input[2].clone());
                            n.input[2] = bn;
                        }
                    }
                }
            }
        }
        // Outputs: the node writes `T#f`, quantised into `T` for every reader.
        let mut after = vec![];
        for o in n.output.iter_mut() {
            if let Some(&p) = params.get(o.as_str()) {
                let name = o.clone();
                add_qparams(&mut out, &name, p);
                *o = format!("{name}#f");
                after.extend(qdq(&name, o.clone(), name.clone()));
            }
        }
        body.push(n);
        body.extend(after);
    }
    // Constant nodes whose value became quantised weights are dropped unless still read.
    let read: HashSet<String> = body
        .iter()
        .chain(&pre)
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    body.retain(|n| {
        !(n.op_type == "Constant"
            && n.output
                .first()
                .is_some_and(|o| drop_inits.contains(o) && !read.contains(o)))
    });
    // Initialisers still read elsewhere (a weight shared with a float op) stay.
    let still_read: HashSet<&str> = body
        .iter()
        .chain(&pre)
        .flat_map(|n| n.input.iter().map(|s| s.as_str()))
        .collect();
    out.initializer
        .retain(|t| !drop_inits.contains(&t.name) || still_read.contains(t.name.as_str()));
    out.node = pre;
    out.node.extend(body);
    let mut m = model.clone();
    m.graph = Some(out);
    Ok((m, report))
}
