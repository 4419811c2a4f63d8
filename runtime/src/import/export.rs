//! Export: the backbone's own ONNX graph with a trained head appended, as one ONNX model
//! any runtime can serve (feature `onnx`).
//!
//! The head reads the adapter's tap by its ONNX tensor name (the plan names taps after
//! the tensors they were compiled from; in a QDQ graph, the dequantised copy of the tap
//! when there is one, which is what edgetune's int8 tap holds) and adds an output
//! `scores` `[N, classes]` in the adapter's class order; the class names go in the
//! model's metadata (`edgetune.classes`, one per line). Methods that are a closed-form
//! function of one tap are expressible: `ncm` (cosine to the normalised prototypes),
//! `linear` (L2-normalised pooled features, then `xW + b`) and `moment` (normalised
//! per-channel mean and standard deviation, then the same). `ladder` and `query` (gated
//! side networks and attention over several taps) and the tail methods (a retrained copy
//! of the backbone's last blocks) are refused with a typed error.

use super::parse;
use super::value::malformed;
use crate::adapt::{Adapter, Method};
use crate::error::{Error, Result};
use crate::plan::Plan;
use prost::Message;
use tract_onnx::pb;

fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[usize], v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, v: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: alloc::vec![v.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Appends head nodes, every name under the `edgetune_head/` prefix.
struct Head<'g> {
    g: &'g mut pb::GraphProto,
    opset: i64,
    n: usize,
}

