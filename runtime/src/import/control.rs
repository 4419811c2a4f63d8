//! Control flow and recurrence, lowered by rewriting the graph: an `If` whose condition
//! folds to a constant is replaced by the nodes of the branch it takes, and an `LSTM` by
//! its cell spelt out in MatMul, Add, Sigmoid, Tanh and Mul over its time steps. The
//! lowering sets [`Lowering::expand`]; the import splices the nodes in place of the node
//! and lowers the graph again, so what was spliced lowers (and folds) like any node.

use super::lower::Lowering;
use super::value::{attr, attr_i, malformed};
use crate::error::Result;
use std::collections::HashSet;
use tract_onnx::pb;

/// Nodes and initializers that replace the node being lowered.
pub(super) struct Expansion {
    pub(super) nodes: Vec<pb::NodeProto>,
    pub(super) initializers: Vec<pb::TensorProto>,
}

fn node(op: &str, name: String, input: Vec<String>, output: String) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.clone(),
        input,
        output: vec![output],
        ..Default::default()
    }
}

/// Every name a graph (and the graphs of its nodes' attributes) produces.
fn produced(g: &pb::GraphProto, out: &mut HashSet<String>) {
    out.extend(g.initializer.iter().map(|t| t.name.clone()));
    out.extend(g.input.iter().map(|v| v.name.clone()));
    for n in &g.node {
        out.extend(n.output.iter().filter(|s| !s.is_empty()).cloned());
        for a in &n.attribute {
            if let Some(sub) = &a.g {
                produced(sub, out);
            }
        }
    }
}

