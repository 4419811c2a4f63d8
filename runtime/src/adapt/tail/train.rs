//! The trainable tail: which parameters a variant trains, where they and the per-example
//! scratch live, the effective weights, and the float kernels of the passes.

use super::net::{Layer, TailNet};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ops::Range;
use edgetune_kernels::{ops as kops, pack, Act, Kernels};

/// Which parameters of the tail are trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Full,
    Bias,
    Lora { rank: usize },
}

/// Where each trained tensor of a layer lives in the flat parameter vector.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct PRanges {
    pub(super) w: Option<Range<usize>>,
    pub(super) b: Option<Range<usize>>,
    pub(super) g: Option<Range<usize>>,
    pub(super) a: Option<Range<usize>>,
    pub(super) bb: Option<Range<usize>>,
}

/// The trainable tail with its classifier: a [`Head`] over the cut tap.
pub struct Tail {
    pub net: Arc<TailNet>,
    pub variant: Variant,
    pub classes: usize,
    /// Cosine classifier temperature.
    pub scale: f32,
    /// Learning-rate multiplier of the tail's own weights (the classifier gets 1).
    pub body_lr: f32,
    /// Unit-norm class prototypes (`classes × features`) that initialise the classifier.
    pub proto: Vec<f32>,
    /// Which of the taps passed to `forward` is the cut.
    pub tap: usize,
    pub(super) pr: Vec<PRanges>,
    pub(super) head: Range<usize>,
    pub(super) n_params: usize,
    /// Per 1×1 layer: packed `W` (forward) and packed `Wᵀ` (input gradient).
    pub(super) packs: Vec<(Range<usize>, Range<usize>)>,
    pub(super) prep: RefCell<Vec<f32>>,
    /// Scratch layout of one example.
    pub(super) sc: Scratch,
    /// Scratch layout of the largest batch asked for so far.
    pub(super) bsc: RefCell<Option<Scratch>>,
    pub(super) kern: Kernels,
    /// Threads of the tail's GEMMs (std builds: the process default; any count gives the
    /// same bits).
    pub(super) par: crate::par::Par,
}

impl core::fmt::Debug for Tail {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Tail {{ cut: {}, variant: {:?}, classes: {}, params: {} }}",
            self.net.cut, self.variant, self.classes, self.n_params
        )
    }
}

impl Clone for Tail {
    fn clone(&self) -> Tail {
        let mut t = Tail::new(self.net.clone(), self.variant, self.classes);
        t.scale = self.scale;
        t.body_lr = self.body_lr;
        t.proto = self.proto.clone();
        t.tap = self.tap;
        t
    }
}

impl PartialEq for Tail {
    fn eq(&self, o: &Tail) -> bool {
        self.net == o.net
            && self.variant == o.variant
            && self.classes == o.classes
            && self.scale == o.scale
    }
}

/// Offsets of the scratch of a batch of `rows` examples (each slot `[rows][tokens][c]`);
/// it serves any smaller batch too.
#[derive(Clone, Debug, Default)]
pub(super) struct Scratch {
    pub(super) rows: usize,
    pub(super) val: Vec<Range<usize>>,
    pub(super) grad: Vec<Range<usize>>,
    pub(super) z: Vec<Range<usize>>,
    pub(super) fhat: Range<usize>,
    pub(super) dw: Range<usize>,
    pub(super) xt: Range<usize>,
    pub(super) zpack: Range<usize>,
    pub(super) dx: Range<usize>,
    /// The batch's cut activations, gathered by `forward_batch`; last.
    pub(super) inp: Range<usize>,
    pub(super) len: usize,
}

struct Alloc(usize);
impl Alloc {
    fn take(&mut self, n: usize) -> Range<usize> {
        let r = self.0..self.0 + n;
        self.0 += n;
        r
    }
}

