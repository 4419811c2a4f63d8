//! Image preprocessing against PIL + numpy (tools/make_prep_goldens.py writes
//! models/golden/prep/): every declared policy turns the photos into the tensor the
//! producer's own steps make (torchvision on a PIL image, Keras's load_img, ultralytics'
//! letterbox, OpenCV's INTER_LINEAR), camera frames give the file path's tensor, EXIF
//! orientations match PIL's exif_transpose, and bad declarations name their field.

use edgetune::frame::{frame_tensor, rotate, Image, PixelFormat};
use edgetune::npy::read_npy;
use edgetune::preprocess::{ImagePrep, ImageSpec, Preprocess, Preset};
use edgetune::session::prep::load_image;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/golden/prep")
}

/// The picture PIL decoded (a lossless PNG), through the library's file path.
fn photo(name: &str) -> Image {
    load_image(&dir().join(format!("src_{name}.png"))).unwrap()
}

const TOL: f32 = 1e-3;

#[test]
fn every_policy_matches_pil_and_numpy_on_real_photos() {
    let manifest = std::fs::read_to_string(dir().join("manifest.txt")).unwrap();
    let mut rows = vec![];
    for line in manifest.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, decl, photos) = (f[0], f[1], f[2].split(',').collect::<Vec<_>>());
        let spec = ImageSpec::parse(decl).unwrap_or_else(|e| panic!("{decl}: {e}"));
        let (shape, gold) = read_npy(&dir().join(format!("{name}.npy"))).unwrap();
        assert_eq!(shape[0], photos.len(), "{name}");
        assert_eq!(shape[1..], spec.shape()[1..], "{name}: tensor shape");
        let n = spec.tensor_len();
        let mut worst = 0f32;
        let mut out = vec![];
        for (i, p) in photos.iter().enumerate() {
            let im = photo(p);
            spec.apply(&im.px, im.w, im.h, im.c, &mut out).unwrap();
            assert_eq!(out.len(), n);
            let want = &gold[i * n..][..n];
            let err = out
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            worst = worst.max(err);
        }
        rows.push((name.to_string(), decl.to_string(), photos.len(), worst));
    }
    println!("policy | declaration | photos | max |edgetune - oracle|");
    for (name, decl, n, err) in &rows {
        println!("{name} | {decl} | {n} | {err:.2e}");
    }
    for (name, decl, _, err) in &rows {
        assert!(*err <= TOL, "{name} ({decl}): max error {err} > {TOL}");
    }
    assert_eq!(rows.len(), 11, "every policy of the manifest ran");
}

/// A frame in BGRA with padded rows, stored turned so that a 90° rotation makes it
/// upright, gives the decoded file's tensor bit for bit (one implementation).
#[test]
fn camera_frames_take_the_file_path_policy() {
    let im = photo("cat0");
    // Stored 270° clockwise from upright: rotating it 90° clockwise brings it back.
    let stored = rotate(im.clone(), 270);
    let stride = stored.w * 4 + 12;
    let mut bgra = vec![0u8; stride * stored.h];
    for y in 0..stored.h {
        for x in 0..stored.w {
            let p = &stored.px[(y * stored.w + x) * 3..][..3];
            bgra[y * stride + x * 4..][..4].copy_from_slice(&[p[2], p[1], p[0], 255]);
        }
    }
    for decl in [
        "torchvision",
        "preset=yolo size=64",
        "preset=paddle size=40",
        "image size=48 resize=letterbox fill=0,128,255 order=bgr layout=nhwc",
        "image size=32 order=grey interp=nearest",
    ] {
        let spec = ImageSpec::parse(decl).unwrap();
        let (mut a, mut b) = (vec![], vec![]);
        spec.apply(&im.px, im.w, im.h, 3, &mut a).unwrap();
        frame_tensor(
            &bgra,
            PixelFormat::Bgra,
            stored.w,
            stored.h,
            stride,
            90,
            &spec,
            &mut b,
        )
        .unwrap();
        assert_eq!(a, b, "{decl}");
    }
}

