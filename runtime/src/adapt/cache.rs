//! Tap cache: every support example goes through the backbone once; its taps are kept
//! here (f16, or int8 with one scale per example and tap) and every training epoch
//! reads them back.

use crate::error::{Error, Result};
use alloc::string::String;
use alloc::vec::Vec;
use half::f16;
use half::slice::HalfFloatSliceExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheFormat {
    F16,
    I8,
}

impl CacheFormat {
    pub fn parse(s: &str) -> Option<CacheFormat> {
        match s {
            "f16" => Some(CacheFormat::F16),
            "i8" | "int8" => Some(CacheFormat::I8),
            _ => None,
        }
    }
}

/// The shape of one tap, as the cache stores it and the heads read it: `tokens` rows of
/// `dim` channels (spatial positions of an NHWC map, the tokens of a transformer, or one
/// row for a pooled vector). Where a tap's name matters it travels beside its shape, as
/// `(name, shape)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapShape {
    pub tokens: usize,
    pub dim: usize,
}

/// A tap by name and shape.
pub type NamedTap = (String, TapShape);

impl TapShape {
    pub fn new(tokens: usize, dim: usize) -> TapShape {
        TapShape { tokens, dim }
    }
    pub fn len(&self) -> usize {
        self.tokens * self.dim
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct TapCache {
    pub format: CacheFormat,
    pub taps: Vec<TapShape>,
    /// The taps' names, beside `taps`.
    pub names: Vec<String>,
    pub labels: Vec<usize>,
    stride: usize,
    f16s: Vec<f16>,
    i8s: Vec<i8>,
    scales: Vec<f32>,
}

impl TapCache {
    pub fn new(format: CacheFormat, taps: Vec<NamedTap>) -> TapCache {
        let (names, taps): (Vec<String>, Vec<TapShape>) = taps.into_iter().unzip();
        let stride = taps.iter().map(|t| t.len()).sum();
        TapCache {
            format,
            taps,
            names,
            labels: Vec::new(),
            stride,
            f16s: Vec::new(),
            i8s: Vec::new(),
            scales: Vec::new(),
        }
    }

    /// Bytes one example takes in the cache.
    pub fn bytes_per_example(&self) -> usize {
        match self.format {
            CacheFormat::F16 => 2 * self.stride,
            CacheFormat::I8 => self.stride + 4 * self.taps.len(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.len() * self.bytes_per_example()
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |m| m + 1)
    }

    /// Reserves room for `n` more examples up front, so that filling does not reallocate.
    pub fn reserve(&mut self, n: usize) {
        self.labels.reserve(n);
        match self.format {
            CacheFormat::F16 => self.f16s.reserve(n * self.stride),
            CacheFormat::I8 => {
                self.i8s.reserve(n * self.stride);
                self.scales.reserve(n * self.taps.len());
            }
        }
    }

    /// Keeps the first `n` examples (drops those added after).
    pub fn truncate(&mut self, n: usize) {
        if n >= self.len() {
            return;
        }
        self.labels.truncate(n);
        match self.format {
            CacheFormat::F16 => self.f16s.truncate(n * self.stride),
            CacheFormat::I8 => {
                self.i8s.truncate(n * self.stride);
                self.scales.truncate(n * self.taps.len());
            }
        }
    }

    /// Adds one example: `taps[i]` holds tap `i` in f32.
    pub fn push(&mut self, taps: &[&[f32]], label: usize) -> Result<()> {
        if taps.len() != self.taps.len() {
            return Err(Error::ShapeMismatch {
                op: "tap cache".into(),
                expected: alloc::vec![self.taps.len()],
                got: alloc::vec![taps.len()],
            });
        }
        for ((t, s), name) in taps.iter().zip(&self.taps).zip(&self.names) {
            if t.len() != s.len() {
                return Err(Error::ShapeMismatch {
                    op: alloc::format!("tap cache: tap '{name}'"),
                    expected: alloc::vec![s.tokens, s.dim],
                    got: alloc::vec![t.len()],
                });
            }
            if t.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: alloc::format!("tap '{name}'"),
                });
            }
        }
        for t in taps {
            match self.format {
                CacheFormat::F16 => {
                    let at = self.f16s.len();
                    self.f16s.resize(at + t.len(), f16::ZERO);
                    self.f16s[at..].convert_from_f32_slice(t);
                }
                CacheFormat::I8 => {
                    let m = t.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let scale = if m > 0.0 { m / 127.0 } else { 1.0 };
                    self.scales.push(scale);
                    self.i8s
                        .extend(t.iter().map(|&v| libm::roundf(v / scale) as i8));
                }
            }
        }
        self.labels.push(label);
        Ok(())
    }

