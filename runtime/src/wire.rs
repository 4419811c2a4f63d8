//! Little-endian encoding of plan metadata, with bounds-checked reads.

use crate::error::Result;
use crate::plan::{bad, BinOp, Blob, Op, Src, Unary, Q8};
use alloc::string::String;
use alloc::vec::Vec;
use edgetune_kernels::reference::ConvGeom;

#[derive(Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
    pub fn u8(&mut self, v: u8) {
        self.0.push(v)
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    pub fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    pub fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes())
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b)
    }
}

pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(bad("metadata truncated"));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.arr()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    pub fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.arr()?))
    }
    /// A count of items each at least `min_bytes` long: checked against what remains, so
    /// a corrupt count cannot trigger a huge allocation.
    pub fn count(&mut self, min_bytes: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes.max(1)) > self.remaining() {
            return Err(bad("count larger than the data that follows"));
        }
        Ok(n)
    }
    pub fn str(&mut self) -> Result<String> {
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("name is not UTF-8"))
    }
}

fn w_geom(w: &mut Writer, g: &ConvGeom) {
    for v in [
        g.h,
        g.w,
        g.ic,
        g.oc,
        g.kh,
        g.kw,
        g.stride_h,
        g.stride_w,
        g.dil_h,
        g.dil_w,
        g.pad_top,
        g.pad_left,
        g.pad_bottom,
        g.pad_right,
        g.groups,
    ] {
        w.u32(v as u32);
    }
}

fn r_geom(r: &mut Reader) -> Result<ConvGeom> {
    let mut v = [0usize; 15];
    for x in v.iter_mut() {
        *x = r.u32()? as usize;
    }
    let g = ConvGeom {
        h: v[0],
        w: v[1],
        ic: v[2],
        oc: v[3],
        kh: v[4],
        kw: v[5],
        stride_h: v[6],
        stride_w: v[7],
        dil_h: v[8],
        dil_w: v[9],
        pad_top: v[10],
        pad_left: v[11],
        pad_bottom: v[12],
        pad_right: v[13],
        groups: v[14],
    };
    let bad_geom = g.kh == 0
        || g.kw == 0
        || g.stride_h == 0
        || g.stride_w == 0
        || g.dil_h == 0
        || g.dil_w == 0
        || g.groups == 0;
    if bad_geom
        || !g.ic.is_multiple_of(g.groups)
        || !g.oc.is_multiple_of(g.groups)
        || g.dil_h * (g.kh - 1) + 1 > g.h + g.pad_top + g.pad_bottom
        || g.dil_w * (g.kw - 1) + 1 > g.w + g.pad_left + g.pad_right
    {
        return Err(bad("invalid convolution geometry"));
    }
    Ok(g)
}

fn w_blob(w: &mut Writer, b: Blob) {
    w.u32(b.off);
    w.u32(b.len);
}

fn r_blob(r: &mut Reader) -> Result<Blob> {
    Ok(Blob {
        off: r.u32()?,
        len: r.u32()?,
    })
}

fn w_src(w: &mut Writer, s: Src) {
    match s {
        Src::T(t) => {
            w.u8(0);
            w.u32(t);
        }
        Src::C(b) => {
            w.u8(1);
            w_blob(w, b);
        }
    }
}

fn r_src(r: &mut Reader) -> Result<Src> {
    match r.u8()? {
        0 => Ok(Src::T(r.u32()?)),
        1 => Ok(Src::C(r_blob(r)?)),
        _ => Err(bad("bad operand tag")),
    }
}

fn w_q(w: &mut Writer, q: Q8) {
    w.f32(q.scale);
    w.i32(q.zero);
}

fn r_q(r: &mut Reader) -> Result<Q8> {
    let q = Q8 {
        scale: r.f32()?,
        zero: r.i32()?,
    };
    if q.scale.is_nan()
        || q.scale.is_infinite()
        || q.scale <= 0.0
        || !(-128..=255).contains(&q.zero)
    {
        return Err(bad("invalid quantisation parameters"));
    }
    Ok(q)
}

