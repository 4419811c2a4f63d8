//! Adapter files (`.eta`): method, hyper-parameters, class names and weights, bound to the
//! hash of the plan they were trained on. Little-endian; a 48-byte header then a body.

use super::cache::TapShape;
use super::heads::{Ladder, Query};
use super::linear::LinearHead;
use super::method::{Kind, Method};
use super::ncm::Ncm;
use super::tail::Tail;
use super::train::Head;
use crate::error::{Error, Result};
use crate::plan::fnv64;
use crate::wire::{Reader, Writer};
use alloc::string::String;
use alloc::vec::Vec;

pub const MAGIC: [u8; 4] = *b"ETA\0";
pub const VERSION: u32 = 2;

/// Bounds on what an adapter may declare, checked before anything is sized from them.
pub const MAX_TAPS: usize = 16;
const MAX_TAP_LEN: usize = 1 << 26;
const MAX_WIDTH: usize = 1 << 12;
const MAX_QUERIES: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    pub plan_hash: [u8; 16],
    /// The plan outputs or taps the adapter reads, in order, with their shapes.
    pub taps: Vec<(String, TapShape)>,
    pub classes: Vec<String>,
    pub hyper: Vec<(String, String)>,
    pub method: Method,
}

fn bad(detail: &'static str) -> Error {
    Error::BadFile {
        what: "adapter",
        detail: detail.into(),
    }
}

fn floats(w: &mut Writer, v: &[f32]) {
    w.u32(v.len() as u32);
    v.iter().for_each(|&x| w.f32(x));
}

fn read_floats(r: &mut Reader, expect: usize) -> Result<Vec<f32>> {
    let n = r.count(4).map_err(|_| bad("weights truncated"))?;
    if n != expect {
        return Err(bad("weight count does not match the dimensions"));
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let x = r.f32()?;
        if !x.is_finite() {
            return Err(Error::NonFinite {
                what: "adapter weights".into(),
            });
        }
        v.push(x);
    }
    Ok(v)
}

impl Adapter {
    /// An adapter of `method` reading `taps` of `plan`, bound to the plan's hash.
    pub fn new(
        plan: &crate::plan::Plan,
        taps: Vec<(String, TapShape)>,
        classes: Vec<String>,
        hyper: Vec<(String, String)>,
        method: Method,
    ) -> Adapter {
        Adapter {
            plan_hash: plan.hash(),
            taps,
            classes,
            hyper,
            method,
        }
    }