    /// Reads tap `tap` of example `i` into `out` (f32).
    pub fn read(&self, i: usize, tap: usize, out: &mut [f32]) {
        let off: usize = self.taps[..tap].iter().map(|t| t.len()).sum();
        let len = self.taps[tap].len();
        let at = i * self.stride + off;
        match self.format {
            // The slice conversion uses F16C / FP16 instructions when the CPU has them.
            CacheFormat::F16 => self.f16s[at..at + len].convert_to_f32_slice(out),
            CacheFormat::I8 => {
                let s = self.scales[i * self.taps.len() + tap];
                out.iter_mut()
                    .zip(&self.i8s[at..at + len])
                    .for_each(|(o, &v)| *o = v as f32 * s);
            }
        }
    }

    /// The cached taps by name and shape.
    pub fn named(&self) -> Vec<NamedTap> {
        self.names
            .iter()
            .cloned()
            .zip(self.taps.iter().copied())
            .collect()
    }

    /// Index of the tap called `name`.
    pub fn tap_index(&self, name: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|t| t == name)
            .ok_or_else(|| Error::Invalid {
                what: alloc::format!("tap '{name}' is not in the cache"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rng::Rng;

    #[test]
    fn round_trip_within_format_precision() {
        let shapes = alloc::vec![
            ("a".into(), TapShape::new(4, 3)),
            ("b".into(), TapShape::new(1, 5)),
        ];
        let mut r = Rng::new(9);
        for fmt in [CacheFormat::F16, CacheFormat::I8] {
            let mut c = TapCache::new(fmt, shapes.clone());
            let ex: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
                .map(|_| {
                    (
                        (0..12).map(|_| r.f32() * 4.0 - 2.0).collect(),
                        (0..5).map(|_| r.f32()).collect(),
                    )
                })
                .collect();
            for (i, (a, b)) in ex.iter().enumerate() {
                c.push(&[a, b], i).unwrap();
            }
            assert_eq!(c.len(), 3);
            assert_eq!(c.bytes(), 3 * c.bytes_per_example());
            for (i, (a, b)) in ex.iter().enumerate() {
                for (t, src) in [(0, a), (1, b)] {
                    let mut out = alloc::vec![0.0; src.len()];
                    c.read(i, t, &mut out);
                    let m = src.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let tol = match fmt {
                        CacheFormat::F16 => m * 1e-3,
                        CacheFormat::I8 => m / 127.0 * 0.5 + 1e-6,
                    };
                    for (o, s) in out.iter().zip(src.iter()) {
                        assert!((o - s).abs() <= tol, "{fmt:?}: {o} vs {s}");
                    }
                }
            }
        }
    }

    #[test]
    fn rejects_wrong_shapes_and_non_finite() {
        let mut c = TapCache::new(
            CacheFormat::F16,
            alloc::vec![("a".into(), TapShape::new(2, 2))],
        );
        assert!(matches!(
            c.push(&[&[1.0; 3]], 0),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            c.push(&[&[1.0, f32::NAN, 0.0, 0.0]], 0),
            Err(Error::NonFinite { .. })
        ));
        assert!(c.is_empty());
    }
}
