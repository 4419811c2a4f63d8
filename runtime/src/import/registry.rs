//! The list of supported ONNX ops: one table `(domain, op) → lowering`, walked by the
//! lowering, by `check`, by the README table and by the conformance test.
//!
//! Each op has one entry and one function. Where an op has both a quantised and a float
//! form (Add of two u8 tensors or of two f32 tensors), that function picks the form from
//! what its inputs hold, so no call order decides which lowering an op gets.

use super::lower::Lowering;
use super::{control, conv, elementwise as ew, gemm, logic, norm, quant, shape};
use crate::error::Result;
use tract_onnx::pb;

/// Lowers node `idx` of the graph into plan ops.
pub(super) type LowerFn = fn(&mut Lowering<'_>, usize) -> Result<()>;

/// Rewrites a node of `src` into registered ops appended to the graph being built.
pub(super) type RewriteFn = fn(&pb::GraphProto, &pb::NodeProto, &mut pb::GraphProto) -> Result<()>;

#[derive(Clone, Copy)]
pub(super) enum Lower {
    Node(LowerFn),
    /// Rewritten before lowering (QOperator to QDQ form).
    Rewrite(RewriteFn),
}

pub(super) struct Entry {
    pub(super) domain: &'static str,
    pub(super) op: &'static str,
    pub(super) lower: Lower,
    /// The forms that lower, in a line (the README table).
    pub(super) doc: &'static str,
}

/// The default ONNX domain, spelt `""` or `"ai.onnx"` in files.
pub const ONNX: &str = "ai.onnx";

const fn node(op: &'static str, f: LowerFn, doc: &'static str) -> Entry {
    Entry {
        domain: ONNX,
        op,
        lower: Lower::Node(f),
        doc,
    }
}

const fn rewrite(op: &'static str, f: RewriteFn, doc: &'static str) -> Entry {
    Entry {
        domain: ONNX,
        op,
        lower: Lower::Rewrite(f),
        doc,
    }
}

/// onnxruntime's contrib domain, where its quantiser writes the QOperator ops beyond
/// QLinearConv and QLinearMatMul.
pub const MS: &str = "com.microsoft";

const fn ms(op: &'static str, doc: &'static str) -> Entry {
    Entry {
        domain: MS,
        op,
        lower: Lower::Rewrite(quant::qlinear_ms),
        doc,
    }
}

static REGISTRY: &[Entry] = &[
    // Quantisation.
    node(
        "QuantizeLinear",
        quant::quantize_linear,
        "per-tensor u8, or int8 (held as u8 codes + 128): of a float tensor, a requantisation, or the table of the float functions since the last dequantisation",
    ),
    node(
        "DequantizeLinear",
        quant::dequantize_linear,
        "constant weights (per-tensor, or per-channel on any axis: the op reading them says which); u8 tensors with the parameters of their QuantizeLinear",
    ),
    node(
        "DynamicQuantizeLinear",
        quant::dynamic_quantize_linear,
        "a float tensor whose three outputs feed MatMulInteger and the Mul by its scale",
    ),
    node(
        "MatMulInteger",
        quant::matmul_integer,
        "DynamicQuantizeLinear codes and zero point by constant symmetric int8 `[K, N]` weights, then a Mul by the scales",
    ),
    rewrite(
        "QLinearConv",
        quant::qlinear,
        "rewritten to DequantizeLinear → Conv → QuantizeLinear; scales as initializers",
    ),
    rewrite(
        "QLinearMatMul",
        quant::qlinear,
        "rewritten to DequantizeLinear → MatMul → QuantizeLinear; per-channel weights on B's last axis",
    ),
    ms("QLinearAdd", "rewritten to DequantizeLinear → Add → QuantizeLinear"),
    ms("QLinearMul", "rewritten to DequantizeLinear → Mul → QuantizeLinear"),
    ms("QLinearSigmoid", "rewritten to DequantizeLinear → Sigmoid → QuantizeLinear"),
    ms("QLinearLeakyRelu", "rewritten to DequantizeLinear → LeakyRelu → QuantizeLinear"),
    ms(
        "QLinearGlobalAveragePool",
        "channels-first: rewritten to DequantizeLinear → GlobalAveragePool → QuantizeLinear",
    ),
    ms(
        "QLinearAveragePool",
        "channels-first: rewritten to DequantizeLinear → AveragePool → QuantizeLinear",
    ),
    ms("QLinearSoftmax", "rewritten to DequantizeLinear → Softmax → QuantizeLinear"),
    ms("QLinearConcat", "rewritten to DequantizeLinear (each input) → Concat → QuantizeLinear"),
    ms(
        "QGemm",
        "rewritten to DequantizeLinear → Gemm (→ QuantizeLinear when it has an output scale); int32 bias by a_scale·b_scale",
    ),
    // Convolution and pooling.
    node(
        "Conv",
        conv::conv,
        "QDQ, 2-D, any batch: symmetric int8 weights (per-tensor or per-channel), dense, depthwise (strides per axis) or grouped (as dense with zeros between groups), explicit pads (plus those of a Pad before it)",
    ),
    node(
        "ConvTranspose",
        conv::conv_transpose,
        "QDQ, 2-D, any batch, group 1: symmetric int8 weights (per-tensor or per-channel on the output axis), strides (zeros inserted, `DilateU8`; a kernel equal to the stride without pads runs as a 1×1 convolution and a transpose), dilations, pads, output_padding; no auto_pad or output_shape",
    ),
    node(
        "AveragePool",
        conv::average_pool,
        "2-D on a u8 map as a depthwise convolution, any batch; padding counted (count_include_pad) or none; no ceil_mode",
    ),
    node(
        "MaxPool",
        conv::max_pool,
        "2-D on a u8 map (a table of one moves past it, or is quantised first when it does not commute with max), any batch, ceil_mode, auto_pad; no indices",
    ),
    node(
        "GlobalAveragePool",
        conv::global_average_pool,
        "QDQ u8 feature map, any batch (a float output where no QuantizeLinear follows)",
    ),
    node(
        "ReduceMean",
        conv::reduce_mean,
        "QDQ u8 feature map, any batch: the mean over axes 2 and 3 with keepdims = 1 (global average pooling as dynamo exports it); float (or a dequantised int8 tensor): over one axis or adjacent ones",
    ),
    // Matrix products.
    node(
        "Gemm",
        gemm::gemm,
        "QDQ: u8 `[1, K]` by symmetric int8 weights, alpha = beta = 1, no transA; per-channel weights on the output axis (0 with transB = 1, 1 with transB = 0)",
    ),
    node(
        "MatMul",
        gemm::matmul,
        "float tensors of rank ≥ 2 with equal batch shapes; a quantised `[1, K]` row by int8 weights `[K, N]` (as Gemm)",
    ),
    // Elementwise.
    node(
        "Add",
        ew::binary,
        "float with broadcasting (rank ≤ 4); two u8 tensors of one shape (QDQ)",
    ),
    node("Sub", ew::binary, "float with broadcasting (rank ≤ 4)"),
    node(
        "Mul",
        ew::binary,
        "float with broadcasting (rank ≤ 4); the scale product after MatMulInteger",
    ),
    node("Div", ew::binary, "float with broadcasting (rank ≤ 4)"),
    node(
        "Relu",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "Sigmoid",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node("Sqrt", ew::unary, "float"),
    node(
        "Pow",
        ew::pow,
        "float, any exponent (a constant, or a tensor that broadcasts); a constant exponent on a quantised tensor (folded into its u8 table)",
    ),
    node(
        "HardSigmoid",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "HardSwish",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "Tanh",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "Exp",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "Log",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "Abs",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "Neg",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "Elu",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "Softplus",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "PRelu",
        ew::prelu,
        "float, a slope that broadcasts; a quantised tensor with one slope or one per channel (folded into its u8 table)",
    ),
    node("Reciprocal", ew::unary, "float"),
    node("Floor", ew::unary, "float"),
    node("Ceil", ew::unary, "float"),
    node("Round", ew::unary, "float (halves to even)"),
    node("Gelu", ew::unary, "float, exact (erf) or tanh approximation"),
    node("Identity", ew::identity, "any value"),
    node("Dropout", ew::identity, "inference: the identity"),
    node("Erf", ew::unary, "float"),
    node(
        "Clip",
        ew::clip,
        "float with constant or run-time bounds; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "LeakyRelu",
        ew::unary,
        "float; a quantised tensor (folded into its u8 table)",
    ),
    node(
        "Sum",
        ew::variadic,
        "float tensors, any number, broadcasting (rank ≤ 4)",
    ),
    node(
        "Mean",
        ew::variadic,
        "float tensors, any number, broadcasting (rank ≤ 4)",
    ),
    node(
        "Max",
        ew::max_min,
        "float tensors, any number (broadcasting, rank ≤ 4); a quantised tensor and a scalar constant (folded into its u8 table)",
    ),
    node(
        "Min",
        ew::max_min,
        "float tensors, any number (broadcasting, rank ≤ 4); a quantised tensor and a scalar constant (folded into its u8 table)",
    ),
    node(
        "BatchNormalization",
        ew::batch_norm,
        "inference form: float (a per-channel scale and shift), or on a quantised NHWC map (folded into a per-channel u8 table)",
    ),
    // Normalisation and reductions.
    node(
        "LayerNormalization",
        norm::layer_norm,
        "float, over the last axis, one output",
    ),
    node("Softmax", norm::softmax, "float, over any axis (an inner one transposed to the last and back)"),
    node("ReduceSum", norm::reduce_sum, "float, over one axis, adjacent ones or all"),
    node("ReduceMax", norm::reduce_max, "float, over one axis, adjacent ones or all"),
    // Shapes and data movement.
    node("Constant", shape::constant, "a tensor `value`"),
    node(
        "Cast",
        shape::cast,
        "float tensors (a copy; to bool: x != 0 as 0/1); constants to f32, i64 or bool",
    ),
    node(
        "Reshape",
        shape::reshape,
        "float tensors (with -1 and 0); a quantised 1×1 map or 2-D tensor",
    ),
    node(
        "Flatten",
        shape::reshape,
        "float tensors, any axis; a quantised 1×1 map or 2-D tensor",
    ),
    node(
        "Squeeze",
        shape::reshape,
        "float tensors and constants; axes as input or attribute",
    ),
    node(
        "Unsqueeze",
        shape::reshape,
        "float tensors and constants; axes as input or attribute",
    ),
    node(
        "Pad",
        shape::pad,
        "constant mode, constant pads, of a quantised map (u8 codes or dequantised) or a float tensor of rank ≤ 4; zero spatial padding read only by convolutions is added to theirs",
    ),
    node(
        "Concat",
        shape::concat,
        "quantised tensors (requantised to the output's parameters by a table) or float tensors, any axis; constants (folded)",
    ),
    node("Shape", shape::folded_only, "any tensor of known shape (folded to a constant)"),
    node(
        "Slice",
        shape::slice,
        "step 1 along one axis of a quantised or float tensor, constant bounds; constants (folded)",
    ),
    node(
        "Resize",
        shape::resize,
        "nearest, whole factors on the spatial axes of a 4-D quantised or float tensor; linear (bilinear), any factor, over the last two axes of a float tensor (a quantised one in float); scales or sizes constant",
    ),
    node(
        "Split",
        shape::split,
        "a quantised or float tensor along one axis, constant sizes (or equal parts)",
    ),
    node("Range", shape::folded_only, "constants (folded)"),
    node(
        "Size",
        shape::folded_only,
        "any tensor of known shape (folded to a constant)",
    ),
    node(
        "ConstantOfShape",
        shape::folded_only,
        "a constant shape (folded)",
    ),
    node(
        "Transpose",
        shape::transpose,
        "float tensors or quantised codes, any rank whose moving axis groups number ≤ 4",
    ),
    node(
        "Gather",
        shape::gather,
        "axis 0 of a constant 2-D table (f32, or int8/u8 read by one DequantizeLinear) by run-time indices; a run-time float or quantised tensor by constant indices, any axis",
    ),
    node(
        "GatherND",
        shape::gather_nd,
        "batch_dims 0: a run-time float or quantised tensor by constant index tuples",
    ),
    node(
        "Expand",
        logic::expand,
        "a float tensor to a constant shape (rank ≤ 4); constants (folded)",
    ),
    // Comparisons and logic: booleans as f32 0 and 1.
    node("Equal", logic::compare, "float tensors, broadcasting (rank ≤ 4); 1.0 where true"),
    node("Less", logic::compare, "float tensors, broadcasting (rank ≤ 4); 1.0 where true"),
    node(
        "LessOrEqual",
        logic::compare,
        "float tensors, broadcasting (rank ≤ 4); 1.0 where true",
    ),
    node("Greater", logic::compare, "float tensors, broadcasting (rank ≤ 4); 1.0 where true"),
    node(
        "GreaterOrEqual",
        logic::compare,
        "float tensors, broadcasting (rank ≤ 4); 1.0 where true",
    ),
    node("And", logic::logical, "booleans as 0/1 floats, broadcasting"),
    node("Or", logic::logical, "booleans as 0/1 floats, broadcasting"),
    node("Xor", logic::logical, "booleans as 0/1 floats, broadcasting"),
    node("Not", logic::not_isnan, "booleans as 0/1 floats"),
    node("IsNaN", logic::not_isnan, "float tensors"),
    node(
        "Where",
        logic::where_,
        "a condition and two values, any of them run-time or constant, broadcasting (rank ≤ 4); `Where(IsNaN(x), c, x)` with one constant c is one pass replacing NaNs",
    ),
    // Control flow and recurrence, spelt out in the ops above.
    node(
        "If",
        control::if_,
        "a condition that folds to a constant (fix the inputs it reads with --constant): the branch taken is inlined",
    ),
    node(
        "LSTM",
        control::lstm,
        "forward, reverse or bidirectional, default activations, layout 0, with bias, initial states and peepholes: the cell over each time step in float",
    ),
];

/// `""` and `"ai.onnx"` both name the default domain.
pub(super) fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == ONNX
}

fn entry(domain: &str, op: &str) -> Option<&'static Entry> {
    let domain = if is_default_domain(domain) {
        ONNX
    } else {
        domain
    };
    REGISTRY.iter().find(|e| e.domain == domain && e.op == op)
}

