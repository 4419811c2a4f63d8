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
    let zero = effective_a_zero(args);
    for i in 0..args.m {
        for j in 0..args.n {
            let mut acc = 0i32;
            let mut colsum = 0i32;
            for kk in 0..args.k {
                let mut a = *args.a.add(i * args.lda + kk);
                if args.a_signed {
                    a ^= 0x80;
                }
                let w = *args.b.add(i8_index(args.k, kk, j)) as i32;
                acc += a as i32 * w;
                colsum += w;
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