fn w_opt(w: &mut Writer, s: Option<u32>) {
    w.u32(s.map_or(u32::MAX, |v| v))
}

fn r_opt(r: &mut Reader) -> Result<Option<u32>> {
    let v = r.u32()?;
    Ok(if v == u32::MAX { None } else { Some(v) })
}

pub fn write_op(w: &mut Writer, op: &Op) {
    match op {
        Op::Quantize { x, y, q, to_nhwc } => {
            w.u8(0);
            w.u32(*x);
            w.u32(*y);
            w_q(w, *q);
            w.u8(*to_nhwc as u8);
        }
        Op::Dequantize { x, y, q, to_nchw } => {
            w.u8(1);
            w.u32(*x);
            w.u32(*y);
            w_q(w, *q);
            w.u8(*to_nchw as u8);
        }
        Op::ConvI8 {
            x,
            y,
            scratch,
            geom,
            x_zero,
            y_zero,
            w: wt,
            colsum,
            bias,
            scale,
        } => {
            w.u8(2);
            w.u32(*x);
            w.u32(*y);
            w_opt(w, *scratch);
            w_geom(w, geom);
            w.i32(*x_zero);
            w.i32(*y_zero);
            for b in [wt, colsum, bias, scale] {
                w_blob(w, *b);
            }
        }
        Op::DwI8 {
            x,
            y,
            geom,
            x_zero,
            y_zero,
            w: wt,
            bias,
            scale,
        } => {
            w.u8(3);
            w.u32(*x);
            w.u32(*y);
            w_geom(w, geom);
            w.i32(*x_zero);
            w.i32(*y_zero);
            for b in [wt, bias, scale] {
                w_blob(w, *b);
            }
        }
        Op::AddU8 {
            a,
            b,
            y,
            qa,
            qb,
            qy,
        } => {
            w.u8(4);
            w.u32(*a);
            w.u32(*b);
            w.u32(*y);
            for q in [qa, qb, qy] {
                w_q(w, *q);
            }
        }
        Op::GapU8 { x, y, qx, qy } => {
            w.u8(5);
            w.u32(*x);
            w.u32(*y);
            w_q(w, *qx);
            w_q(w, *qy);
        }
        Op::ConvF32 {
            x,
            y,
            scratch,
            geom,
            w: wt,
            bias,
            lo,
            hi,
        } => {
            w.u8(6);
            w.u32(*x);
            w.u32(*y);
            w_opt(w, *scratch);
            w_geom(w, geom);
            w_blob(w, *wt);
            w_blob(w, *bias);
            w.f32(*lo);
            w.f32(*hi);
        }
        Op::UnaryF32 { x, y, f } => {
            w.u8(7);
            w.u32(*x);
            w.u32(*y);
            w.u8(*f as u8);
        }
        Op::AddF32 { a, b, y } => {
            w.u8(8);
            w.u32(*a);
            w.u32(*b);
            w.u32(*y);
        }
        Op::GapF32 { x, y } => {
            w.u8(9);
            w.u32(*x);
            w.u32(*y);
        }
        Op::MaxPoolU8 { x, y, geom } => {
            w.u8(10);
            w.u32(*x);
            w.u32(*y);
            w_geom(w, geom);
        }
        Op::LutU8 {
            x,
            y,
            channels,
            table,
        } => {
            w.u8(11);
            w.u32(*x);
            w.u32(*y);
            w.u32(*channels);
            w_blob(w, *table);
        }
        Op::BinF32 {
            a,
            b,
            y,
            f,
            dims,
            sa,
            sb,
        } => {
            w.u8(12);
            w_src(w, *a);
            w_src(w, *b);
            w.u32(*y);
            w.u8(*f as u8);
            for v in dims.iter().chain(sa).chain(sb) {
                w.u32(*v);
            }
        }
        Op::ClampF32 { x, y, lo, hi } => {
            w.u8(13);
            w.u32(*x);
            w.u32(*y);
            w.f32(*lo);
            w.f32(*hi);
        }
        Op::SumF32 {
            x,
            y,
            outer,
            len,
            inner,
        } => {
            w.u8(14);
            for v in [x, y, outer, len, inner] {
                w.u32(*v);
            }
        }
        Op::LayerNormF32 {
            x,
            y,
            cols,
            gamma,
            beta,
            eps,
        } => {
            w.u8(15);
            for v in [x, y, cols] {
                w.u32(*v);
            }
            w_blob(w, *gamma);
            w_blob(w, *beta);
            w.f32(*eps);
        }
        Op::SoftmaxF32 { x, y, cols } => {
            w.u8(16);
            for v in [x, y, cols] {
                w.u32(*v);
            }
        }
        Op::TransposeF32 { x, y, dims, perm } => {
            w.u8(17);
            w.u32(*x);
            w.u32(*y);
            dims.iter().for_each(|d| w.u32(*d));
            perm.iter().for_each(|p| w.u8(*p));
        }
        Op::MatMulF32 {
            a,
            b,
            y,
            scratch,
            batch,
            m,
            k,
            n,
        } => {
            w.u8(18);
            for v in [a, b, y, scratch, batch, m, k, n] {
                w.u32(*v);
            }
        }
        Op::MatMulDynI8 {
            x,
            y,
            scratch,
            m,
            k,
            n,
            w: wt,
            colsum,
            wscale,
        } => {
            w.u8(19);
            for v in [x, y, scratch, m, k, n] {
                w.u32(*v);
            }
            for b in [wt, colsum, wscale] {
                w_blob(w, *b);
            }
        }
        Op::GatherF32 {
            ids,
            y,
            table,
            rows,
            dim,
            quant,
        } => {
            w.u8(20);
            w.u32(*ids);
            w.u32(*y);
            w_blob(w, *table);
            w.u32(*rows);
            w.u32(*dim);
            match quant {
                Some((s, z)) => {
                    w.u8(1);
                    w.f32(*s);
                    w.i32(*z);
                }
                None => w.u8(0),
            }
        }
        Op::LutF32 {
            x,
            y,
            channels,
            table,
            to_nchw,
        } => {
            w.u8(21);
            w.u32(*x);
            w.u32(*y);
            w.u32(*channels);
            w_blob(w, *table);
            w.u8(*to_nchw as u8);
        }
        Op::Concat {
            a,
            b,
            y,
            outer,
            ia,
            ib,
            ta,
            tb,
        } => {
            w.u8(22);
            for v in [a, b, y, outer, ia, ib] {
                w.u32(*v);
            }
            w_blob(w, *ta);
            w_blob(w, *tb);
        }
        Op::Slice {
            x,
            y,
            outer,
            inner,
            off,
            len,
        } => {
            w.u8(23);
            for v in [x, y, outer, inner, off, len] {
                w.u32(*v);
            }
        }
        Op::Pad {
            x,
            y,
            dims,
            before,
            after,
            value,
        } => {
            w.u8(24);
            w.u32(*x);
            w.u32(*y);
            for v in dims.iter().chain(before).chain(after) {
                w.u32(*v);
            }
            w.u32(*value);
        }
        Op::Upsample {
            x,
            y,
            outer,
            h,
            w: width,
            inner,
            fh,
            fw,
        } => {
            w.u8(25);
            for v in [x, y, outer, h, width, inner, fh, fw] {
                w.u32(*v);
            }
        }
    }
}