/// Why a default-domain op without an entry does not lower, with the way around it
/// where there is one.
pub(super) fn missing_why(op: &str) -> String {
    match op {
        "ConvInteger" => "no lowering for this op: a dynamically quantised convolution; compile with --calibrate DIR, which undoes the dynamic quantisation and quantises the model statically".into(),
        _ => "no lowering for this op".into(),
    }
}

/// Whether `(domain, op)` has an entry.
pub fn is_supported(domain: &str, op: &str) -> bool {
    entry(domain, op).is_some()
}

/// The lowering of a node of `(domain, op)`, if it lowers in place.
pub(super) fn lowering(domain: &str, op: &str) -> Option<LowerFn> {
    match entry(domain, op)?.lower {
        Lower::Node(f) => Some(f),
        Lower::Rewrite(_) => None,
    }
}

/// The supported ops as `(domain, op, forms that lower)`, in table order.
pub fn supported_ops() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    REGISTRY.iter().map(|e| (e.domain, e.op, e.doc))
}

/// Applies the registered rewrites; `None` when no node has one.
pub(super) fn rewrite_forms(graph: &pb::GraphProto) -> Result<Option<pb::GraphProto>> {
    let rewrite_of = |n: &pb::NodeProto| match entry(&n.domain, &n.op_type)?.lower {
        Lower::Rewrite(f) => Some(f),
        Lower::Node(_) => None,
    };
    if !graph.node.iter().any(|n| rewrite_of(n).is_some()) {
        return Ok(None);
    }
    let mut g = graph.clone();
    g.node.clear();
    for n in &graph.node {
        match rewrite_of(n) {
            Some(f) => f(graph, n, &mut g)?,
            None => g.node.push(n.clone()),
        }
    }
    Ok(Some(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_op_once_with_a_doc() {
        let mut seen = std::collections::HashSet::new();
        for (domain, op, doc) in supported_ops() {
            assert!(seen.insert((domain, op)), "{domain} {op} registered twice");
            assert!(!doc.is_empty() && !doc.contains('|'), "{op}: doc {doc:?}");
        }
        assert!(is_supported("", "Conv") && is_supported("ai.onnx", "Conv"));
        assert!(!is_supported("com.microsoft", "Conv"));
    }
}