impl Head<'_> {
    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> String {
        self.n += 1;
        let out = format!("edgetune_head/{}_{op}", self.n);
        self.g.node.push(pb::NodeProto {
            name: out.clone(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: alloc::vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn constant(&mut self, t: pb::TensorProto) -> String {
        let name = t.name.clone();
        self.g.initializer.push(t);
        name
    }

    /// Mean over `axes` (ReduceMean's axes moved from attribute to input at opset 18).
    fn mean(&mut self, x: &str, axes: &[i64], keep: bool) -> String {
        if self.opset >= 18 {
            let a = self.constant(i64_tensor(&format!("edgetune_head/axes{}", self.n), axes));
            self.node(
                "ReduceMean",
                &[x, &a],
                alloc::vec![attr_int("keepdims", keep as i64)],
            )
        } else {
            self.node(
                "ReduceMean",
                &[x],
                alloc::vec![attr_ints("axes", axes), attr_int("keepdims", keep as i64)],
            )
        }
    }

    fn l2(&mut self, x: &str) -> String {
        self.node(
            "LpNormalization",
            &[x],
            alloc::vec![attr_int("axis", -1), attr_int("p", 2)],
        )
    }

    fn affine(&mut self, x: &str, w: &[f32], dim: usize, classes: usize, b: &[f32]) -> String {
        let w = self.constant(f32_tensor("edgetune_head/w", &[dim, classes], w));
        let b = self.constant(f32_tensor("edgetune_head/b", &[classes], b));
        let y = self.node("MatMul", &[x, &w], alloc::vec![]);
        self.node("Add", &[&y, &b], alloc::vec![])
    }
}

/// The ONNX model `model` (the one the plan was compiled from) with the adapter's head
/// appended and its `scores` output.
pub fn export_onnx(model: &[u8], plan: &Plan, adapter: &Adapter) -> Result<alloc::vec::Vec<u8>> {
    if adapter.plan_hash != plan.hash() {
        return Err(Error::PlanMismatch {
            expected: plan.hash(),
            got: adapter.plan_hash,
        });
    }
    let mut m = parse(model)?;
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(13, |o| o.version);
    let g = m.graph.as_mut().ok_or_else(|| malformed("no graph"))?;
    let (tap, dims) = adapter
        .taps
        .first()
        .cloned()
        .ok_or_else(|| malformed("adapter reads no tap"))?;
    let unsupported = |why: &str| Error::Invalid {
        what: format!("export of a {} adapter: {why}", adapter.method.name()),
    };
    if !matches!(
        adapter.method,
        Method::Ncm(_) | Method::Linear(_) | Method::Moment(_)
    ) {
        return Err(unsupported(
            "only ncm, linear and moment heads are a closed-form function of one tap; \
             ladder and query run side networks over several taps and the tail methods a \
             retrained copy of the backbone's blocks",
        ));
    }
    // The tap's ONNX layout: the plan keeps the logical (ONNX) shape.
    let shape = plan
        .outputs
        .iter()
        .chain(&plan.taps)
        .find(|p| p.name == tap)
        .map(|p| plan.tensors[p.tensor as usize].logical_shape())
        .ok_or_else(|| malformed(format!("plan has no tap '{tap}'")))?;
    let one_run: usize = shape.iter().product();
    if dims.len() != one_run {
        return Err(unsupported(&format!(
            "it reads {} values of '{tap}' where one run of the model gives {one_run}: the \
             windows of an audio context (the plan's `audio:oww:FRAMES:CONTEXT`) are several \
             runs, which one ONNX graph of the backbone does not hold",
            dims.len()
        )));
    }
    let produced =
        g.node.iter().any(|n| n.output.contains(&tap)) || g.input.iter().any(|i| i.name == tap);
    if !produced {
        return Err(Error::Invalid {
            what: format!(
                "the ONNX model has no tensor '{tap}': export needs the model the plan was compiled from"
            ),
        });
    }
    // Where the model declares the tensor's shape, it must be the plan's (another
    // model may name a tensor alike).
    let declared = g
        .output
        .iter()
        .chain(&g.value_info)
        .chain(&g.input)
        .find(|v| v.name == tap)
        .and_then(|v| {
            let pb::type_proto::Value::TensorType(t) = v.r#type.as_ref()?.value.as_ref()?;
            t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                            v as usize
                        }
                        _ => 1,
                    })
                    .collect::<alloc::vec::Vec<usize>>()
            })
        });
    if let Some(d) = declared {
        if d.iter().product::<usize>() != shape.iter().product::<usize>() {
            return Err(Error::ShapeMismatch {
                op: format!("export: tensor '{tap}' of the ONNX model (not the plan's model?)"),
                expected: shape.clone(),
                got: d,
            });
        }
    }
    // In a QDQ graph the tap's quantised value is the DequantizeLinear after its
    // QuantizeLinear: read that, as edgetune's int8 tap does.
    let consumer = |g: &pb::GraphProto, t: &str, op: &str| {
        g.node
            .iter()
            .find(|n| n.op_type == op && n.input.first().map(|s| s.as_str()) == Some(t))
            .and_then(|n| n.output.first().cloned())
    };
    let source = consumer(g, &tap, "QuantizeLinear")
        .and_then(|q| consumer(g, &q, "DequantizeLinear"))
        .unwrap_or(tap.clone());
    // Channel axis: 1 for NCHW maps, the last for token sequences and vectors.
    let reduce: alloc::vec::Vec<i64> = match shape.len() {
        4 => alloc::vec![2, 3],
        3 => alloc::vec![1],
        2 => alloc::vec![],
        r => return Err(unsupported(&format!("tap '{tap}' has rank {r}"))),
    };
    let (classes, dim) = (adapter.classes.len(), dims.dim);
    let mut h = Head { g, opset, n: 0 };
    let pooled = |h: &mut Head| {
        if reduce.is_empty() {
            source.clone()
        } else {
            h.mean(&source, &reduce, false)
        }
    };
    let scores = match &adapter.method {
        Method::Ncm(n) => {
            // Rows of the prototypes, normalised; an empty class scores -inf as in edgetune.
            let mut p = alloc::vec![0.0f32; dim * classes];
            let mut bias = alloc::vec![0.0f32; classes];
            for c in 0..classes {
                let s = n.sums.get(c).filter(|_| n.counts[c] > 0);
                match s {
                    Some(s) => {
                        let norm = libm::sqrtf(s.iter().map(|v| v * v).sum::<f32>())
                            .max(f32::MIN_POSITIVE);
                        for (i, v) in s.iter().enumerate() {
                            p[i * classes + c] = v / norm;
                        }
                    }
                    None => bias[c] = f32::NEG_INFINITY,
                }
            }
            let f = pooled(&mut h);
            let f = h.l2(&f);
            h.affine(&f, &p, dim, classes, &bias)
        }
        Method::Linear(l) => {
            let f = pooled(&mut h);
            let f = h.l2(&f);
            h.affine(&f, &l.w, l.dim, classes, &l.b)
        }
        Method::Moment(l) => {
            if reduce.is_empty() {
                return Err(unsupported(
                    "the moment probe needs a map or a token sequence",
                ));
            }
            let mu_k = h.mean(&source, &reduce, true);
            let d = h.node("Sub", &[&source, &mu_k], alloc::vec![]);
            let d2 = h.node("Mul", &[&d, &d], alloc::vec![]);
            let var = h.mean(&d2, &reduce, false);
            let sd = h.node("Sqrt", &[&var], alloc::vec![]);
            let mu = h.mean(&source, &reduce, false);
            let half = h.constant(f32_tensor(
                "edgetune_head/inv_sqrt2",
                &[],
                &[core::f32::consts::FRAC_1_SQRT_2],
            ));
            let (mu, sd) = (h.l2(&mu), h.l2(&sd));
            let mu = h.node("Mul", &[&mu, &half], alloc::vec![]);
            let sd = h.node("Mul", &[&sd, &half], alloc::vec![]);
            let f = h.node("Concat", &[&mu, &sd], alloc::vec![attr_int("axis", -1)]);
            let f = h.l2(&f);
            h.affine(&f, &l.w, l.dim, classes, &l.b)
        }
        _ => unreachable!("refused above"),
    };
    let g = h.g;
    g.node.push(pb::NodeProto {
        name: "edgetune_head/scores".into(),
        op_type: "Identity".into(),
        input: alloc::vec![scores],
        output: alloc::vec!["scores".into()],
        ..Default::default()
    });
    g.output.push(pb::ValueInfoProto {
        name: "scores".into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    });
    m.metadata_props.push(pb::StringStringEntryProto {
        key: "edgetune.classes".into(),
        value: adapter.classes.join("\n"),
    });
    m.metadata_props.push(pb::StringStringEntryProto {
        key: "edgetune.method".into(),
        value: adapter.method.name().into(),
    });
    Ok(m.encode_to_vec())
}
