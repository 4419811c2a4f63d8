//! ONNX import (feature `onnx`): tract-onnx parses the protobuf; edgetune's lowering maps
//! the graph onto its own op set, folding QDQ pairs into int8 kernels.
//!
//! The lowering reads the parsed ONNX graph rather than tract's typed graph: the QDQ
//! patterns are visible there as written, and tract's internal op structs are not a stable
//! interface to match on.
//!
//! Every node goes through one table, [`registry`]: `(domain, op) → lowering`, with one
//! file per op family (`quant`, `conv`, `gemm`, `elementwise`, `norm`, `shape`). The table
//! is the list of supported ops; [`check`] lists every node a model needs that it lacks.

pub mod calibrate;
mod chains;
mod control;
mod conv;
mod elementwise;
mod export;
mod fold;
mod gemm;
mod logic;
mod lower;
mod norm;
mod quant;
pub mod registry;
mod shape;
mod value;

use crate::error::{Error, Result};
use crate::exec::plan_arena;
use crate::plan::{DType, Op, PlanParts, Port, Q8};
pub use export::export_onnx;
use lower::Lowering;
use std::collections::{HashMap, HashSet};
use tract_onnx::pb;
use tract_onnx::prelude::Framework;
use value::{malformed, tensor_const, Builder, Val};

/// Which intermediate tensors to expose.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Taps {
    #[default]
    None,
    /// The output of each residual block and of the last feature map.
    Blocks,
    Names(Vec<String>),
}

#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Fixed input shapes by name; symbolic batch dimensions default to 1.
    pub inputs: Vec<(String, Vec<usize>)>,
    pub taps: Taps,
    /// Extra metadata stored in the plan (preprocessing, source).
    pub meta: Vec<(String, String)>,
    /// Graph inputs fixed to a value at compile time, by name: `(name, values)`, in the
    /// input's shape (its declared or `inputs` shape; one value for a scalar). A sample
    /// rate, a mode flag, or weights a graph takes as inputs become constants, fold, and
    /// leave the plan's inputs.
    pub constants: Vec<(String, Vec<f32>)>,
    /// How `--calibrate` turns the values an activation took into its range.
    pub calibration: Calibration,
    /// Keeps every elementwise float op on its own instead of fusing runs of them into
    /// chains, lowers a transposed convolution whose kernel equals its stride as the
    /// dilated convolution it equals rather than a 1×1 convolution and a transpose, and a
    /// quantised `x·f(x)` as float ops rather than one table, and a quantised depthwise
    /// convolution with a stride of its own per axis as a dense convolution rather than
    /// row by row on the depthwise kernel (each gives the same bits): the fused plan's
    /// reference.
    pub unfused: bool,
}

/// Activation ranges of a calibrated model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Calibration {
    /// The smallest and largest value seen (widened to include 0), as onnxruntime's
    /// MinMax calibrator.
    #[default]
    MinMax,
    /// The values at the `100 - p` and `p` percentiles of everything seen (from a
    /// 2048-bin histogram over the min-max range, widened to include 0): a few outliers
    /// then do not stretch the step of every other value. `p` in (50, 100].
    Percentile(f32),
}

/// A standalone serialised TensorProto (the ONNX test data's `input_0.pb`) as f32 values
/// with its dims: integers and u8/i8 codes converted exactly (below 2^24).
pub fn read_tensor(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    use prost::Message;
    let t = pb::TensorProto::decode(bytes).map_err(|e| malformed(format!("tensor: {e}")))?;
    let c = tensor_const(&t)?;
    let v = c
        .f32s()
        .unwrap_or_else(|| c.ints().iter().map(|&x| x as f32).collect());
    Ok((c.dims, v))
}

/// Parses ONNX bytes with tract-onnx.
pub fn parse(bytes: &[u8]) -> Result<pb::ModelProto> {
    let mut r = bytes;
    tract_onnx::onnx()
        .proto_model_for_read(&mut r)
        .map_err(|e| malformed(format!("{e:#}")))
}

pub fn import_path(path: &std::path::Path, opts: &ImportOptions) -> Result<PlanParts> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    import_bytes(&bytes, opts)
}