impl Tail {
    pub fn new(net: Arc<TailNet>, variant: Variant, classes: usize) -> Tail {
        let mut a = Alloc(0);
        let mut pr = Vec::new();
        let mut packs = Vec::new();
        let mut pa = Alloc(0);
        for l in &net.layers {
            let mut r = PRanges::default();
            match (*l, variant) {
                (Layer::Pw { cin, cout, .. }, v) => {
                    match v {
                        Variant::Full => {
                            r.w = Some(a.take(cin * cout));
                            r.b = Some(a.take(cout));
                        }
                        Variant::Bias => {
                            r.g = Some(a.take(cout));
                            r.b = Some(a.take(cout));
                        }
                        Variant::Lora { rank } => {
                            r.a = Some(a.take(cin * rank));
                            r.bb = Some(a.take(rank * cout));
                        }
                    }
                    packs.push((
                        pa.take(pack::packed_f32_len(cin, cout)),
                        pa.take(pack::packed_f32_len(cout, cin)),
                    ));
                }
                (Layer::Dw { g, .. }, Variant::Full) => {
                    r.w = Some(a.take(g.kh * g.kw * g.c));
                    r.b = Some(a.take(g.c));
                }
                (Layer::Dw { g, .. }, Variant::Bias) => {
                    r.g = Some(a.take(g.c));
                    r.b = Some(a.take(g.c));
                }
                _ => {}
            }
            if packs.len() < pr.len() + 1 {
                packs.push((0..0, 0..0));
            }
            pr.push(r);
        }
        let head = a.take(classes * net.feature_dim());
        // Largest 1×1 weight: the weight-gradient buffer of `tail`, and `lora`'s effective
        // weights before they are packed.
        let wmax = net
            .layers
            .iter()
            .map(|l| match *l {
                Layer::Pw { cin, cout, .. } => cin * cout,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let prep_len = pa.0
            + if matches!(variant, Variant::Lora { .. }) {
                wmax
            } else {
                0
            };
        let sc = Tail::scratch_layout(&net, variant, wmax, 1, false);
        let t = Tail {
            net,
            variant,
            classes,
            scale: 10.0,
            body_lr: 0.1,
            proto: Vec::new(),
            tap: 0,
            pr,
            head,
            n_params: a.0,
            packs,
            prep: RefCell::new(alloc::vec![0.0; prep_len]),
            sc,
            bsc: RefCell::new(None),
            kern: Kernels::detect(),
            #[cfg(feature = "std")]
            par: crate::par::Par::new(0).unwrap_or_default(),
            #[cfg(not(feature = "std"))]
            par: crate::par::Par::single(),
        };
        if variant == Variant::Bias {
            // `bias` keeps every weight frozen: packed once, here (`weff` reads no
            // parameter for it).
            t.pack_weights(&[]);
        }
        t
    }

    /// Packs the effective weights of every 1×1 layer from the parameters `p`.
    pub(super) fn pack_weights(&self, p: &[f32]) {
        let mut prep = self.prep.borrow_mut();
        let n = prep.len();
        let wmax = n - self
            .packs
            .iter()
            .map(|(a, b)| a.len() + b.len())
            .sum::<usize>();
        if self.variant == Variant::Full {
            // Every layer's packings straight from its parameters, the layers over the
            // threads (each packing is a copy: any split gives the same bits).
            let (mut rest, mut at) = (&mut prep[..n - wmax], 0);
            let mut items = Vec::new();
            for (i, l) in self.net.layers.iter().enumerate() {
                let (Layer::Pw { cin, cout, .. }, Some(rw)) = (*l, &self.pr[i].w) else {
                    continue;
                };
                let (fr, br) = self.packs[i].clone();
                let (_, r) = core::mem::take(&mut rest).split_at_mut(fr.start - at);
                let (f, r) = r.split_at_mut(fr.len());
                let (_, r) = r.split_at_mut(br.start - fr.end);
                let (b, r) = r.split_at_mut(br.len());
                (rest, at) = (r, br.end);
                items.push((&p[rw.clone()], cin, cout, f, b));
            }
            let kern = self.kern;
            let _ = self.par.each(items, |(w, cin, cout, f, b)| {
                pack::pack_f32(w, cin, cout, f);
                kops::pack_f32_t(&kern, w, cin, cout, b);
                Ok(())
            });
            return;
        }
        for (i, l) in self.net.layers.iter().enumerate() {
            let Layer::Pw { cin, cout, .. } = *l else {
                continue;
            };
            let (fr, br) = self.packs[i].clone();
            let (packs, we) = prep.split_at_mut(n - wmax);
            // `W` for the forward, `Wᵀ` for the input gradient, both from `W` itself.
            let we: &[f32] = match (&self.pr[i].w, self.variant, l) {
                (Some(rw), Variant::Full, _) => &p[rw.clone()],
                (_, Variant::Bias, Layer::Pw { w, .. }) => &self.net.frozen[*w..*w + cin * cout],
                _ => {
                    // Runs of rows over the threads (each value its own: the same bits).
                    let we = &mut we[..cin * cout];
                    let (lw, cost) = (self.lora_weights(i, p), self.lora_rank().max(1));
                    let _ = crate::par::for_runs(&self.par, cout, we, cost, |at, part| {
                        weff_rows(&lw, at / cout, part);
                        Ok(())
                    });
                    we
                }
            };
            // The two packings side by side (copies).
            let kern = self.kern;
            let (f, b) = packs[fr.start..].split_at_mut(br.start - fr.start);
            let (f, b) = (&mut f[..fr.len()], &mut b[..br.len()]);
            let jobs: Vec<Job> = alloc::vec![
                alloc::boxed::Box::new(|| {
                    pack::pack_f32(we, cin, cout, f);
                    Ok(())
                }),
                alloc::boxed::Box::new(|| {
                    kops::pack_f32_t(&kern, we, cin, cout, b);
                    Ok(())
                }),
            ];
            let _ = self.par.each(jobs, |j| j());
        }
    }

    /// Length of the first layer's product staged with each example: `bias` keeps that
    /// layer's weights frozen, so `z = x·W` of the cut is the same at every step.
    pub(super) fn staged_z0(&self) -> usize {
        match (self.variant, self.net.layers.first()) {
            (Variant::Bias, Some(&Layer::Pw { x: 0, y, cout, .. })) => self.net.slots[y].0 * cout,
            _ => 0,
        }
    }

    /// Makes `bsc` a layout for at least `rows` examples.
    pub(super) fn batch_layout(&self, rows: usize) {
        if self.bsc.borrow().as_ref().is_some_and(|b| b.rows >= rows) {
            return;
        }
        let wmax = self
            .net
            .layers
            .iter()
            .map(|l| match *l {
                Layer::Pw { cin, cout, .. } => cin * cout,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        *self.bsc.borrow_mut() = Some(Tail::scratch_layout(
            &self.net,
            self.variant,
            wmax,
            rows,
            true,
        ));
    }

    /// Only what `variant` uses: the 1×1 products `z` for the trained scales of `bias`,
    /// the weight-gradient buffers for `tail` (and `lora`'s low-rank products).
    fn scratch_layout(
        net: &TailNet,
        variant: Variant,
        wmax: usize,
        rows: usize,
        inp: bool,
    ) -> Scratch {
        let mut a = Alloc(0);
        let mut s = Scratch {
            rows,
            ..Scratch::default()
        };
        for (i, &(t, c)) in net.slots.iter().enumerate() {
            s.val.push(if i == 0 { 0..0 } else { a.take(rows * t * c) });
        }
        for (i, &(t, c)) in net.slots.iter().enumerate() {
            s.grad
                .push(if i == 0 { 0..0 } else { a.take(rows * t * c) });
        }
        let (mut xt, mut zp, mut dx, mut lw) = (0, 0, 0, 0);
        for l in &net.layers {
            s.z.push(match *l {
                Layer::Pw { y, cin, cout, .. } => {
                    let t = rows * net.slots[y].0;
                    match variant {
                        Variant::Full => {
                            xt = xt.max(cin * t);
                            zp = zp.max(pack::packed_f32_len(t, cout));
                        }
                        // The low-rank gradient keeps dZ·Bᵀ and X·A (t × rank each), Xᵀ and
                        // (X·A)ᵀ in xt; Bᵀ, A, dZ·Bᵀ and dZ packed in zpack; dA and dB in dw.
                        Variant::Lora { rank } => {
                            xt = xt.max(3 * t * rank + cin * t);
                            zp = zp.max(
                                pack::packed_f32_len(cout, rank)
                                    + pack::packed_f32_len(cin, rank)
                                    + pack::packed_f32_len(t, rank)
                                    + pack::packed_f32_len(t, cout),
                            );
                            lw = lw.max(rank * (cin + cout));
                        }
                        Variant::Bias => {}
                    }
                    dx = dx.max(t * cin);
                    // Without a trained scale the GEMM writes y itself.
                    a.take(if variant == Variant::Bias {
                        t * cout
                    } else {
                        0
                    })
                }
                Layer::Dw { y, .. } => a.take(rows * net.slots[y].0 * net.slots[y].1),
                _ => 0..0,
            });
        }
        s.fhat = a.take(rows * (net.feature_dim() + 1));
        // Order matters: `dweight` splits xt | zpack | dw.
        s.xt = a.take(xt);
        s.zpack = a.take(zp);
        s.dw = a.take(match variant {
            Variant::Full => wmax,
            Variant::Lora { .. } => lw,
            Variant::Bias => 0,
        });
        s.dx = a.take(dx);
        let (t0, c0) = net.slots[0];
        s.inp = a.take(if inp { rows * t0 * c0 } else { 0 });
        s.len = a.0;
        s
    }

    /// Bytes the tail holds besides parameters and scratch: the frozen weights and the
    /// packed weights of every step.
    pub fn fixed_bytes(&self) -> usize {
        4 * (self.net.frozen.len() + self.prep.borrow().len())
    }

    /// Parameters of the tail itself, before the classifier (independent of the class
    /// count): a trained parameter list over any number of classes starts with these.
    pub fn body_len(&self) -> usize {
        self.head.start
    }

    /// Unit-norm pooled features of the last `forward`.
    pub fn features<'a>(&self, s: &'a [f32]) -> &'a [f32] {
        &s[self.sc.fhat.start..self.sc.fhat.end - 1]
    }

    pub(super) fn lora_scale(&self) -> f32 {
        match self.variant {
            Variant::Lora { rank } => 2.0 / rank.max(1) as f32,
            _ => 0.0,
        }
    }

    /// Effective weights of 1×1 layer `i` into `out` (`[cin][cout]`).
    pub(super) fn weff(&self, i: usize, p: &[f32], out: &mut [f32]) {
        if let Layer::Pw { cin, cout, .. } = self.net.layers[i] {
            weff_rows(&self.lora_weights(i, p), 0, &mut out[..cin * cout]);
        }
    }

    /// What the effective weights of 1×1 layer `i` are made of.
    fn lora_weights<'a>(&'a self, i: usize, p: &'a [f32]) -> Weights<'a> {
        let Layer::Pw { cin, cout, w, .. } = self.net.layers[i] else {
            return Weights::default();
        };
        let frozen = &self.net.frozen[w..w + cin * cout];
        match (self.variant, &self.pr[i]) {
            (Variant::Full, r) => Weights {
                frozen: &p[r.w.clone().unwrap_or(0..0)],
                cout,
                ..Weights::default()
            },
            (
                Variant::Lora { rank },
                PRanges {
                    a: Some(ra),
                    bb: Some(rb),
                    ..
                },
            ) => Weights {
                frozen,
                cout,
                a: &p[ra.clone()],
                b: &p[rb.clone()],
                rank,
                scale: self.lora_scale(),
            },
            _ => Weights {
                frozen,
                cout,
                ..Weights::default()
            },
        }
    }

    fn lora_rank(&self) -> usize {
        match self.variant {
            Variant::Lora { rank } => rank,
            _ => 0,
        }
    }

    pub(super) fn wdw<'a>(&'a self, i: usize, p: &'a [f32]) -> &'a [f32] {
        match (&self.pr[i].w, &self.net.layers[i]) {
            (Some(r), _) => &p[r.clone()],
            (None, Layer::Dw { g, w, .. }) => &self.net.frozen[*w..*w + g.kh * g.kw * g.c],
            _ => &[],
        }
    }

    pub(super) fn bias<'a>(&'a self, i: usize, p: &'a [f32]) -> &'a [f32] {
        match (&self.pr[i].b, &self.net.layers[i]) {
            (Some(r), _) => &p[r.clone()],
            (None, Layer::Pw { b, cout, .. }) => &self.net.frozen[*b..*b + cout],
            (None, Layer::Dw { b, g, .. }) => &self.net.frozen[*b..*b + g.c],
            _ => &[],
        }
    }

    pub(super) fn clamp_bounds(l: &Layer) -> (f32, f32) {
        match *l {
            Layer::Pw { lo, hi, .. } | Layer::Dw { lo, hi, .. } => (lo, hi),
            _ => (f32::NEG_INFINITY, f32::INFINITY),
        }
    }

    pub(super) fn gemm(&self, mnk: (usize, usize, usize), a: &[f32], b: &[f32], c: &mut [f32]) {
        self.gemm_act(mnk, a, b, None, Act::None, c);
    }

    /// `c = act(a·b + bias)` (`b` packed).
    pub(super) fn gemm_act(
        &self,
        mnk: (usize, usize, usize),
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        act: Act,
        c: &mut [f32],
    ) {
        let (m, n, k) = mnk;
        // The lengths are sized by `scratch_layout` and `new`; a mismatch is a bug here.
        crate::par::gemm_f32(&self.par, &self.kern, mnk, a, b, bias, c, act)
            .unwrap_or_else(|e| panic!("tail gemm {m}×{n}×{k}: {e}"));
    }
}

/// A copy or product to run beside others, on any thread.
pub(super) type Job<'a> = alloc::boxed::Box<dyn FnOnce() -> crate::Result<()> + Send + 'a>;

/// The effective weights of a 1×1 layer: `frozen + k·A·B` with the low-rank factors
/// (`rank` 0: `frozen` alone), `[cin][cout]`.
#[derive(Default)]
struct Weights<'a> {
    frozen: &'a [f32],
    cout: usize,
    a: &'a [f32],
    b: &'a [f32],
    rank: usize,
    scale: f32,
}

/// Rows `i0..` of the effective weights `w` into `out` (whole rows).
fn weff_rows(w: &Weights, i0: usize, out: &mut [f32]) {
    let cout = w.cout;
    out.copy_from_slice(&w.frozen[i0 * cout..i0 * cout + out.len()]);
    for (i, row) in (i0..).zip(out.chunks_exact_mut(cout.max(1))) {
        for j in 0..w.rank {
            let a = w.a[i * w.rank + j] * w.scale;
            if a != 0.0 {
                let br = &w.b[j * cout..(j + 1) * cout];
                row.iter_mut().zip(br).for_each(|(o, b)| *o += a * b);
            }
        }
    }
}

/// Two disjoint ranges of one buffer, the first read-only.
pub(super) fn two<'a>(
    s: &'a mut [f32],
    r: &Range<usize>,
    w: &Range<usize>,
) -> (&'a [f32], &'a mut [f32]) {
    if r.end <= w.start {
        let (a, b) = s.split_at_mut(w.start);
        (&a[r.clone()], &mut b[..w.len()])
    } else {
        let (a, b) = s.split_at_mut(r.start);
        (&b[..r.len()], &mut a[w.clone()])
    }
}
