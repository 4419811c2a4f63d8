use crate::pack::F32_NR;
use crate::tile::drive_f32;
use crate::F32GemmArgs;
use core::arch::x86_64::*;

#[target_feature(enable = "avx2,fma")]
unsafe fn micro_6x16_avx2(
    k: usize,
    a: &[*const f32; 6],
    b: *const f32,
    acc: &mut [[f32; F32_NR]; 6],
) {
    let mut c = [[_mm256_setzero_ps(); 2]; 6];
    for kk in 0..k {
        let bp = b.add(kk * F32_NR);
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        for r in 0..6 {
            let av = _mm256_broadcast_ss(&*a[r].add(kk));
            c[r][0] = _mm256_fmadd_ps(av, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(av, b1, c[r][1]);
        }
    }
    for r in 0..6 {
        _mm256_storeu_ps(acc[r].as_mut_ptr(), c[r][0]);
        _mm256_storeu_ps(acc[r].as_mut_ptr().add(8), c[r][1]);
    }
}

/// # Safety
/// `args` describes valid buffers and the CPU has AVX2 and FMA.
pub unsafe fn f32_gemm_6x16__avx2(args: &F32GemmArgs) {
    drive_f32::<6>(args, micro_6x16_avx2)
}

#[target_feature(enable = "avx512f")]
unsafe fn micro_12x16_avx512(
    k: usize,
    a: &[*const f32; 12],
    b: *const f32,
    acc: &mut [[f32; F32_NR]; 12],
) {
    let mut c = [_mm512_setzero_ps(); 12];
    for kk in 0..k {
        let bv = _mm512_loadu_ps(b.add(kk * F32_NR));
        for r in 0..12 {
            c[r] = _mm512_fmadd_ps(_mm512_set1_ps(*a[r].add(kk)), bv, c[r]);
        }
    }
    for r in 0..12 {
        _mm512_storeu_ps(acc[r].as_mut_ptr(), c[r]);
    }
}

/// # Safety
/// `args` describes valid buffers and the CPU has AVX-512F.
pub unsafe fn f32_gemm_12x16__avx512(args: &F32GemmArgs) {
    drive_f32::<12>(args, micro_12x16_avx512)
}
