#!/usr/bin/env python3
"""Fits the f64 erf polynomials of the AVX2 elementwise tier (kernels/src/x86_64/ew.rs,
ERF64 and ERF64_CENTRE) and prints them as Rust, with the worst error per interval on
stderr. numpy + scipy.

    python3 tools/erf64.py
"""
import sys
import numpy as np
import numpy.polynomial.chebyshev as C
import numpy.polynomial.polynomial as P
from scipy.special import erf

# Past 4, erf rounds to 1 in f32: erfc(x) < 2^-25 from x = 3.9192.
ivs = [(0, 1), (1, 2), (2, 3), (3, 4.0)]
D = 14
coefs, centers = [], []
for k, (a, b) in enumerate(ivs):
    if k == 0:
        # erf(x)/x as a polynomial in t = x² on [0, 1].
        def f(t):
            return np.where(t > 0, erf(np.sqrt(t)) / np.sqrt(np.maximum(t, 1e-300)), 2 / np.sqrt(np.pi))
        lo, hi, c = 0.0, 1.0, 0.0
    else:
        c = (a + b) / 2
        def f(u, c=c):
            return erf(u + c)
        lo, hi = a - c, b - c
    n = 400
    xs = np.cos(np.pi * (np.arange(n) + 0.5) / n) * (hi - lo) / 2 + (hi + lo) / 2
    ch = C.Chebyshev.fit(xs, f(xs), D, domain=[lo, hi])
    mono = ch.convert(kind=P.Polynomial, domain=[lo, hi], window=[lo, hi]).coef
    mono = np.pad(mono, (0, D + 1 - len(mono)))
    coefs.append(mono)
    centers.append(c)
    xx = np.linspace(lo, hi, 200001)
    p = np.zeros_like(xx)
    for d in range(D, -1, -1):
        p = p * xx + mono[d]
    err = np.abs(np.sqrt(xx) * p - erf(np.sqrt(xx))).max() if k == 0 else np.abs(p - f(xx)).max()
    print(f"interval {k}: max |error| {err:.2e}", file=sys.stderr)

print("const ERF64: [[f64; 4]; 15] = [")
for d in range(D, -1, -1):
    print("    [" + ", ".join(repr(float(coefs[k][d])) for k in range(4)) + "],")
print("];")
print("const ERF64_CENTRE: [f64; 4] = [" + ", ".join(repr(float(c)) for c in centers) + "];")
