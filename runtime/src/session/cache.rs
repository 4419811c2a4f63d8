//! Filling the tap cache: each example goes through the backbone once (and each of its
//! augmented views), and what the method reads of each tap is kept.

use super::prep::{Image, Prep, Sample};
use crate::adapt::cache::{NamedTap, TapCache, TapShape};
use crate::adapt::method::{moments_pair, pooled};
use crate::adapt::rng::Rng;
use crate::adapt::Kind;
use crate::features::TapReader;
use crate::{Error, Result};

/// What the tap cache keeps of each tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// Every token (the methods that attend over or train on the whole map).
    Full,
    /// The mean token (the ladder reads pooled taps only).
    Mean,
    /// Two tokens `μ ± σ` per channel: their mean is `μ` and their standard deviation `σ`,
    /// so the moment probe's statistics of the cached pair equal those of the whole map.
    Moments,
}

impl Reduce {
    pub fn of(kind: Kind) -> Reduce {
        match kind {
            Kind::Ladder => Reduce::Mean,
            Kind::Moment => Reduce::Moments,
            _ => Reduce::Full,
        }
    }

    pub fn tokens(self, full: usize) -> usize {
        match self {
            Reduce::Full => full,
            Reduce::Mean => 1,
            Reduce::Moments => 2,
        }
    }

    /// The cached shapes of taps read as `full`.
    pub fn shapes(self, full: &[NamedTap]) -> Vec<NamedTap> {
        full.iter()
            .map(|(n, t)| (n.clone(), TapShape::new(self.tokens(t.tokens), t.dim)))
            .collect()
    }

    pub fn apply(self, x: &[f32], d: TapShape, out: &mut [f32]) {
        match self {
            Reduce::Full => out.copy_from_slice(x),
            Reduce::Mean => pooled(x, d, out),
            Reduce::Moments => moments_pair(x, d, out),
        }
    }
}

/// Augmented view `v` (1-based) of an image: mirror on odd views, a shift of up to
/// 1/14 of the size chosen by the seed.
pub fn view(img: &Image, v: usize, rng: &mut Rng) -> Image {
    let (w, h, c) = (img.w, img.h, img.c);
    let max = (w.min(h) / 14).max(1) as i64;
    let dx = (rng.below(2 * max as usize + 1) as i64) - max;
    let dy = (rng.below(2 * max as usize + 1) as i64) - max;
    let flip = v % 2 == 1;
    let mut px = vec![0u8; img.px.len()];
    for y in 0..h {
        for x in 0..w {
            let sx = if flip { w - 1 - x } else { x } as i64 - dx;
            let sy = y as i64 - dy;
            let sx = sx.clamp(0, w as i64 - 1) as usize;
            let sy = sy.clamp(0, h as i64 - 1) as usize;
            px[(y * w + x) * c..][..c].copy_from_slice(&img.px[(sy * w + sx) * c..][..c]);
        }
    }
    Image { px, w, h, c }
}

/// Runs examples through the backbone into a cache: the reader, its scratch and the
/// augmentation stream, shared by enrolment and by the evaluation's one-off caches.
pub struct Filler<'r, 'p, 'm> {
    pub reader: &'r mut TapReader<'p, 'm>,
    pub reduce: Reduce,
    pub augment: usize,
    pub rng: Rng,
    bufs: Vec<Vec<f32>>,
    reduced: Vec<Vec<f32>>,
    input: Vec<Vec<f32>>,
}

impl<'r, 'p, 'm> Filler<'r, 'p, 'm> {
    pub fn new(
        reader: &'r mut TapReader<'p, 'm>,
        reduce: Reduce,
        augment: usize,
        seed: u64,
    ) -> Self {
        let bufs = reader.shapes.iter().map(|s| vec![0.0; s.1.len()]).collect();
        let reduced = reduce
            .shapes(&reader.shapes)
            .iter()
            .map(|s| vec![0.0; s.1.len()])
            .collect();
        Filler {
            reader,
            reduce,
            augment,
            rng: Rng::new(seed ^ 0xa5a5),
            bufs,
            reduced,
            input: Vec::new(),
        }
    }

    /// The cached shapes of this filler's taps.
    pub fn shapes(&self) -> Vec<NamedTap> {
        self.reduce.shapes(&self.reader.shapes)
    }

    /// Caches `s` and its augmented views under `label`; returns the rows added.
    pub fn push(
        &mut self,
        prep: &Prep,
        s: &Sample,
        label: usize,
        cache: &mut TapCache,
    ) -> Result<usize> {
        if self.augment > 0 && !prep.is_image() {
            return Err(Error::Invalid {
                what: "augmentation makes views of images; this plan's inputs are not images"
                    .into(),
            });
        }
        let views = if matches!(s, Sample::Image(_)) {
            self.augment
        } else {
            0
        };
        for v in 0..=views {
            let aug;
            let x = match s {
                Sample::Image(im) if v > 0 => {
                    aug = Sample::Image(view(im, v, &mut self.rng));
                    &aug
                }
                _ => s,
            };
            prep.run_taps(self.reader, x, &mut self.input, &mut self.bufs)?;
            if self.reduce == Reduce::Full {
                let t: Vec<&[f32]> = self.bufs.iter().map(|b| &b[..]).collect();
                cache.push(&t, label)?;
            } else {
                for ((b, o), t) in self
                    .bufs
                    .iter()
                    .zip(self.reduced.iter_mut())
                    .zip(&self.reader.shapes)
                {
                    self.reduce.apply(b, t.1, o);
                }
                let t: Vec<&[f32]> = self.reduced.iter().map(|b| &b[..]).collect();
                cache.push(&t, label)?;
            }
        }
        Ok(1 + views)
    }