/// Imports a float ONNX model quantised to int8 with activation ranges measured on
/// `samples` (one f32 tensor per graph input each; see [`calibrate::quantise`]).
pub fn import_calibrated(
    bytes: &[u8],
    opts: &ImportOptions,
    samples: &[Vec<Vec<f32>>],
) -> Result<(PlanParts, calibrate::CalibrationReport)> {
    let (m, report) = calibrate::quantise(&parse(bytes)?, opts, samples)?;
    Ok((import_model(&m, opts)?, report))
}

/// Imports an ONNX model into plan parts; the first node that does not lower is the error.
pub fn import_bytes(bytes: &[u8], opts: &ImportOptions) -> Result<PlanParts> {
    import_model(&parse(bytes)?, opts)
}

/// A node that keeps a model from importing, as [`check`] lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Unsupported {
    pub op: String,
    /// `ai.onnx` for the default domain.
    pub domain: String,
    pub node: String,
    pub why: String,
}

/// Lists what keeps the model `bytes` from importing, without stopping at the first: every
/// node whose `(domain, op)` has no entry in the [`registry`], or, when every op has one,
/// the first lowering error (a form of a registered op that does not lower) as a single
/// entry. Empty when the model imports. Errs only when the file does not parse.
pub fn check(bytes: &[u8], opts: &ImportOptions) -> Result<Vec<Unsupported>> {
    let model = parse(bytes)?;
    // A ConvInteger model imports as the float model it came from: that is what to check.
    let conv_integer = model.graph.as_ref().is_some_and(|g| {
        g.node
            .iter()
            .any(|n| registry::is_default_domain(&n.domain) && n.op_type == "ConvInteger")
    });
    let model = match conv_integer {
        true => calibrate::dynamic_to_float(&model, true)?.unwrap_or(model),
        false => model,
    };
    let graph = model.graph.as_ref().ok_or_else(|| malformed("no graph"))?;
    let domain = |n: &pb::NodeProto| {
        if registry::is_default_domain(&n.domain) {
            registry::ONNX.to_string()
        } else {
            n.domain.clone()
        }
    };
    let missing: Vec<Unsupported> = graph
        .node
        .iter()
        .filter(|n| !registry::is_supported(&n.domain, &n.op_type))
        .map(|n| Unsupported {
            op: n.op_type.clone(),
            domain: domain(n),
            node: n.name.clone(),
            why: if registry::is_default_domain(&n.domain) {
                registry::missing_why(&n.op_type)
            } else {
                format!("no lowering for ops of domain {}", n.domain)
            },
        })
        .collect();
    if !missing.is_empty() {
        return Ok(missing);
    }
    Ok(match import_model(&model, opts) {
        Ok(_) => vec![],
        Err(Error::UnsupportedOp {
            op,
            node,
            inputs,
            why,
        }) => {
            let domain = graph
                .node
                .iter()
                .find(|n| n.name == node && n.op_type == op)
                .map_or_else(|| registry::ONNX.to_string(), domain);
            let why = if inputs.is_empty() {
                why
            } else {
                format!("{why} (input shapes {inputs:?})")
            };
            vec![Unsupported {
                op,
                domain,
                node,
                why,
            }]
        }
        // Not tied to one node (a shape, a constant, the graph's outputs).
        Err(e) => vec![Unsupported {
            op: String::new(),
            domain: String::new(),
            node: String::new(),
            why: e.to_string(),
        }],
    })
}

fn import_model(model: &pb::ModelProto, opts: &ImportOptions) -> Result<PlanParts> {
    import_at(model, opts, 0)
}

/// How many nodes (an `If` taking its branch, an `LSTM` spelt out) may be replaced by
/// others, each replacement lowering the graph again.
const MAX_EXPANSIONS: usize = 256;

