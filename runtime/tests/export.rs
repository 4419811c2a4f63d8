//! `export_onnx`: the backbone's ONNX graph with the trained head appended, run by an
//! independent runtime (tract), gives edgetune's top-1 on held-out images.

use edgetune::adapt::Kind;
use edgetune::frame::Image;
use edgetune::import::{import_bytes, ImportOptions, Taps};
use edgetune::plan::{AlignedBytes, Plan};
use edgetune::session::Session;
use tract_onnx::prelude::*;

const ONNX: &[u8] = include_bytes!("../../models/efficientnet_lite0_int8.onnx");
const IMAGES: &[u8] = include_bytes!("../../examples/data/fashion_mnist_600-images.idx");
const LABELS: &[u8] = include_bytes!("../../examples/data/fashion_mnist_600-labels.idx");

fn image(i: usize) -> Image {
    Image {
        px: IMAGES[16 + i * 784..][..784].to_vec(),
        w: 28,
        h: 28,
        c: 1,
    }
}

#[test]
fn exported_heads_give_edgetunes_top1_in_another_runtime() {
    let opts = ImportOptions {
        taps: Taps::Blocks,
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    let bytes = import_bytes(ONNX, &opts).unwrap().to_bytes();
    let classes = [0usize, 1, 5, 8];
    let (mut shots, mut held) = (vec![], vec![]);
    let mut seen = [0; 10];
    for (i, &l) in LABELS[8..].iter().enumerate() {
        let l = l as usize;
        if !classes.contains(&l) {
            continue;
        }
        seen[l] += 1;
        if seen[l] <= 5 {
            shots.push((i, l));
        } else if seen[l] <= 10 {
            held.push(i);
        }
    }
    for kind in [Kind::Ncm, Kind::Linear, Kind::Moment] {
        let plan = Plan::from_owned(AlignedBytes::from_slice(&bytes)).unwrap();
        let mut s = Session::new(plan).unwrap();
        s.set_method(kind).unwrap();
        for &(i, l) in &shots {
            let x = s.image(image(i)).unwrap();
            s.enrol(x, &l.to_string()).unwrap();
        }
        s.fit(&mut |_| true).unwrap();
        let onnx = s.export_onnx(ONNX).unwrap();
        let model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_read(&mut &onnx[..])
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let mut agree = 0;
        let mut worst = 1.0f64;
        for &i in &held {
            let x = s.image(image(i)).unwrap();
            let mut ins = vec![];
            s.prep().inputs(&x, 0, &mut ins).unwrap();
            let want = s.predict(&x, 4).unwrap();
            let t = Tensor::from_shape(&[1, 3, 224, 224], &ins[0]).unwrap();
            let out = model.run(tvec!(t.into())).unwrap();
            let sc: Vec<f32> = out[2]
                .to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect();
            assert_eq!(sc.len(), 4);
            let top = (0..4).max_by(|&a, &b| sc[a].total_cmp(&sc[b])).unwrap();
            agree += (top == want[0].0) as usize;
            // Cosine between the two score vectors (edgetune's in label order).
            let mut e = [0.0; 4];
            for &(c, v) in &want {
                e[c] = v as f64;
            }
            let dot: f64 = e.iter().zip(&sc).map(|(a, &b)| a * b as f64).sum();
            let n = e.iter().map(|a| a * a).sum::<f64>().sqrt()
                * sc.iter().map(|&b| (b as f64).powi(2)).sum::<f64>().sqrt();
            worst = worst.min(dot / n);
        }
        eprintln!(
            "{}: exported model (tract) top-1 = edgetune top-1 on {agree}/{} held-out images; worst score cosine {worst:.5}",
            kind.name(),
            held.len()
        );
        assert_eq!(agree, held.len(), "{}", kind.name());
        assert!(worst > 0.99, "{}: {worst}", kind.name());
    }
}

#[test]
fn heads_that_are_not_closed_form_are_refused() {
    let opts = ImportOptions {
        taps: Taps::Blocks,
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    let bytes = import_bytes(ONNX, &opts).unwrap().to_bytes();
    let plan = Plan::from_owned(AlignedBytes::from_slice(&bytes)).unwrap();
    let mut s = Session::new(plan).unwrap();
    s.opts.steps = Some(2);
    s.set_method(Kind::Ladder).unwrap();
    for (i, &l) in LABELS[8..].iter().enumerate().take(12) {
        let x = s.image(image(i)).unwrap();
        s.enrol(x, &l.to_string()).unwrap();
    }
    s.fit(&mut |_| true).unwrap();
    let e = s.export_onnx(ONNX).unwrap_err().to_string();
    assert!(e.contains("ladder") && e.contains("closed-form"), "{e}");
    // Another model than the plan's: the tap tensor is missing.
    s.set_method(Kind::Ncm).unwrap();
    s.fit(&mut |_| true).unwrap();
    assert!(s.export_onnx(ONNX).is_ok());
    let other = include_bytes!("../../models/tiny_cnn_fmnist04_int8.onnx");
    let e = s.export_onnx(other).unwrap_err().to_string();
    assert!(e.contains("'features'"), "{e}");
}
