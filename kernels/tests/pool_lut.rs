//! The quantised max pool and table kernels against float evaluation of the same maths.

use edgetune_kernels::elementwise::max_pool_f32;
use edgetune_kernels::ops::{lut_u8, max_pool_u8};
use edgetune_kernels::reference::ConvGeom;
use proptest::prelude::*;

fn geom(h: usize, w: usize, c: usize, k: usize, s: usize, pad: usize) -> ConvGeom {
    ConvGeom {
        h,
        w,
        ic: c,
        oc: c,
        kh: k,
        kw: k,
        stride_h: s,
        stride_w: s,
        dil_h: 1,
        dil_w: 1,
        pad_top: pad,
        pad_left: pad,
        pad_bottom: pad,
        pad_right: pad,
        groups: 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 64 }))]

    /// Max of codes = code of the max of dequantised values (positive scale).
    #[test]
    fn max_pool_u8_is_max_pool_of_dequantised(
        h in 1usize..9, w in 1usize..9, c in 1usize..7, k in 1usize..4, s in 1usize..3,
        pad in 0usize..2, zero in 0i32..256, seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k && pad < k);
        let g = geom(h, w, c, k, s, pad);
        let mut r = seed;
        let x: Vec<u8> = (0..h * w * c).map(|_| {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (r >> 56) as u8
        }).collect();
        let scale = 0.05f32;
        let xf: Vec<f32> = x.iter().map(|&v| (v as i32 - zero) as f32 * scale).collect();
        let mut y = vec![0u8; g.oh() * g.ow() * c];
        let mut yf = vec![0.0f32; y.len()];
        max_pool_u8(&edgetune_kernels::Kernels::detect(), &g, &x, &mut y).unwrap();
        max_pool_f32(&g, &xf, &mut yf);
        for (a, b) in y.iter().zip(&yf) {
            prop_assert_eq!((*a as i32 - zero) as f32 * scale, *b);
        }
    }

    #[test]
    fn lut_u8_indexes_by_channel(n in 1usize..40, c in 1usize..9, seed in any::<u64>()) {
        let table: Vec<u8> = (0..c * 256).map(|i| (i as u64 ^ seed).wrapping_mul(31) as u8).collect();
        let x: Vec<u8> = (0..n * c).map(|i| (i as u64).wrapping_mul(seed | 1) as u8).collect();
        let mut y = vec![0u8; x.len()];
        lut_u8(&edgetune_kernels::Kernels::detect(), &x, c, &table, &mut y).unwrap();
        for (i, (&v, &o)) in x.iter().zip(&y).enumerate() {
            prop_assert_eq!(o, table[(i % c) * 256 + v as usize]);
        }
    }
}

#[test]
fn bad_buffers_are_refused() {
    let g = geom(4, 4, 2, 2, 2, 0);
    let k = edgetune_kernels::Kernels::detect();
    let mut y = vec![0u8; 8];
    assert!(max_pool_u8(&k, &g, &[0u8; 31], &mut y).is_err());
    assert!(max_pool_u8(&k, &g, &[0u8; 32], &mut y[..7]).is_err());
    assert!(max_pool_u8(&k, &geom(4, 4, 0, 2, 2, 0), &[], &mut []).is_err());
    assert!(max_pool_u8(&k, &geom(1, 1, 1, 3, 1, 0), &[0], &mut [0]).is_err());
    assert!(lut_u8(&k, &[0u8; 6], 4, &[0u8; 1024], &mut [0u8; 6]).is_err());
    assert!(lut_u8(&k, &[0u8; 8], 4, &[0u8; 1023], &mut [0u8; 8]).is_err());
    assert!(lut_u8(&k, &[0u8; 8], 0, &[], &mut [0u8; 8]).is_err());
    assert!(lut_u8(&k, &[0u8; 8], 1, &[0u8; 255], &mut [0u8; 8]).is_err());
    assert!(lut_u8(&k, &[0u8; 8], 1, &[0u8; 256], &mut [0u8; 7]).is_err());
}