/// `If` with a constant condition: the branch taken, its outputs renamed to the node's by
/// Identity nodes. A condition that depends on a run-time input does not lower; fixing that
/// input (`ImportOptions::constants`, `compile --constant`) makes it fold.
pub(super) fn if_(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = &lw.graph.node[idx];
    let cond = match lw.constant(n, 0) {
        Ok(c) => c.ints(),
        Err(_) => {
            return Err(lw.unsupported(
                n,
                "the condition depends on a run-time input: fix the inputs it reads with --constant NAME=VALUE",
            ))
        }
    };
    if cond.len() != 1 {
        return Err(malformed(format!(
            "If '{}': condition of {} values",
            n.name,
            cond.len()
        )));
    }
    let which = if cond[0] != 0 {
        "then_branch"
    } else {
        "else_branch"
    };
    let branch = attr(n, which)
        .and_then(|a| a.g.as_ref())
        .ok_or_else(|| malformed(format!("If '{}' has no {which}", n.name)))?;
    if branch.output.len() != n.output.len() {
        return Err(malformed(format!(
            "If '{}': {which} gives {} outputs for {}",
            n.name,
            branch.output.len(),
            n.output.len()
        )));
    }
    // Names are unique across a graph and its subgraphs (ONNX's rule); a file that breaks
    // it would make the inlined branch read or overwrite another value.
    let mut outer = HashSet::new();
    for (k, m) in lw.graph.node.iter().enumerate() {
        if k != idx {
            outer.extend(m.output.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    outer.extend(lw.graph.initializer.iter().map(|t| t.name.clone()));
    outer.extend(lw.graph.input.iter().map(|v| v.name.clone()));
    let mut inner = HashSet::new();
    produced(branch, &mut inner);
    if let Some(clash) = inner.iter().find(|s| outer.contains(*s)) {
        return Err(malformed(format!(
            "If '{}': its {which} redefines '{clash}'",
            n.name
        )));
    }
    let mut nodes = branch.node.clone();
    for (o, b) in n.output.iter().zip(&branch.output) {
        if !o.is_empty() {
            nodes.push(node(
                "Identity",
                format!("{}#{o}", n.name),
                vec![b.name.clone()],
                o.clone(),
            ));
        }
    }
    lw.expand = Some(Expansion {
        nodes,
        initializers: branch.initializer.clone(),
    });
    Ok(())
}

fn f32_tensor(name: String, dims: &[usize], v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn i64_tensor(name: String, v: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: vec![v.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// `LSTM` (forward, reverse or bidirectional; default activations; layout 0; with or
/// without bias, initial states and peepholes) as its cell over each time step. The
/// input projections of all steps are one MatMul per gate.
pub(super) fn lstm(lw: &mut Lowering<'_>, idx: usize) -> Result<()> {
    let n = lw.graph.node[idx].clone();
    let hidden = usize::try_from(attr_i(&n, "hidden_size", 0)).unwrap_or(0);
    let dir = attr(&n, "direction").map_or(b"forward".to_vec(), |a| a.s.clone());
    let dirs: Vec<bool> = match dir.as_slice() {
        b"forward" => vec![false],
        b"reverse" => vec![true],
        b"bidirectional" => vec![false, true],
        _ => return Err(lw.unsupported(&n, "direction must be forward, reverse or bidirectional")),
    };
    if attr(&n, "activations").is_some_and(|a| {
        let want: &[&[u8]] = &[b"Sigmoid", b"Tanh", b"Tanh"];
        a.strings.len() != 3 * dirs.len()
            || a.strings
                .iter()
                .enumerate()
                .any(|(k, s)| s.as_slice() != want[k % 3])
    }) || attr(&n, "clip").is_some()
        || attr_i(&n, "input_forget", 0) != 0
        || attr_i(&n, "layout", 0) != 0
    {
        return Err(lw.unsupported(
            &n,
            "only the default activations (Sigmoid, Tanh, Tanh), no clip, no input_forget, layout 0",
        ));
    }
    if n.input.len() < 3 {
        return Err(malformed(format!("LSTM '{}' needs X, W and R", n.name)));
    }
    let xs = lw
        .shape_of(&n.input[0])
        .ok_or_else(|| lw.unsupported(&n, "input X has no known shape"))?;
    let w = lw.floats(&n, 1)?;
    let r = lw.floats(&n, 2)?;
    let nd = dirs.len();
    let [seq, batch, inp] = xs[..] else {
        return Err(lw.unsupported(&n, "X must be [seq, batch, input]"));
    };
    if hidden == 0
        || seq == 0
        || w.len() != nd * 4 * hidden * inp
        || r.len() != nd * 4 * hidden * hidden
    {
        return Err(lw.unsupported(
            &n,
            format!("W and R must be [{nd}, 4·hidden, input] and [{nd}, 4·hidden, hidden] with hidden_size > 0"),
        ));
    }
    let given = |i: usize| n.input.get(i).is_some_and(|s| !s.is_empty());
    let b = if given(3) {
        lw.floats(&n, 3)?
    } else {
        vec![0.0; nd * 8 * hidden]
    };
    if b.len() != nd * 8 * hidden {
        return Err(lw.unsupported(&n, "B must be [directions, 8·hidden]"));
    }
    if given(4) {
        let lens = lw.constant(&n, 4)?.ints();
        if lens.iter().any(|&l| l != seq as i64) {
            return Err(lw.unsupported(&n, "sequence_lens must all equal the sequence length"));
        }
    }
    let p = if given(7) {
        Some(lw.floats(&n, 7)?)
    } else {
        None
    };
    if p.as_ref().is_some_and(|p| p.len() != nd * 3 * hidden) {
        return Err(lw.unsupported(&n, "P must be [directions, 3·hidden]"));
    }
    for (i, what) in [(5, "initial_h"), (6, "initial_c")] {
        if given(i)
            && lw
                .shape_of(&n.input[i])
                .is_some_and(|s| s != [nd, batch, hidden])
        {
            return Err(lw.unsupported(&n, format!("{what} must be [{nd}, {batch}, {hidden}]")));
        }
    }

    let pre = format!(
        "{}#lstm",
        n.output
            .iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_default()
    );
    let mut e = Expansion {
        nodes: vec![],
        initializers: vec![],
    };
    let mut k = 0usize;
    let mut fresh = |what: &str| {
        k += 1;
        format!("{pre}/{what}{k}")
    };
    let h = hidden;
    let shape = |e: &mut Expansion, name: String, dims: &[i64]| {
        e.initializers.push(i64_tensor(name.clone(), dims));
        name
    };
    let x2 = fresh("x");
    let s_x2 = shape(&mut e, fresh("shape"), &[(seq * batch) as i64, inp as i64]);
    e.nodes.push(node(
        "Reshape",
        x2.clone(),
        vec![n.input[0].clone(), s_x2],
        x2.clone(),
    ));
    let s_bh = shape(&mut e, fresh("shape"), &[batch as i64, h as i64]);
    let s_y = shape(&mut e, fresh("shape"), &[1, 1, batch as i64, h as i64]);
    let s_last = shape(&mut e, fresh("shape"), &[1, batch as i64, h as i64]);
    let (mut ys, mut hs, mut cs) = (vec![vec![]; seq], vec![], vec![]);
    for (d, &reverse) in dirs.iter().enumerate() {
        // Gate order in W, R, B: input, output, forget, cell.
        let mut xg = vec![];
        let mut rg = vec![];
        for g in 0..4 {
            let rows = |m: &[f32], cols: usize| -> Vec<f32> {
                // Rows g·h.. of direction d, transposed to [cols, h].
                let base = (d * 4 + g) * h * cols;
                let mut t = vec![0.0; cols * h];
                for o in 0..h {
                    for c in 0..cols {
                        t[c * h + o] = m[base + o * cols + c];
                    }
                }
                t
            };
            let wn = fresh("w");
            e.initializers
                .push(f32_tensor(wn.clone(), &[inp, h], &rows(&w, inp)));
            let rn = fresh("r");
            e.initializers
                .push(f32_tensor(rn.clone(), &[h, h], &rows(&r, h)));
            let bias: Vec<f32> = (0..h)
                .map(|o| b[d * 8 * h + g * h + o] + b[d * 8 * h + (4 + g) * h + o])
                .collect();
            let bn = fresh("b");
            e.initializers.push(f32_tensor(bn.clone(), &[h], &bias));
            let m = fresh("xw");
            e.nodes
                .push(node("MatMul", m.clone(), vec![x2.clone(), wn], m.clone()));
            let a = fresh("xwb");
            e.nodes.push(node("Add", a.clone(), vec![m, bn], a.clone()));
            xg.push(a);
            rg.push(rn);
        }
        // An initial state not given is zero: the first step skips what it would add.
        let state = |e: &mut Expansion, i: usize, what: &str| -> Option<String> {
            if !given(i) {
                return None;
            }
            let out = format!("{pre}/{what}{d}");
            let src = n.input[i].clone();
            let sl = if nd == 1 {
                src
            } else {
                let s = format!("{out}/slice");
                let st = format!("{s}/starts");
                let en = format!("{s}/ends");
                let ax = format!("{s}/axes");
                e.initializers.push(i64_tensor(st.clone(), &[d as i64]));
                e.initializers.push(i64_tensor(en.clone(), &[d as i64 + 1]));
                e.initializers.push(i64_tensor(ax.clone(), &[0]));
                e.nodes
                    .push(node("Slice", s.clone(), vec![src, st, en, ax], s.clone()));
                s
            };
            e.nodes.push(node(
                "Reshape",
                out.clone(),
                vec![sl, s_bh.clone()],
                out.clone(),
            ));
            Some(out)
        };
        let (mut hv, mut cv) = (state(&mut e, 5, "h0_"), state(&mut e, 6, "c0_"));
        let steps: Vec<usize> = if reverse {
            (0..seq).rev().collect()
        } else {
            (0..seq).collect()
        };
        for t in steps {
            let mut gate = vec![];
            for g in 0..4 {
                let xt = if seq == 1 {
                    xg[g].clone()
                } else {
                    let s = fresh("xt");
                    let st = shape(&mut e, fresh("starts"), &[(t * batch) as i64]);
                    let en = shape(&mut e, fresh("ends"), &[((t + 1) * batch) as i64]);
                    let ax = shape(&mut e, fresh("axes"), &[0]);
                    e.nodes.push(node(
                        "Slice",
                        s.clone(),
                        vec![xg[g].clone(), st, en, ax],
                        s.clone(),
                    ));
                    s
                };
                let mut z = xt;
                if let Some(hv) = &hv {
                    let hr = fresh("hr");
                    e.nodes.push(node(
                        "MatMul",
                        hr.clone(),
                        vec![hv.clone(), rg[g].clone()],
                        hr.clone(),
                    ));
                    let z2 = fresh("z");
                    e.nodes
                        .push(node("Add", z2.clone(), vec![z, hr], z2.clone()));
                    z = z2;
                }
                // Peepholes: input and forget gates read the previous cell state, the
                // output gate the new one (added below).
                if let (Some(p), Some(cv), true) = (&p, &cv, g == 0 || g == 2) {
                    let slot = if g == 0 { 0 } else { 2 };
                    let pn = fresh("p");
                    let pv = &p[(d * 3 + slot) * h..][..h];
                    e.initializers.push(f32_tensor(pn.clone(), &[h], pv));
                    let pc = fresh("pc");
                    e.nodes
                        .push(node("Mul", pc.clone(), vec![cv.clone(), pn], pc.clone()));
                    let z2 = fresh("z");
                    e.nodes
                        .push(node("Add", z2.clone(), vec![z, pc], z2.clone()));
                    z = z2;
                }
                gate.push(z);
            }
            let act =
                |e: &mut Expansion, op: &str, x: &str, fresh: &mut dyn FnMut(&str) -> String| {
                    let o = fresh("a");
                    e.nodes
                        .push(node(op, o.clone(), vec![x.to_string()], o.clone()));
                    o
                };
            let i = act(&mut e, "Sigmoid", &gate[0], &mut fresh);
            let f = act(&mut e, "Sigmoid", &gate[2], &mut fresh);
            let c_new = act(&mut e, "Tanh", &gate[3], &mut fresh);
            let ic = fresh("ic");
            e.nodes
                .push(node("Mul", ic.clone(), vec![i, c_new], ic.clone()));
            let c = match &cv {
                Some(cv) => {
                    let fc = fresh("fc");
                    e.nodes
                        .push(node("Mul", fc.clone(), vec![f, cv.clone()], fc.clone()));
                    let c = fresh("c");
                    e.nodes
                        .push(node("Add", c.clone(), vec![fc, ic], c.clone()));
                    c
                }
                None => ic,
            };
            let mut zo = gate[1].clone();
            if let Some(p) = &p {
                let pn = fresh("p");
                e.initializers
                    .push(f32_tensor(pn.clone(), &[h], &p[(d * 3 + 1) * h..][..h]));
                let pc = fresh("pc");
                e.nodes
                    .push(node("Mul", pc.clone(), vec![c.clone(), pn], pc.clone()));
                let z2 = fresh("z");
                e.nodes
                    .push(node("Add", z2.clone(), vec![zo, pc], z2.clone()));
                zo = z2;
            }
            let o = act(&mut e, "Sigmoid", &zo, &mut fresh);
            let tc = act(&mut e, "Tanh", &c, &mut fresh);
            let hn = fresh("h");
            e.nodes
                .push(node("Mul", hn.clone(), vec![o, tc], hn.clone()));
            let y = fresh("y");
            e.nodes.push(node(
                "Reshape",
                y.clone(),
                vec![hn.clone(), s_y.clone()],
                y.clone(),
            ));
            ys[t].push(y);
            hv = Some(hn);
            cv = Some(c);
        }
        for (v, all) in [(hv, &mut hs), (cv, &mut cs)] {
            let v = v.expect("seq > 0 steps ran");
            let l = fresh("last");
            e.nodes.push(node(
                "Reshape",
                l.clone(),
                vec![v, s_last.clone()],
                l.clone(),
            ));
            all.push(l);
        }
    }
    let join = |e: &mut Expansion, parts: Vec<String>, axis: i64, out: String| {
        let mut c = node(
            if parts.len() == 1 {
                "Identity"
            } else {
                "Concat"
            },
            out.clone(),
            parts,
            out,
        );
        if c.op_type == "Concat" {
            c.attribute.push(pb::AttributeProto {
                name: "axis".into(),
                i: axis,
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                ..Default::default()
            });
        }
        e.nodes.push(c);
    };
    let out = |i: usize| n.output.get(i).filter(|s| !s.is_empty()).cloned();
    if let Some(y) = out(0) {
        let steps: Vec<String> = ys
            .into_iter()
            .enumerate()
            .map(|(t, per_dir)| {
                let s = format!("{pre}/y_t{t}");
                join(&mut e, per_dir, 1, s.clone());
                s
            })
            .collect();
        join(&mut e, steps, 0, y);
    }
    if let Some(yh) = out(1) {
        join(&mut e, hs, 0, yh);
    }
    if let Some(yc) = out(2) {
        join(&mut e, cs, 0, yc);
    }
    if e.nodes.len() > 200_000 {
        return Err(lw.unsupported(&n, format!("{seq} steps spell out to too many nodes")));
    }
    lw.expand = Some(e);
    Ok(())
}
