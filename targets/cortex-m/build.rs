//! Links `memory.x` and writes the few-shot episode the firmware holds in flash: Fashion-MNIST
//! classes 5-9 (never seen by the backbone) from the repo's bundled sample, the first 5
//! images of each class as support and the next 20 as held-out queries. Layout: u16
//! support count, u16 query count, then per example one label byte and 784 pixels.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    let data = "../../examples/data/fashion_mnist_600-";
    let px = fs::read(format!("{data}images.idx")).unwrap();
    let lb = fs::read(format!("{data}labels.idx")).unwrap();
    println!("cargo:rerun-if-changed={data}images.idx");
    let (mut sup, mut qry) = (vec![], vec![]);
    let mut seen = [0usize; 10];
    for (i, &l) in lb[8..].iter().enumerate() {
        if l < 5 {
            continue;
        }
        let k = seen[l as usize];
        seen[l as usize] += 1;
        let rec = || {
            let mut r = vec![l - 5];
            r.extend_from_slice(&px[16 + i * 784..][..784]);
            r
        };
        if k < 5 {
            sup.push(rec());
        } else if k < 25 {
            qry.push(rec());
        }
    }
    let mut b = Vec::new();
    b.extend_from_slice(&(sup.len() as u16).to_le_bytes());
    b.extend_from_slice(&(qry.len() as u16).to_le_bytes());
    sup.iter().chain(&qry).for_each(|r| b.extend_from_slice(r));
    fs::write(out.join("episode.bin"), b).unwrap();
}