    /// The taps of one example as the reader gives them (not reduced), for scoring.
    pub fn taps(&mut self, prep: &Prep, s: &Sample) -> Result<&[Vec<f32>]> {
        prep.run_taps(self.reader, s, &mut self.input, &mut self.bufs)?;
        Ok(&self.bufs)
    }
}

/// Runs many examples through the backbone on several threads at once: one executor per
/// thread, each example whole on one thread (so its taps are the bytes a single run
/// gives), the augmented views drawn in the examples' order on the calling thread, and
/// the rows pushed to the cache in that order: the cache is the same for every thread
/// count, and the same as [`Filler`] fills.
pub struct Batcher<'p, 'm> {
    workers: Vec<Worker<'p, 'm>>,
    par: crate::par::Par,
    reduce: Reduce,
    augment: usize,
    pub rng: Rng,
}

struct Worker<'p, 'm> {
    rd: TapReader<'p, 'm>,
    input: Vec<Vec<f32>>,
    bufs: Vec<Vec<f32>>,
    /// Each job's rows, as the cache keeps them.
    out: Vec<Vec<Vec<f32>>>,
}

/// Examples a round gives each worker: a round's views are held in memory at once.
const PER_WORKER: usize = 4;

impl<'p, 'm> Batcher<'p, 'm> {
    /// `readers` (one per thread, each with a single-threaded executor) share out the
    /// examples over the threads of `par`.
    pub fn new(
        readers: Vec<TapReader<'p, 'm>>,
        par: crate::par::Par,
        reduce: Reduce,
        augment: usize,
        seed: u64,
    ) -> Self {
        let workers = readers
            .into_iter()
            .map(|rd| Worker {
                bufs: rd.shapes.iter().map(|s| vec![0.0; s.1.len()]).collect(),
                rd,
                input: Vec::new(),
                out: Vec::new(),
            })
            .collect();
        Batcher {
            workers,
            par,
            reduce,
            augment,
            rng: Rng::new(seed ^ 0xa5a5),
        }
    }

    /// The cached shapes of the taps.
    pub fn shapes(&self) -> Vec<NamedTap> {
        self.reduce.shapes(&self.workers[0].rd.shapes)
    }

    /// Caches every example of `examples` and its augmented views under its label;
    /// `done(i, rows)` hears of example `i` and the rows it added once they are cached.
    /// An error names the example (its index) when the input is not finite.
    pub fn push_all(
        &mut self,
        prep: &Prep,
        examples: &[(Sample, usize)],
        cache: &mut TapCache,
        done: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let n = examples.len();
        self.push_each(prep, n, &|i| (&examples[i].0, examples[i].1), cache, done)
    }

    /// [`push_all`](Self::push_all) of `n` examples that `example(i)` gives with their
    /// labels.
    pub fn push_each<'e>(
        &mut self,
        prep: &Prep,
        n: usize,
        example: &(dyn Fn(usize) -> (&'e Sample, usize) + Sync),
        cache: &mut TapCache,
        done: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        if self.augment > 0 && !prep.is_image() {
            return Err(Error::Invalid {
                what: "augmentation makes views of images; this plan's inputs are not images"
                    .into(),
            });
        }
        let round = self.workers.len() * PER_WORKER;
        for first in (0..n).step_by(round.max(1)) {
            // Jobs: (example, view) in order, views drawn from the stream in that order.
            let mut views: Vec<(usize, Option<Sample>)> = Vec::new();
            for i in first..n.min(first + round) {
                views.push((i, None));
                if let Sample::Image(im) = example(i).0 {
                    for v in 1..=self.augment {
                        views.push((i, Some(Sample::Image(view(im, v, &mut self.rng)))));
                    }
                }
            }
            // A worker without jobs this round must not keep the last round's rows.
            for w in &mut self.workers {
                w.out.clear();
            }
            let parts = self.workers.len().min(views.len()).max(1);
            let mut items = Vec::with_capacity(parts);
            let mut rest: &[(usize, Option<Sample>)] = &views;
            for (w, run) in self
                .workers
                .iter_mut()
                .zip(crate::par::runs(views.len(), parts))
            {
                let (mine, tail) = rest.split_at(run.len());
                rest = tail;
                items.push((w, mine));
            }
            let reduce = self.reduce;
            self.par.each(items, |(w, jobs)| {
                for (i, v) in jobs {
                    let s = v.as_ref().unwrap_or(example(*i).0);
                    prep.run_taps(&mut w.rd, s, &mut w.input, &mut w.bufs)
                        .map_err(|e| match e {
                            Error::NonFinite { .. } => Error::NonFinite {
                                what: format!("input {i}"),
                            },
                            e => e,
                        })?;
                    let rows = w
                        .bufs
                        .iter()
                        .zip(&w.rd.shapes)
                        .map(|(b, t)| {
                            let mut o = vec![0.0; reduce.tokens(t.1.tokens) * t.1.dim];
                            reduce.apply(b, t.1, &mut o);
                            o
                        })
                        .collect();
                    w.out.push(rows);
                }
                Ok(())
            })?;
            let mut job = 0;
            for w in &self.workers {
                for rows in &w.out {
                    let i = views[job].0;
                    let t: Vec<&[f32]> = rows.iter().map(|b| &b[..]).collect();
                    cache.push(&t, example(i).1)?;
                    job += 1;
                    if views.get(job).is_none_or(|v| v.0 != i) {
                        let image = matches!(example(i).0, Sample::Image(_));
                        done(i, 1 + self.augment * image as usize);
                    }
                }
            }
        }
        Ok(())
    }
}
