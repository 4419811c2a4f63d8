//! WebAssembly builds: with `+simd128` the simd128 tier is registered in every family it
//! covers and dispatch picks it; without, dispatch falls back to the portable tier (the
//! tier tests in `tiers.rs` and `ew.rs` then check it against the reference).
#![cfg(target_arch = "wasm32")]

use edgetune_kernels::dispatch::{Cpu, Kernels};
use edgetune_kernels::Tier;

#[test]
fn wasm_dispatch_picks_the_built_tier() {
    let k = Kernels::select(&Cpu::detect(), None);
    let tiers = [k.f32_gemm.tier, k.i8_gemm.tier, k.dw_i8.tier, k.ew.tier];
    if cfg!(target_feature = "simd128") {
        assert_eq!(tiers, [Tier::Simd128; 4], "{:?}", k.describe());
    } else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP simd128 tier (built without +simd128): dispatch runs {:?}",
            k.describe()
        );
        assert_eq!(tiers, [Tier::Portable; 4], "{:?}", k.describe());
    }
}
