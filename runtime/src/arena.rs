//! The arena planner: every tensor of a plan gets an offset in one buffer, sized once at
//! import, so the executor never allocates while it runs.

use crate::plan::{Op, TensorInfo, Unary};

/// Lifetime-based arena planning: each tensor lives from the op that writes it to the
/// last op that reads it (inputs from the start, outputs and taps to the end). Tensors
/// are placed largest first at the lowest 64-aligned offset that overlaps no tensor with
/// an intersecting lifetime. Returns the arena size and fills `TensorInfo::offset`.
///
/// The two sides of a float copy (`UnaryF32` `Identity`: a Reshape, Flatten, Squeeze or
/// Unsqueeze) share their bytes: they hold the same values for as long as either lives,
/// so they are placed once, over the union of their lifetimes, and the executor skips
/// the copy.
pub fn plan_arena(
    tensors: &mut [TensorInfo],
    ops: &[Op],
    pinned_start: &[u32],
    pinned_end: &[u32],
) -> usize {
    let n = tensors.len();
    let last = ops.len();
    let mut first = alloc::vec![usize::MAX; n];
    let mut end = alloc::vec![0usize; n];
    for (i, op) in ops.iter().enumerate() {
        let (ins, outs) = op.io();
        for &t in outs.iter() {
            first[t as usize] = first[t as usize].min(i);
            end[t as usize] = end[t as usize].max(i);
        }
        for &t in ins.iter() {
            first[t as usize] = first[t as usize].min(i);
            end[t as usize] = end[t as usize].max(i);
        }
    }
    for &t in pinned_start {
        first[t as usize] = 0;
    }
    for &t in pinned_end {
        end[t as usize] = last;
    }
    // Each tensor's representative: the first tensor of its chain of copies.
    let mut rep: alloc::vec::Vec<usize> = (0..n).collect();
    for op in ops {
        if let Op::UnaryF32 {
            x,
            y,
            f: Unary::Identity,
        } = *op
        {
            let (x, y) = (x as usize, y as usize);
            if x < n && y < n && x != y && tensors[x].bytes() == tensors[y].bytes() {
                // Ops run in order and `y` is written once, by this copy: `x` already
                // has its representative, and `y`'s own copies come later.
                if rep[x] != y {
                    rep[y] = rep[x];
                }
            }
        }
    }
    for i in 0..n {
        let mut r = i;
        for _ in 0..n {
            if rep[r] == r {
                break;
            }
            r = rep[r];
        }
        rep[i] = r;
    }
    for i in 0..n {
        let r = rep[i];
        if r != i && first[i] != usize::MAX {
            first[r] = first[r].min(first[i]);
            end[r] = end[r].max(end[i]);
        }
    }
    let mut order: alloc::vec::Vec<usize> = (0..n)
        .filter(|&i| rep[i] == i && first[i] != usize::MAX)
        .collect();
    order.sort_by_key(|&i| core::cmp::Reverse(tensors[i].bytes()));
    let mut placed: alloc::vec::Vec<usize> = alloc::vec::Vec::new();
    let mut total = 0;
    for &i in &order {
        let size = tensors[i].bytes().div_ceil(64) * 64;
        let mut busy: alloc::vec::Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| first[j] <= end[i] && first[i] <= end[j])
            .map(|&j| {
                (
                    tensors[j].offset,
                    tensors[j].offset + tensors[j].bytes().div_ceil(64) * 64,
                )
            })
            .collect();
        busy.sort_unstable();
        let mut off = 0;
        for (s, e) in busy {
            if off + size <= s {
                break;
            }
            off = off.max(e);
        }
        tensors[i].offset = off;
        total = total.max(off + size);
        placed.push(i);
    }
    for i in 0..n {
        if rep[i] != i {
            tensors[i].offset = tensors[rep[i]].offset;
        }
    }
    // A tensor no op touches (a dead branch, or every op dropped for want of outputs) is
    // never read or written, but a plan's every tensor lies inside its arena: at offset 0,
    // over the others.
    for i in 0..n {
        if first[rep[i]] == usize::MAX {
            tensors[i].offset = 0;
            total = total.max(tensors[i].bytes());
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DType, Unary};

    fn t(floats: usize) -> TensorInfo {
        TensorInfo {
            name: alloc::string::String::new(),
            dtype: DType::F32,
            shape: alloc::vec![floats],
            nhwc: false,
            scale: 1.0,
            zero: 0,
            offset: 0,
        }
    }

    fn un(x: u32, y: u32) -> Op {
        Op::UnaryF32 {
            x,
            y,
            f: Unary::Relu,
        }
    }

    fn overlap(a: &TensorInfo, b: &TensorInfo) -> bool {
        a.offset < b.offset + b.bytes() && b.offset < a.offset + a.bytes()
    }

    /// Oracle: tensors whose lifetimes (first to last op touching them, pins included)
    /// intersect never share a byte; every offset is 64-aligned; the arena holds them all.
    fn check(ts: &[TensorInfo], ops: &[Op], start: &[u32], end: &[u32], size: usize) {
        let life = |i: usize| {
            let touch: alloc::vec::Vec<usize> = ops
                .iter()
                .enumerate()
                .filter(|(_, op)| {
                    let (a, b) = op.io();
                    a.contains(&(i as u32)) || b.contains(&(i as u32))
                })
                .map(|(k, _)| k)
                .collect();
            let mut lo = *touch.first().unwrap();
            let mut hi = *touch.last().unwrap();
            if start.contains(&(i as u32)) {
                lo = 0;
            }
            if end.contains(&(i as u32)) {
                hi = ops.len();
            }
            (lo, hi)
        };
        for i in 0..ts.len() {
            assert_eq!(ts[i].offset % 64, 0);
            assert!(ts[i].offset + ts[i].bytes() <= size);
            for j in 0..i {
                let ((a0, a1), (b0, b1)) = (life(i), life(j));
                if a0 <= b1 && b0 <= a1 {
                    assert!(!overlap(&ts[i], &ts[j]), "tensors {i} and {j} overlap");
                }
            }
        }
    }

    #[test]
    fn chain_reuses_dead_tensors_and_never_overlaps_live_ones() {
        // x -> a -> b -> c -> y: a and c may share bytes, neighbours may not.
        let mut ts = alloc::vec![t(100), t(1000), t(1000), t(1000), t(10)];
        let ops = [un(0, 1), un(1, 2), un(2, 3), un(3, 4)];
        let size = plan_arena(&mut ts, &ops, &[0], &[4]);
        check(&ts, &ops, &[0], &[4], size);
        assert_eq!(
            ts[1].offset, ts[3].offset,
            "a dead tensor's bytes are reused"
        );
        assert!(size < 3 * 4000, "{size}");
    }

    /// Tensors no op touches (a dead branch larger than everything live) lie inside the
    /// arena, so the plan loads; the live tensors keep their places.
    #[test]
    fn untouched_tensors_lie_inside_the_arena() {
        let mut ts = alloc::vec![t(16), t(16), t(5000), t(16)];
        let ops = [un(0, 1)];
        let size = plan_arena(&mut ts, &ops, &[0], &[1]);
        check(&ts[..2], &ops, &[0], &[1], size);
        for t in &ts {
            assert!(
                t.offset + t.bytes() <= size,
                "{} + {} > {size}",
                t.offset,
                t.bytes()
            );
        }
        // No ops at all (a model whose outputs are gone): still inside.
        let mut ts = alloc::vec![t(16), t(900)];
        let size = plan_arena(&mut ts, &[], &[0], &[]);
        assert!(ts.iter().all(|t| t.offset + t.bytes() <= size));
    }

    #[test]
    fn pinned_tensors_live_the_whole_run() {
        // A tap (tensor 1) pinned to the end keeps its bytes though nothing reads it later.
        let mut ts = alloc::vec![t(64), t(64), t(64), t(64)];
        let ops = [un(0, 1), un(1, 2), un(2, 3)];
        let size = plan_arena(&mut ts, &ops, &[0], &[1, 3]);
        check(&ts, &ops, &[0], &[1, 3], size);
        assert_ne!(ts[1].offset, ts[3].offset);
    }

    #[test]
    fn random_graphs_never_overlap_live_tensors() {
        let mut rng = crate::adapt::rng::Rng::new(7);
        for _ in 0..50 {
            let n = 3 + rng.below(12);
            let mut ts: alloc::vec::Vec<TensorInfo> =
                (0..n).map(|_| t(1 + rng.below(3000))).collect();
            // Each op reads an earlier tensor and writes the next one.
            let ops: alloc::vec::Vec<Op> =
                (1..n).map(|y| un(rng.below(y) as u32, y as u32)).collect();
            let end = [(n - 1) as u32];
            let size = plan_arena(&mut ts, &ops, &[0], &end);
            check(&ts, &ops, &[0], &end, size);
        }
    }

    fn copy(x: u32, y: u32) -> Op {
        Op::UnaryF32 {
            x,
            y,
            f: Unary::Identity,
        }
    }

    /// Oracle by running: every byte of the arena remembers which value was last written
    /// there; each op must read its inputs' values whole, and the pinned outputs must hold
    /// theirs at the end. A copy's output holds its input's value.
    fn simulate(ts: &[TensorInfo], ops: &[Op], start: &[u32], end: &[u32], size: usize) {
        let mut val: alloc::vec::Vec<usize> = (0..ts.len()).collect();
        for op in ops {
            if let Op::UnaryF32 {
                x,
                y,
                f: Unary::Identity,
            } = *op
            {
                val[y as usize] = val[x as usize];
            }
        }
        let mut mem = alloc::vec![usize::MAX; size];
        let span = |t: usize| ts[t].offset..ts[t].offset + ts[t].bytes();
        for &t in start {
            mem[span(t as usize)].fill(val[t as usize]);
        }
        for (k, op) in ops.iter().enumerate() {
            let (ins, outs) = op.io();
            for &t in ins.iter() {
                let t = t as usize;
                assert!(
                    mem[span(t)].iter().all(|&v| v == val[t]),
                    "op {k} reads {t} overwritten"
                );
            }
            for &t in outs.iter() {
                mem[span(t as usize)].fill(val[t as usize]);
            }
        }
        for &t in end {
            let t = t as usize;
            assert!(
                mem[span(t)].iter().all(|&v| v == val[t]),
                "output {t} overwritten"
            );
        }
    }

    #[test]
    fn copies_share_bytes_and_live_as_long_as_either_side() {
        // 0 -> copy 1 -> relu 2 -> copy 3 -> relu 4, with 1 read again at the end (5).
        let mut ts = alloc::vec![t(256), t(256), t(256), t(256), t(256), t(256)];
        let ops = [copy(0, 1), un(1, 2), copy(2, 3), un(3, 4), un(1, 5)];
        let size = plan_arena(&mut ts, &ops, &[0], &[4, 5]);
        simulate(&ts, &ops, &[0], &[4, 5], size);
        assert_eq!(ts[0].offset, ts[1].offset);
        assert_eq!(ts[2].offset, ts[3].offset);
        // Without the copies the chain needs 0/1 alive with 2, 3 and 4: the sharing saves
        // two tensors' bytes.
        assert!(size <= 3 * 1024, "{size}");
    }

    #[test]
    fn random_graphs_with_copies_keep_every_value() {
        let mut rng = crate::adapt::rng::Rng::new(11);
        for _ in 0..200 {
            let n = 3 + rng.below(14);
            let mut ts: alloc::vec::Vec<TensorInfo> = alloc::vec![t(1 + rng.below(300))];
            let mut ops = alloc::vec::Vec::new();
            for y in 1..n {
                let x = rng.below(y);
                if rng.below(2) == 0 {
                    ts.push(t(ts[x].shape[0]));
                    ops.push(copy(x as u32, y as u32));
                } else {
                    ts.push(t(1 + rng.below(300)));
                    ops.push(un(x as u32, y as u32));
                }
            }
            let end = [(n - 1) as u32, rng.below(n) as u32];
            let size = plan_arena(&mut ts, &ops, &[0], &end);
            simulate(&ts, &ops, &[0], &end, size);
        }
    }
}
