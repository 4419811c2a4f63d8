//! Peers for edgetune's benchmarks: tract runs the same ONNX models and matrix products,
//! in process, so their times come from the same run as edgetune's.

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::prelude::*;

/// A runnable, optimised tract model.
pub type Runnable = std::sync::Arc<TypedRunnableModel>;

fn value_info(name: &str, dt: DataType, dims: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: dt as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d as i64)),
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

fn initializer(name: &str, dt: DataType, dims: &[usize], raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        data_type: dt as i32,
        dims: dims.iter().map(|&d| d as i64).collect(),
        raw_data: raw,
        ..Default::default()
    }
}

fn scalar_init(name: &str, dt: DataType, raw: Vec<u8>) -> pb::TensorProto {
    initializer(name, dt, &[], raw)
}

/// `Y = A·B` with A an `m×k` input and B a constant `k×n`: f32 `MatMul`, or, when `int8`,
/// u8×i8 `QLinearMatMul` with a u8 result (tract's quantised matmul path).
pub fn matmul_model(m: usize, n: usize, k: usize, int8: bool) -> TractResult<Runnable> {
    let (node, mut inputs, mut inits, adt, ydt) = if int8 {
        let b: Vec<u8> = (0..k * n).map(|i| ((i % 7) as i8 - 3) as u8).collect();
        (
            "QLinearMatMul",
            vec!["A", "a_s", "a_z", "B", "b_s", "b_z", "y_s", "y_z"],
            vec![
                scalar_init("a_s", DataType::Float, 0.02f32.to_le_bytes().to_vec()),
                scalar_init("a_z", DataType::Uint8, vec![3]),
                initializer("B", DataType::Int8, &[k, n], b),
                scalar_init("b_s", DataType::Float, 0.01f32.to_le_bytes().to_vec()),
                scalar_init("b_z", DataType::Int8, vec![0]),
                scalar_init("y_s", DataType::Float, 0.5f32.to_le_bytes().to_vec()),
                scalar_init("y_z", DataType::Uint8, vec![128]),
            ],
            DataType::Uint8,
            DataType::Uint8,
        )
    } else {
        let v: Vec<u8> = (0..k * n)
            .flat_map(|i| ((i % 7) as f32 * 0.1).to_le_bytes())
            .collect();
        (
            "MatMul",
            vec!["A", "B"],
            vec![initializer("B", DataType::Float, &[k, n], v)],
            DataType::Float,
            DataType::Float,
        )
    };
    let graph = pb::GraphProto {
        name: "matmul".into(),
        node: vec![pb::NodeProto {
            input: inputs.drain(..).map(String::from).collect(),
            output: vec!["Y".into()],
            op_type: node.into(),
            ..Default::default()
        }],
        initializer: std::mem::take(&mut inits),
        input: vec![value_info("A", adt, &[m, k])],
        output: vec![value_info("Y", ydt, &[m, n])],
        ..Default::default()
    };
    let proto = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    };
    tract_onnx::onnx()
        .model_for_proto_model(&proto)?
        .into_optimized()?
        .into_runnable()
}

/// The input `A` for [`matmul_model`].
pub fn matmul_input(m: usize, k: usize, int8: bool) -> TValue {
    if int8 {
        let v: Vec<u8> = (0..m * k).map(|i| (i % 251) as u8).collect();
        tensor1(&v).into_shape(&[m, k]).unwrap().into_tvalue()
    } else {
        let v: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.05).collect();
        tensor1(&v).into_shape(&[m, k]).unwrap().into_tvalue()
    }
}

/// An input fixed on the command line: `name:1x3x224x224[:i64]`.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub int64: bool,
}

impl InputSpec {
    /// `NAME:SHAPE[:i64|:f32]`; the name may itself contain `:`.
    pub fn parse(s: &str) -> Option<InputSpec> {
        let (rest, int64) = match s.rsplit_once(':')? {
            (r, "i64") => (r, true),
            (r, "f32") => (r, false),
            _ => (s, false),
        };
        let (name, shape) = rest.rsplit_once(':')?;
        let shape = shape
            .split('x')
            .map(|d| d.parse().ok())
            .collect::<Option<Vec<usize>>>()?;
        Some(InputSpec {
            name: name.into(),
            shape,
            int64,
        })
    }
}

/// Loads an ONNX file with tract, fixes the input shapes and optimises it.
pub fn load_model(path: &str, inputs: &[InputSpec]) -> TractResult<Runnable> {
    // The exported models keep intermediate shapes with batch 1 beside a symbolic batch
    // input; tract would refuse to unify them.
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(path)?;
    for (i, spec) in inputs.iter().enumerate() {
        let fact = if spec.int64 {
            i64::fact(&spec.shape)
        } else {
            f32::fact(&spec.shape)
        };
        model = model.with_input_fact(i, fact.into())?;
    }
    model.into_optimized()?.into_runnable()
}

/// Deterministic inputs for [`load_model`]: small token ids / ones for i64, a ramp for f32.
pub fn model_inputs(inputs: &[InputSpec]) -> TVec<TValue> {
    inputs
        .iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            if s.int64 {
                let v: Vec<i64> = if s.name.contains("mask") {
                    vec![1; n]
                } else if s.name.contains("type") {
                    vec![0; n]
                } else {
                    (0..n).map(|i| 1000 + (i as i64 * 37) % 20000).collect()
                };
                tensor1(&v).into_shape(&s.shape).unwrap().into_tvalue()
            } else {
                let v: Vec<f32> = (0..n).map(|i| ((i % 255) as f32 / 255.0) - 0.5).collect();
                tensor1(&v).into_shape(&s.shape).unwrap().into_tvalue()
            }
        })
        .collect()
}

/// Runs a model on one input (the benchmark's peer call).
pub fn run1(model: &Runnable, input: &TValue) -> TractResult<TVec<TValue>> {
    model.run(tvec!(input.clone()))
}