#[test]
fn exif_orientations_match_pils_exif_transpose() {
    let mut worst = 0u8;
    for o in 1..=8 {
        let got = load_image(&dir().join(format!("exif_{o}.jpg"))).unwrap();
        let want = image::open(dir().join(format!("exif_{o}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(
            (got.w, got.h),
            (want.width() as usize, want.height() as usize),
            "orientation {o}"
        );
        // JPEG decoders differ by a few levels (the image crate's zune-jpeg against PIL's
        // libjpeg-turbo); a wrong turn or flip differs by far more.
        let d = got
            .px
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let mean: f64 = got
            .px
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b) as f64)
            .sum::<f64>()
            / got.px.len() as f64;
        println!("exif orientation {o}: max |decode - PIL| {d}, mean {mean:.3}");
        assert!(
            d <= 8 && mean < 1.0,
            "orientation {o}: max {d}, mean {mean}"
        );
        worst = worst.max(d);
        // A picture stored turned is not its upright self before the tag is applied.
        if o >= 5 {
            assert_ne!(got.w, got.h);
        }
    }
    println!("exif: max decoder difference {worst} levels over 8 orientations");
}

#[test]
fn bad_declarations_name_their_field() {
    for (decl, field) in [
        ("", "image"),
        ("image", "image"),
        ("image mean=1", "size"),
        ("image size=0", "size"),
        ("image size=224x", "size"),
        ("image size=5000", "size"),
        ("image size=224 resize=sideways", "resize"),
        ("image size=224 resize=200", "resize"),
        ("image size=224 crop=center", "crop"),
        ("image size=224 resize=256 crop=top", "crop"),
        ("image size=224 fill=114", "fill"),
        ("image size=64 resize=letterbox fill=300", "fill"),
        ("image size=64 resize=letterbox fill=1,2", "fill"),
        (
            "image size=64 resize=letterbox order=grey fill=1,2,3",
            "fill",
        ),
        ("image size=224 interp=bicubic", "interp"),
        ("image size=224 mean=1,2", "mean"),
        ("image size=224 mean=x", "mean"),
        ("image size=224 mean=nan", "mean"),
        ("image size=224 std=0", "std"),
        ("image size=224 std=1,0,1", "std"),
        ("image size=224 order=grey std=1,2,3", "std"),
        ("image size=224 std=2 scale=0.5", "scale"),
        ("image size=224 scale=0", "scale"),
        ("image size=224 scale=1/0", "scale"),
        ("image size=224 order=rbg", "order"),
        ("image size=224 layout=chw", "layout"),
        ("image size=224 colour=rgb", "colour"),
        ("image size=224 size=256", "size"),
        ("torchvision yolo", "preset"),
        ("preset=resnet", "preset"),
        ("image:224:127:0", "image"),
        ("image:224:127", "image"),
        ("audio:oww:0", "audio"),
        ("audio:mfcc:10", "audio"),
        ("text:2", "text"),
        ("text:128:0", "text"),
    ] {
        match Preprocess::declare(decl) {
            Err(e) => {
                assert_eq!(e.field, field, "'{decl}': {e}");
                let msg = edgetune::Error::from(e.clone()).to_string();
                assert!(msg.contains(&format!("`{field}`")), "{msg}");
            }
            Ok(p) => panic!("'{decl}' parsed as {p:?}"),
        }
    }
}