pub fn read_op(r: &mut Reader) -> Result<Op> {
    Ok(match r.u8()? {
        0 => Op::Quantize {
            x: r.u32()?,
            y: r.u32()?,
            q: r_q(r)?,
            to_nhwc: r.u8()? != 0,
        },
        1 => Op::Dequantize {
            x: r.u32()?,
            y: r.u32()?,
            q: r_q(r)?,
            to_nchw: r.u8()? != 0,
        },
        2 => Op::ConvI8 {
            x: r.u32()?,
            y: r.u32()?,
            scratch: r_opt(r)?,
            geom: r_geom(r)?,
            x_zero: r.i32()?,
            y_zero: r.i32()?,
            w: r_blob(r)?,
            colsum: r_blob(r)?,
            bias: r_blob(r)?,
            scale: r_blob(r)?,
        },
        3 => Op::DwI8 {
            x: r.u32()?,
            y: r.u32()?,
            geom: r_geom(r)?,
            x_zero: r.i32()?,
            y_zero: r.i32()?,
            w: r_blob(r)?,
            bias: r_blob(r)?,
            scale: r_blob(r)?,
        },
        4 => Op::AddU8 {
            a: r.u32()?,
            b: r.u32()?,
            y: r.u32()?,
            qa: r_q(r)?,
            qb: r_q(r)?,
            qy: r_q(r)?,
        },
        5 => Op::GapU8 {
            x: r.u32()?,
            y: r.u32()?,
            qx: r_q(r)?,
            qy: r_q(r)?,
        },
        6 => Op::ConvF32 {
            x: r.u32()?,
            y: r.u32()?,
            scratch: r_opt(r)?,
            geom: r_geom(r)?,
            w: r_blob(r)?,
            bias: r_blob(r)?,
            lo: r.f32()?,
            hi: r.f32()?,
        },
        7 => Op::UnaryF32 {
            x: r.u32()?,
            y: r.u32()?,
            f: match r.u8()? {
                0 => Unary::Relu,
                1 => Unary::Relu6,
                2 => Unary::Sigmoid,
                3 => Unary::HardSwish,
                4 => Unary::GeluErf,
                5 => Unary::Erf,
                6 => Unary::Sqrt,
                7 => Unary::Identity,
                8 => Unary::Tanh,
                9 => Unary::Exp,
                10 => Unary::Log,
                11 => Unary::Abs,
                12 => Unary::Neg,
                _ => return Err(bad("unknown unary op")),
            },
        },
        8 => Op::AddF32 {
            a: r.u32()?,
            b: r.u32()?,
            y: r.u32()?,
        },
        9 => Op::GapF32 {
            x: r.u32()?,
            y: r.u32()?,
        },
        10 => Op::MaxPoolU8 {
            x: r.u32()?,
            y: r.u32()?,
            geom: r_geom(r)?,
        },
        11 => Op::LutU8 {
            x: r.u32()?,
            y: r.u32()?,
            channels: r.u32()?,
            table: r_blob(r)?,
        },
        12 => {
            let (a, b, y) = (r_src(r)?, r_src(r)?, r.u32()?);
            let f = match r.u8()? {
                0 => BinOp::Add,
                1 => BinOp::Sub,
                2 => BinOp::Mul,
                3 => BinOp::Div,
                _ => return Err(bad("unknown binary op")),
            };
            let mut v = [0u32; 12];
            for x in v.iter_mut() {
                *x = r.u32()?;
            }
            Op::BinF32 {
                a,
                b,
                y,
                f,
                dims: [v[0], v[1], v[2], v[3]],
                sa: [v[4], v[5], v[6], v[7]],
                sb: [v[8], v[9], v[10], v[11]],
            }
        }
        13 => Op::ClampF32 {
            x: r.u32()?,
            y: r.u32()?,
            lo: r.f32()?,
            hi: r.f32()?,
        },
        14 => Op::SumF32 {
            x: r.u32()?,
            y: r.u32()?,
            outer: r.u32()?,
            len: r.u32()?,
            inner: r.u32()?,
        },
        15 => Op::LayerNormF32 {
            x: r.u32()?,
            y: r.u32()?,
            cols: r.u32()?,
            gamma: r_blob(r)?,
            beta: r_blob(r)?,
            eps: r.f32()?,
        },
        16 => Op::SoftmaxF32 {
            x: r.u32()?,
            y: r.u32()?,
            cols: r.u32()?,
        },
        17 => {
            let (x, y) = (r.u32()?, r.u32()?);
            let dims = [r.u32()?, r.u32()?, r.u32()?, r.u32()?];
            let perm = [r.u8()?, r.u8()?, r.u8()?, r.u8()?];
            Op::TransposeF32 { x, y, dims, perm }
        }
        18 => Op::MatMulF32 {
            a: r.u32()?,
            b: r.u32()?,
            y: r.u32()?,
            scratch: r.u32()?,
            batch: r.u32()?,
            m: r.u32()?,
            k: r.u32()?,
            n: r.u32()?,
        },
        19 => Op::MatMulDynI8 {
            x: r.u32()?,
            y: r.u32()?,
            scratch: r.u32()?,
            m: r.u32()?,
            k: r.u32()?,
            n: r.u32()?,
            w: r_blob(r)?,
            colsum: r_blob(r)?,
            wscale: r_blob(r)?,
        },
        20 => Op::GatherF32 {
            ids: r.u32()?,
            y: r.u32()?,
            table: r_blob(r)?,
            rows: r.u32()?,
            dim: r.u32()?,
            quant: match r.u8()? {
                0 => None,
                1 => Some((r.f32()?, r.i32()?)),
                _ => return Err(bad("bad gather quantisation flag")),
            },
        },
        21 => Op::LutF32 {
            x: r.u32()?,
            y: r.u32()?,
            channels: r.u32()?,
            table: r_blob(r)?,
            to_nchw: r.u8()? != 0,
        },
        22 => Op::Concat {
            a: r.u32()?,
            b: r.u32()?,
            y: r.u32()?,
            outer: r.u32()?,
            ia: r.u32()?,
            ib: r.u32()?,
            ta: r_blob(r)?,
            tb: r_blob(r)?,
        },
        23 => Op::Slice {
            x: r.u32()?,
            y: r.u32()?,
            outer: r.u32()?,
            inner: r.u32()?,
            off: r.u32()?,
            len: r.u32()?,
        },
        24 => {
            let (x, y) = (r.u32()?, r.u32()?);
            let mut a = [[0u32; 4]; 3];
            for row in a.iter_mut() {
                for v in row.iter_mut() {
                    *v = r.u32()?;
                }
            }
            Op::Pad {
                x,
                y,
                dims: a[0],
                before: a[1],
                after: a[2],
                value: r.u32()?,
            }
        }
        25 => Op::Upsample {
            x: r.u32()?,
            y: r.u32()?,
            outer: r.u32()?,
            h: r.u32()?,
            w: r.u32()?,
            inner: r.u32()?,
            fh: r.u32()?,
            fw: r.u32()?,
        },
        _ => return Err(bad("unknown op tag")),
    })
}

/// Every weight range an op reads.
pub fn blobs(op: &Op) -> heapless::Vec<Blob, 4> {
    let mut v = heapless::Vec::new();
    let list: &[Blob] = match op {
        Op::ConvI8 {
            w,
            colsum,
            bias,
            scale,
            ..
        } => &[*w, *colsum, *bias, *scale],
        Op::DwI8 { w, bias, scale, .. } => &[*w, *bias, *scale],
        Op::ConvF32 { w, bias, .. } => &[*w, *bias],
        Op::LutU8 { table, .. } | Op::LutF32 { table, .. } => &[*table],
        Op::Concat { ta, tb, .. } => &[*ta, *tb],
        Op::GatherF32 { table, .. } => &[*table],
        Op::LayerNormF32 { gamma, beta, .. } => &[*gamma, *beta],
        Op::MatMulDynI8 {
            w, colsum, wscale, ..
        } => &[*w, *colsum, *wscale],
        Op::BinF32 { a, b, .. } => {
            for s in [a, b] {
                if let Src::C(c) = s {
                    let _ = v.push(*c);
                }
            }
            &[]
        }
        _ => &[],
    };
    for b in list {
        let _ = v.push(*b);
    }
    v
}