    /// The value of hyper-parameter `key`, if recorded.
    pub fn hyper(&self, key: &str) -> Option<&str> {
        self.hyper
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.taps.len() as u32);
        for (name, d) in &self.taps {
            w.str(name);
            w.u32(d.tokens as u32);
            w.u32(d.dim as u32);
        }
        w.u32(self.classes.len() as u32);
        self.classes.iter().for_each(|c| w.str(c));
        w.u32(self.hyper.len() as u32);
        for (k, v) in &self.hyper {
            w.str(k);
            w.str(v);
        }
        match &self.method {
            Method::Ncm(n) => {
                w.u8(0);
                w.u32(n.dim as u32);
                w.u32(n.classes() as u32);
                for (s, &c) in n.sums.iter().zip(&n.counts) {
                    w.u32(c);
                    floats(&mut w, s);
                }
            }
            Method::Linear(l) | Method::Moment(l) => {
                w.u8(if matches!(self.method, Method::Linear(_)) {
                    1
                } else {
                    2
                });
                w.u32(l.dim as u32);
                w.u32(l.classes as u32);
                floats(&mut w, &l.w);
                floats(&mut w, &l.b);
            }
            Method::Ladder {
                width,
                classes,
                params,
                ..
            } => {
                w.u8(3);
                w.u32(*width as u32);
                w.u32(*classes as u32);
                floats(&mut w, params);
            }
            Method::Query {
                queries,
                classes,
                params,
                ..
            } => {
                w.u8(4);
                w.u32(*queries as u32);
                w.u32(*classes as u32);
                floats(&mut w, params);
            }
            Method::Tail {
                kind,
                rank,
                classes,
                params,
                ..
            } => {
                w.u8(match kind {
                    Kind::Bias => 6,
                    Kind::Lora => 7,
                    _ => 5,
                });
                w.u32(*rank as u32);
                w.u32(*classes as u32);
                floats(&mut w, params);
            }
        }
        let body = w.into_inner();
        let mut out = Vec::with_capacity(48 + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&fnv64(0xcbf2_9ce4_8422_2325, &body).to_le_bytes());
        out.extend_from_slice(&self.plan_hash);
        out.extend_from_slice(&[0u8; 8]);
        out.extend_from_slice(&body);
        out
    }

    /// Parses an adapter and checks it belongs to the plan with hash `plan_hash`.
    pub fn from_bytes(data: &[u8], plan_hash: &[u8; 16]) -> Result<Adapter> {
        if data.len() < 48 {
            return Err(bad("truncated header"));
        }
        if data[..4] != MAGIC {
            return Err(bad("wrong magic (not an edgetune adapter)"));
        }
        let version = u32::from_le_bytes(data[4..8].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(Error::BadFile {
                what: "adapter",
                detail: alloc::format!("version {version} (supported: {VERSION})").into(),
            });
        }
        let len = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
        if len != (data.len() - 48) as u64 {
            return Err(bad("body length does not match the file size (truncated?)"));
        }
        let body = &data[48..];
        if fnv64(0xcbf2_9ce4_8422_2325, body)
            != u64::from_le_bytes(data[16..24].try_into().unwrap_or_default())
        {
            return Err(bad("checksum mismatch"));
        }
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&data[24..40]);
        if &hash != plan_hash {
            return Err(Error::PlanMismatch {
                expected: *plan_hash,
                got: hash,
            });
        }
        let mut r = Reader::new(body);
        let nt = r.count(12)?;
        if nt == 0 || nt > MAX_TAPS {
            return Err(bad("tap count out of range"));
        }
        let mut taps = Vec::with_capacity(nt);
        for _ in 0..nt {
            let name = r.str()?;
            let (tokens, dim) = (r.u32()? as usize, r.u32()? as usize);
            if tokens == 0 || dim == 0 || tokens.checked_mul(dim).is_none_or(|l| l > MAX_TAP_LEN) {
                return Err(bad("tap shape out of range"));
            }
            taps.push((name, TapShape { tokens, dim }));
        }
        let dims: Vec<TapShape> = taps.iter().map(|t| t.1).collect();
        let nc = r.count(4)?;
        let classes = (0..nc).map(|_| r.str()).collect::<Result<Vec<_>>>()?;
        let nh = r.count(8)?;
        let hyper = (0..nh)
            .map(|_| Ok((r.str()?, r.str()?)))
            .collect::<Result<Vec<_>>>()?;
        let tag = r.u8()?;
        let dim = r.u32()? as usize;
        let k = r.u32()? as usize;
        if k != classes.len()
            || k < 2
            || (dim == 0 && tag < 5)
            || dim.saturating_mul(k).saturating_mul(4) > r.remaining()
        {
            return Err(bad(
                "dimensions do not match the class list or the file size",
            ));
        }
        let probe_dim = match tag {
            2 => 2 * dims[0].dim,
            _ => dims[0].dim,
        };
        if tag <= 2 && dim != probe_dim {
            return Err(bad("head width does not match its tap"));
        }
        let method = match tag {
            0 => {
                let mut n = Ncm::new(dim);
                for _ in 0..k {
                    n.counts.push(r.u32()?);
                    n.sums.push(read_floats(&mut r, dim)?);
                }
                Method::Ncm(n)
            }
            1 | 2 => {
                let l = LinearHead {
                    dim,
                    classes: k,
                    w: read_floats(&mut r, dim * k)?,
                    b: read_floats(&mut r, k)?,
                };
                if tag == 1 {
                    Method::Linear(l)
                } else {
                    Method::Moment(l)
                }
            }
            3 => {
                // `dim` is the side width here.
                if dim > MAX_WIDTH {
                    return Err(bad("side width out of range"));
                }
                let sel = (0..dims.len()).collect();
                let h = Ladder::new(dims.clone(), sel, dim, k);
                Method::Ladder {
                    params: read_floats(&mut r, h.n_params())?,
                    taps: dims,
                    width: dim,
                    classes: k,
                }
            }
            4 => {
                // `dim` is the number of queries per tap here.
                if dim > MAX_QUERIES {
                    return Err(bad("query count out of range"));
                }
                let sel = (0..dims.len()).collect();
                let h = Query::new(dims.clone(), sel, dim, k);
                Method::Query {
                    params: read_floats(&mut r, h.n_params())?,
                    taps: dims,
                    queries: dim,
                    classes: k,
                }
            }
            5..=7 => {
                // `dim` is the low-rank rank here; the parameters are checked against the
                // plan's tail when the adapter is bound.
                if dim > MAX_WIDTH {
                    return Err(bad("rank out of range"));
                }
                let n = r.count(4).map_err(|_| bad("weights truncated"))?;
                let mut params = Vec::with_capacity(n);
                for _ in 0..n {
                    let x = r.f32()?;
                    if !x.is_finite() {
                        return Err(Error::NonFinite {
                            what: "adapter weights".into(),
                        });
                    }
                    params.push(x);
                }
                Method::Tail {
                    kind: [Kind::Tail, Kind::Bias, Kind::Lora][tag as usize - 5],
                    rank: dim,
                    classes: k,
                    params,
                    tail: None,
                }
            }
            _ => return Err(bad("unknown method")),
        };
        if r.remaining() != 0 {
            return Err(bad("trailing bytes"));
        }
        Ok(Adapter {
            plan_hash: hash,
            taps,
            classes,
            hyper,
            method,
        })
    }

    /// Binds a tail adapter to its plan: rebuilds the float tail after the cut tap from the
    /// frozen plan and checks the trained tensors fit it. Other methods need nothing.
    pub fn bind(&mut self, plan: &crate::plan::Plan) -> Result<()> {
        if plan.hash() != self.plan_hash {
            return Err(Error::PlanMismatch {
                expected: plan.hash(),
                got: self.plan_hash,
            });
        }
        let cut = self.taps[0].0.clone();
        let cut_dims = self.taps[0].1;
        if let Method::Tail {
            kind,
            rank,
            classes,
            params,
            tail,
        } = &mut self.method
        {
            let spec = super::Spec {
                rank: *rank,
                ..super::Spec::new(*kind)
            }
            .bind_tail(plan, &cut)?;
            let net = spec.tail.clone().ok_or_else(|| bad("tail"))?;
            let t = Tail::new(net, spec.variant(), *classes);
            if t.n_params() != params.len() || t.net.cut_dims() != cut_dims {
                return Err(bad("tail parameters do not match the plan's tail"));
            }
            t.prepare(params);
            *tail = Some(alloc::boxed::Box::new(t));
        }
        Ok(())
    }

    /// Writes atomically: temporary file in the same folder, fsync, rename. A crash at
    /// any moment leaves either the old file or the new one, never a mix.
    #[cfg(feature = "std")]
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        crate::fsutil::write_atomic(path, &self.to_bytes())
    }

    #[cfg(feature = "std")]
    pub fn load(path: &std::path::Path, plan_hash: &[u8; 16]) -> Result<Adapter> {
        let data = std::fs::read(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Adapter::from_bytes(&data, plan_hash)
    }
}
