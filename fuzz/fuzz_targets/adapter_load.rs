//! `.eta` loader: raw bytes, then with length and checksum repaired and the plan hash
//! taken from the file, so mutations reach the body parser and prediction.
#![no_main]
use edgetune::adapt::Adapter;
use edgetune::plan::fnv64;
use libfuzzer_sys::fuzz_target;

fn try_load(data: &[u8], hash: &[u8; 16]) {
    let Ok(a) = Adapter::from_bytes(data, hash) else { return };
    let dims: Vec<_> = a.taps.iter().map(|t| t.1).collect();
    if dims.iter().map(|d| d.tokens * d.dim).sum::<usize>() > 1 << 22 {
        return;
    }
    let taps: Vec<Vec<f32>> = dims.iter().map(|d| vec![0.25; d.tokens * d.dim]).collect();
    let refs: Vec<&[f32]> = taps.iter().map(|v| v.as_slice()).collect();
    let mut out = vec![0.0; a.method.classes()];
    let _ = a.method.scores(&refs, &dims, &mut out);
    // A loaded adapter writes back to the bytes it came from.
    assert_eq!(Adapter::from_bytes(&a.to_bytes(), hash).as_ref(), Ok(&a));
}

fuzz_target!(|data: &[u8]| {
    try_load(data, &[0; 16]);
    if data.len() >= 48 {
        let mut fixed = data.to_vec();
        let len = (fixed.len() - 48) as u64;
        fixed[8..16].copy_from_slice(&len.to_le_bytes());
        let sum = fnv64(0xcbf2_9ce4_8422_2325, &fixed[48..]);
        fixed[16..24].copy_from_slice(&sum.to_le_bytes());
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&fixed[24..40]);
        try_load(&fixed, &hash);
    }
});