/// Fields set in code are checked before use: a typed error, never a panic.
#[test]
fn specs_built_in_code_are_checked_before_use() {
    let base = ImageSpec::parse("torchvision").unwrap();
    let px = vec![0u8; 8 * 6 * 3];
    let mut out = vec![];
    let zero = ImageSpec { width: 0, ..base };
    let short = ImageSpec {
        resize: edgetune::preprocess::Resize::Shorter { side: 0 },
        ..base
    };
    let nan = ImageSpec {
        std: [1.0, f32::NAN, 1.0],
        ..base
    };
    for (spec, field) in [(zero, "`size`"), (short, "`resize`"), (nan, "`std`")] {
        let e = spec.apply(&px, 8, 6, 3, &mut out).unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
    assert!(base.apply(&px, 8, 6, 3, &mut out).is_ok());
    assert!(base.apply(&px[..10], 8, 6, 3, &mut out).is_err());
    assert!(base.apply(&px, 8, 6, 4, &mut out).is_err());
}

#[test]
fn declarations_round_trip_through_the_plan_text() {
    let manifest = std::fs::read_to_string(dir().join("manifest.txt")).unwrap();
    let mut decls: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .map(String::from)
        .collect();
    decls.extend(Preset::ALL.map(|p| p.name().to_string()));
    decls.push("image size=320x240 resize=letterbox fill=1,2,3 interp=nearest".into());
    let spelled = "image size=224 resize=256 crop=center mean=123.7,116.3,103.5 \
                   std=58.4,57.1,57.4 order=rgb layout=nchw";
    let s = ImageSpec::parse(spelled).unwrap();
    assert_eq!(
        (s.width, s.height, s.mean[2], s.std[0]),
        (224, 224, 103.5, 58.4)
    );
    assert_eq!(
        s.resize,
        edgetune::preprocess::Resize::Shorter { side: 256 }
    );
    decls.push(spelled.into());
    for d in &decls {
        let p = Preprocess::declare(d).unwrap();
        let text = p.to_meta();
        assert_eq!(Preprocess::declare(&text).unwrap(), p, "{d} -> {text}");
        if let Preprocess::Image(s) = p {
            assert_eq!(ImageSpec::parse(&s.describe()).unwrap(), s, "{d}");
        }
    }
    // The first form is written back as itself, so earlier runtimes read such plans.
    for d in ["image:224:127:128", "image:28:127:128:1"] {
        assert_eq!(Preprocess::declare(d).unwrap().to_meta(), d);
        assert_eq!(
            ImageSpec::parse(d).unwrap(),
            ImagePrep::parse(d).unwrap().spec()
        );
    }
    // Presets record themselves, and the fields they fill.
    let tv = ImageSpec::parse("torchvision").unwrap();
    assert_eq!(
        tv.describe(),
        "image preset=torchvision size=224 resize=256 crop=center interp=bilinear \
         mean=123.675,116.28,103.53 std=58.395,57.12,57.375 order=rgb layout=nchw"
    );
    let big = ImageSpec::parse("preset=torchvision size=384").unwrap();
    assert_eq!(big.describe().split(' ').nth(3), Some("resize=438"));
    assert_eq!(
        ImageSpec::parse("image preset=tf-keras").unwrap(),
        ImageSpec::parse("tf-keras").unwrap()
    );
}

/// The first form preprocesses exactly as before: its half-pixel bilinear formula, written
/// out here, on a picture with a grey and an RGB source.
#[test]
fn first_form_keeps_its_arithmetic() {
    let (w, h) = (13usize, 9usize);
    let px: Vec<u8> = (0..w * h * 3).map(|i| (i * 53 % 256) as u8).collect();
    let p = ImagePrep::parse("image:5:100:50").unwrap();
    let mut out = vec![];
    p.apply(&px, w, h, 3, &mut out);
    let n = 5;
    for c in 0..3 {
        for oy in 0..n {
            for ox in 0..n {
                let map = |o: usize, inn: usize| {
                    let s = ((o as f32 + 0.5) * (inn as f32 / n as f32) - 0.5)
                        .clamp(0.0, (inn - 1) as f32);
                    let i0 = s.floor() as usize;
                    (i0, (i0 + 1).min(inn - 1), s - i0 as f32)
                };
                let ((y0, y1, fy), (x0, x1, fx)) = (map(oy, h), map(ox, w));
                let v = |x: usize, y: usize| px[(y * w + x) * 3 + c] as f32;
                let top = v(x0, y0) * (1.0 - fx) + v(x1, y0) * fx;
                let bot = v(x0, y1) * (1.0 - fx) + v(x1, y1) * fx;
                let want = (top * (1.0 - fy) + bot * fy - 100.0) / 50.0;
                assert_eq!(out[(c * n + oy) * n + ox], want);
            }
        }
    }
}