fn import_at(model: &pb::ModelProto, opts: &ImportOptions, depth: usize) -> Result<PlanParts> {
    let graph = model.graph.as_ref().ok_or_else(|| malformed("no graph"))?;
    // Dynamically quantised convolutions (ConvInteger) have no int8 form here: the model
    // is turned back into its float model (the weights as the producer rounded them) and
    // runs in float; `--calibrate` quantises it statically instead.
    let conv_integer = graph
        .node
        .iter()
        .any(|n| registry::is_default_domain(&n.domain) && n.op_type == "ConvInteger");
    if conv_integer {
        if let Some(float) = calibrate::dynamic_to_float(model, true)? {
            let mut opts = opts.clone();
            opts.meta.push((
                "dynamic_quantisation".into(),
                "ConvInteger and MatMulInteger run in float on the values of the codes quantised at run time".into(),
            ));
            return import_at(&float, &opts, depth);
        }
    }
    let expanded = registry::rewrite_forms(graph)?;
    let graph = expanded.as_ref().unwrap_or(graph);
    let mut lw = Lowering {
        graph,
        vals: HashMap::new(),
        consumers: HashMap::new(),
        skip: HashSet::new(),
        b: Builder {
            tensors: vec![],
            ops: vec![],
            blob: vec![],
        },
        produced: HashMap::new(),
        block_taps: vec![],
        int_names: HashSet::new(),
        floated: HashMap::new(),
        expand: None,
        plain: opts.unfused,
    };
    for t in &graph.initializer {
        lw.vals.insert(t.name.clone(), Val::Const(tensor_const(t)?));
    }
    for (i, n) in graph.node.iter().enumerate() {
        // Every lowering reads the first output's name, but an LSTM's outputs are each
        // optional (its spelt-out cell writes those that are named).
        let named = match n.op_type.as_str() {
            "LSTM" => n.output.iter().any(|o| !o.is_empty()),
            _ => n.output.first().is_some_and(|o| !o.is_empty()),
        };
        if !named {
            return Err(malformed(format!(
                "node '{}' ({}) has no output",
                n.name, n.op_type
            )));
        }
        for inp in &n.input {
            lw.consumers.entry(inp.clone()).or_default().push(i);
        }
    }
    for (name, values) in &opts.constants {
        let Some(vi) = graph.input.iter().find(|vi| &vi.name == name) else {
            return Err(Error::Invalid {
                what: format!(
                    "constant for '{name}', which is not an input of the model (inputs: {:?})",
                    graph
                        .input
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                ),
            });
        };
        let dims = match opts.inputs.iter().find(|(n, _)| n == name) {
            Some((_, s)) => s.clone(),
            None => value_info_shape(vi).unwrap_or_else(|_| vec![values.len()]),
        };
        if dims.iter().product::<usize>() != values.len() || values.iter().any(|v| !v.is_finite()) {
            return Err(Error::ShapeMismatch {
                op: format!("constant for input '{name}'"),
                expected: dims,
                got: vec![values.len()],
            });
        }
        use pb::type_proto::Value as TV;
        let elem = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(TV::TensorType(t)) => t.elem_type,
            _ => 1,
        };
        let data = if matches!(elem, 1 | 10 | 11 | 16) {
            value::Data::F32(values.clone())
        } else {
            value::Data::I64(values.iter().map(|&v| v.round() as i64).collect())
        };
        lw.vals
            .insert(name.clone(), Val::Const(value::Const { dims, data }));
    }
    let mut inputs = vec![];
    for vi in &graph.input {
        if lw.vals.contains_key(&vi.name) {
            continue;
        }
        let shape = match opts.inputs.iter().find(|(n, _)| n == &vi.name) {
            Some((_, s)) => s.clone(),
            None => value_info_shape(vi)?,
        };
        // Any batch: the ops whose geometry is one image's run once per image.
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::ShapeMismatch {
                op: format!("input '{}'", vi.name),
                expected: vec![1],
                got: shape,
            });
        }
        use pb::type_proto::Value as TV;
        let elem = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(TV::TensorType(t)) => t.elem_type,
            _ => 1,
        };
        if !matches!(elem, 1 | 10 | 11 | 16) {
            lw.int_names.insert(vi.name.clone());
        }
        let t = lw.b.tensor(&vi.name, DType::F32, shape, false, None);
        lw.vals.insert(vi.name.clone(), Val::Act(t));
        inputs.push(Port {
            name: vi.name.clone(),
            tensor: t,
        });
    }
    for i in 0..graph.node.len() {
        lw.node(i)?;
        if let Some(e) = lw.expand.take() {
            if depth >= MAX_EXPANSIONS {
                return Err(Error::Invalid {
                    what: format!(
                        "more than {MAX_EXPANSIONS} nested If branches and LSTMs to spell out"
                    ),
                });
            }
            let mut m = model.clone();
            let mut g = graph.clone();
            let rest = g.node.split_off(i + 1);
            g.node.pop();
            g.node.extend(e.nodes);
            g.node.extend(rest);
            g.initializer.extend(e.initializers);
            m.graph = Some(g);
            return import_at(&m, opts, depth + 1);
        }
    }
    let mut outputs = vec![];
    for o in &graph.output {
        let v = lw
            .vals
            .get(&o.name)
            .cloned()
            .ok_or_else(|| malformed(format!("output '{}' is never produced", o.name)))?;
        let t = match v {
            Val::Deq(t) => {
                let ti = lw.b.tensors[t as usize].clone();
                let shape = if ti.nhwc
                    && ti.shape.iter().skip(1).take(2).all(|&d| d == 1)
                    && ti.shape.len() == 4
                {
                    vec![ti.shape[0], ti.shape[3]]
                } else {
                    ti.logical_shape()
                };
                let y = lw.b.tensor(&o.name, DType::F32, shape, false, None);
                lw.b.ops.push(Op::Dequantize {
                    x: t,
                    y,
                    q: Q8 {
                        scale: ti.scale,
                        zero: ti.zero,
                    },
                    to_nchw: ti.nhwc && ti.shape[1] * ti.shape[2] > 1,
                });
                y
            }
            Val::Act(t) => t,
            _ => return Err(malformed(format!("output '{}' is a constant", o.name))),
        };
        outputs.push(Port {
            name: o.name.clone(),
            tensor: t,
        });
    }
    let taps: Vec<Port> = match &opts.taps {
        Taps::None => vec![],
        Taps::Blocks => lw
            .block_taps
            .iter()
            .map(|(n, t)| Port {
                name: n.clone(),
                tensor: *t,
            })
            .collect(),
        Taps::Names(names) => names
            .iter()
            .map(|n| {
                match lw
                    .produced
                    .get(n)
                    .copied()
                    .or_else(|| match lw.vals.get(n) {
                        Some(Val::Act(t)) | Some(Val::Deq(t)) => Some(*t),
                        _ => None,
                    }) {
                    Some(t) => Ok(Port {
                        name: n.clone(),
                        tensor: t,
                    }),
                    None => Err(Error::Invalid {
                        what: format!("tap '{n}' names no tensor of the graph"),
                    }),
                }
            })
            .collect::<Result<_>>()?,
    };
    let pin_start: Vec<u32> = inputs.iter().map(|p| p.tensor).collect();
    let pin_end: Vec<u32> = outputs.iter().chain(&taps).map(|p| p.tensor).collect();
    elementwise::drop_unread(&mut lw.b, &pin_start, &pin_end);
    elementwise::fuse_luts(&mut lw.b, &pin_start, &pin_end);
    // Elementwise ops between a transpose and its inverse move onto the untransposed
    // map first, so that a batch norm's per-channel constants repeat along it and the ops
    // fuse into one chain.
    elementwise::move_transposes(&mut lw.b, &pin_start, &pin_end);
    if !opts.unfused {
        elementwise::clamp_into_convs(&mut lw.b, &pin_start, &pin_end);
        chains::fuse_chains(&mut lw.b, &pin_start, &pin_end);
        // A chain reading a transpose alone (an activation that was a unary op and a
        // product reading the same map) now takes it below, and the splits and
        // concatenations after it.
        elementwise::move_transposes(&mut lw.b, &pin_start, &pin_end);
    }
    let Builder {
        mut tensors,
        ops,
        blob,
    } = lw.b;
    let arena_bytes = plan_arena(&mut tensors, &ops, &pin_start, &pin_end);
    Ok(PlanParts {
        tensors,
        ops,
        inputs,
        outputs,
        taps,
        meta: opts.meta.clone(),
        blob,
        arena_bytes,
    })
}

