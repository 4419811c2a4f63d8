//! Test data shared by several test crates.

use edgetune::session::{Image, Sample};
use std::path::Path;

/// The bundled Fashion-MNIST sample (60 grey 28×28 images per class), as the CLI reads it.
pub fn fashion() -> Vec<(Sample, usize)> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let px = std::fs::read(root.join("examples/data/fashion_mnist_600-images.idx")).unwrap();
    let lb = std::fs::read(root.join("examples/data/fashion_mnist_600-labels.idx")).unwrap();
    (0..600)
        .map(|i| {
            let im = Image {
                px: px[16 + i * 784..][..784].to_vec(),
                w: 28,
                h: 28,
                c: 1,
            };
            (Sample::Image(im), lb[8 + i] as usize)
        })
        .collect()
}
