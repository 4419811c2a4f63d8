use crate::pack::{i8_index, F32_NR};
use crate::quant::{effective_a_zero, i8_epilogue};
use crate::{F32GemmArgs, I8GemmArgs};

/// # Safety
/// `args` describes valid buffers (checked by [`crate::ops::gemm_f32`]).
pub unsafe fn f32_gemm__reference(args: &F32GemmArgs) {
    for i in 0..args.m {
        for j in 0..args.n {
            let (p, jj) = (j / F32_NR, j % F32_NR);
            let mut s = 0.0f32;
            for kk in 0..args.k {
                s += *args.a.add(i * args.lda + kk) * *args.b.add((p * args.k + kk) * F32_NR + jj);
            }
            if !args.bias.is_null() {
                s += *args.bias.add(j);
            }
            *args.c.add(i * args.ldc + j) = s.max(args.lo).min(args.hi);
        }
    }
}

/// # Safety
/// `args` describes valid buffers (checked by [`crate::ops::gemm_i8`]).
pub unsafe fn i8_gemm__reference(args: &I8GemmArgs) {
    i8_gemm_pairs(args, |s| s)
}

/// The int8 GEMM as x86's `vpmaddubsw` computes it without VNNI (and as onnxruntime's
/// AVX2 u8×s8 convolutions and GEMMs do): each pair of products
/// `a[2p]·w[2p] + a[2p+1]·w[2p+1]` (A read as u8) saturates to i16 before the sum.
/// Opt-in ([`crate::dispatch::Kernels::saturating`]): not exact.
///
/// # Safety
/// `args` describes valid buffers (checked by [`crate::ops::gemm_i8`]).
pub unsafe fn i8_gemm_sat__reference(args: &I8GemmArgs) {
    i8_gemm_pairs(args, |s| s.clamp(i16::MIN as i32, i16::MAX as i32))
}

unsafe fn i8_gemm_pairs(args: &I8GemmArgs, pair: impl Fn(i32) -> i32) {
    let zero = effective_a_zero(args);
    for i in 0..args.m {
        for j in 0..args.n {
            let mut acc = 0i32;
            let mut colsum = 0i32;
            let mut kk = 0;
            while kk < args.k {
                let mut s = 0;
                for t in kk..(kk + 2).min(args.k) {
                    let mut a = *args.a.add(i * args.lda + t);
                    if args.a_signed {
                        a ^= 0x80;
                    }
                    let w = *args.b.add(i8_index(args.k, t, j)) as i32;
                    s += a as i32 * w;
                    colsum += w;
                }
                acc += pair(s);
                kk += 2;
            }
            debug_assert_eq!(colsum, *args.colsum.add(j));
            let bias = if args.bias.is_null() {
                0
            } else {
                *args.bias.add(j)
            };
            let t = acc - zero * colsum + bias;
            i8_epilogue(args, t, *args.scale.add(j), i, j);
        }
    }
}