pub(super) fn value_info_shape(vi: &pb::ValueInfoProto) -> Result<Vec<usize>> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TV;
    let err = |why: &str| Error::ShapeMismatch {
        op: format!(
            "input '{}' ({why}; fix it with --input NAME:SHAPE)",
            vi.name
        ),
        expected: vec![],
        got: vec![],
    };
    let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TV::TensorType(t)) => t,
        _ => return Err(err("no tensor type")),
    };
    let dims = &tt.shape.as_ref().ok_or_else(|| err("no shape"))?.dim;
    dims.iter()
        .enumerate()
        .map(|(i, d)| match d.value {
            Some(Value::DimValue(v)) if v > 0 => Ok(v as usize),
            _ if i == 0 => Ok(1),
            _ => Err(err("symbolic dimension")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::tensor_shape_proto::{dimension, Dimension};
    use prost::Message;

    fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A float chain `x → op₀ → … → y` over a `[2, 3]` input, as ONNX bytes.
    fn chain(ops: &[(&str, &str)], attrs: Vec<pb::AttributeProto>) -> Vec<u8> {
        let name = |i: usize| {
            if i == 0 {
                "x".to_string()
            } else if i == ops.len() {
                "y".to_string()
            } else {
                format!("t{i}")
            }
        };
        let node = ops
            .iter()
            .enumerate()
            .map(|(i, (domain, op))| pb::NodeProto {
                name: format!("n{i}_{op}"),
                op_type: op.to_string(),
                domain: domain.to_string(),
                input: vec![name(i)],
                output: vec![name(i + 1)],
                attribute: attrs.clone(),
                ..Default::default()
            })
            .collect();
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node,
                input: vec![value_info("x", &[2, 3])],
                output: vec![value_info("y", &[2, 3])],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn check_lists_every_unregistered_node() {
        let bytes = chain(
            &[
                ("", "Relu"),
                ("", "Tan"),
                ("", "Sigmoid"),
                ("com.microsoft", "FastGelu"),
                ("", "Acos"),
            ],
            vec![],
        );
        let found = check(&bytes, &ImportOptions::default()).unwrap();
        let got: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|u| (u.domain.as_str(), u.op.as_str(), u.node.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("ai.onnx", "Tan", "n1_Tan"),
                ("com.microsoft", "FastGelu", "n3_FastGelu"),
                ("ai.onnx", "Acos", "n4_Acos"),
            ]
        );
        assert!(found.iter().all(|u| !u.why.is_empty()));
        // The import itself stops at the first.
        match import_bytes(&bytes, &ImportOptions::default()) {
            Err(Error::UnsupportedOp { op, .. }) => assert_eq!(op, "Tan"),
            Err(e) => panic!("expected Tan to be refused, got {e}"),
            Ok(_) => panic!("expected Tan to be refused, got a plan"),
        }
    }

    #[test]
    fn check_reports_the_first_form_that_does_not_lower() {
        // Softmax lowers over an axis of its input, not outside it.
        let axis0 = pb::AttributeProto {
            name: "axis".into(),
            i: 7,
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            ..Default::default()
        };
        let bytes = chain(&[("", "Softmax"), ("", "Softmax")], vec![axis0]);
        let found = check(&bytes, &ImportOptions::default()).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].op.as_str(), found[0].node.as_str()),
            ("Softmax", "n0_Softmax")
        );
        assert!(
            found[0].why.contains("outside the rank"),
            "{}",
            found[0].why
        );
    }

    #[test]
    fn check_is_empty_when_the_model_imports() {
        let bytes = chain(&[("", "Relu"), ("ai.onnx", "Sigmoid")], vec![]);
        assert_eq!(check(&bytes, &ImportOptions::default()).unwrap(), vec![]);
        assert!(import_bytes(&bytes, &ImportOptions::default()).is_ok());
    }

    #[test]
    fn check_errs_on_bytes_that_do_not_parse() {
        // Field 7 (the graph) says 5 bytes follow; one does.
        assert!(check(&[0x3a, 0x05, 0x01], &ImportOptions::default()).is_err());
    }
}
