//! Scalar quantisation arithmetic: the one definition every tier must match bit for bit.

/// ONNX QuantizeLinear on an already-scaled value: round half to even, add the zero
/// point, saturate. Clamping before the conversion keeps huge values and the SIMD
/// conversions (which return `i32::MIN` out of range) in agreement.
#[inline]
pub fn requant(v: f32, zero: i32, qmin: i32, qmax: i32) -> i32 {
    let v = v.max((qmin - zero) as f32).min((qmax - zero) as f32);
    round_even(v) as i32 + zero
}

/// Round half to even. Adding and removing 2^23 leaves no fraction bits, so the FPU's
/// default round-to-nearest-even does the rounding; `|v| ≥ 2^23` is already integral.
/// This avoids a libm `rintf` call on targets compiled without SSE4.1 `roundss`.
#[inline(always)]
pub fn round_even(v: f32) -> f32 {
    const TWO23: f32 = 8_388_608.0;
    if v.abs() < TWO23 {
        let c = TWO23.copysign(v);
        (v + c) - c
    } else {
        v
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    #[test]
    fn round_even_matches_std() {
        let mut vals = vec![
            0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 4194304.5, -4194303.5, 8388607.5,
            8388608.0, -8388609.0, 1e10, -1e10, 0.0, -0.0, 127.5, 254.5,
        ];
        let mut x = 0x1234_5678u32;
        for _ in 0..100_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            vals.push(((x >> 8) as f32 / 65536.0 - 128.0) * 2.0);
            vals.push(f32::from_bits(x));
        }
        for v in vals.into_iter().filter(|v| v.is_finite()) {
            assert_eq!(super::round_even(v), v.round_ties_even(), "{v}");
        }
    }
}

/// Epilogue of one int8 GEMM output: `t` is the zero-point corrected accumulator.
#[inline]
pub fn i8_epilogue(args: &crate::I8GemmArgs, t: i32, scale: f32, row: usize, col: usize) {
    let idx = row * args.ldc + col;
    // SAFETY: the safe wrapper checked that `c` holds `(m-1)·ldc + n` elements of the
    // output type and callers pass `row < m`, `col < n`.
    unsafe {
        match args.out {
            crate::I8Out::F32 => *(args.c as *mut f32).add(idx) = t as f32 * scale,
            crate::I8Out::U8 => {
                *args.c.add(idx) =
                    requant(t as f32 * scale, args.y_zero, args.qmin, args.qmax) as u8
            }
            crate::I8Out::I8 => {
                *(args.c as *mut i8).add(idx) =
                    requant(t as f32 * scale, args.y_zero, args.qmin, args.qmax) as i8
            }
        }
    }
}

/// Zero point of A as the kernels see it (i8 data is read with the sign bit flipped).
#[inline]
pub fn effective_a_zero(args: &crate::I8GemmArgs) -> i32 {
    if args.a_signed {
        args.a_zero + 128
    } else {
        args.a_zero
    }
}

/// `y = requant(x / scale)` over a slice, u8 output.
/// Divides rather than multiplying by `1/scale`, as ONNX QuantizeLinear does: the two
/// round differently at ties.
pub fn quantize_u8(x: &[f32], scale: f32, zero: i32, y: &mut [u8]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = requant(v / scale, zero, 0, 255) as u8;
    }
}

/// `y = requant(x / scale)` over a slice, i8 output.
pub fn quantize_i8(x: &[f32], scale: f32, zero: i32, y: &mut [i8]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = requant(v / scale, zero, -128, 127) as i8;
    }
}

pub fn dequantize_u8(x: &[u8], scale: f32, zero: i32, y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v as i32 - zero) as f32 * scale;
    }
}

pub fn dequantize_i8(x: &[i8], scale: f32, zero: i32, y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v as i32 - zero) as f32 * scale;
    }
}

pub fn f32_to_f16(x: &[f32], y: &mut [half::f16]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = half::f16::from_f32(v);
    }
}

pub fn f16_to_f32(x: &[half::f16], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v.to_f32();
    }
}
