//! The C ABI from C: the header is current, and `examples/c/flow.c`, compiled by gcc
//! against the static library, runs the whole flow on the default backbone (x86-64
//! natively; aarch64 cross-compiled and run under qemu-aarch64 when the tools exist).

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target"))
}

#[test]
fn header_is_current() {
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let cfg = cbindgen::Config::from_file(Path::new(crate_dir).join("cbindgen.toml")).unwrap();
    let mut out = Vec::new();
    cbindgen::generate_with_config(crate_dir, cfg)
        .unwrap()
        .write(&mut out);
    let committed =
        std::fs::read(Path::new(crate_dir).join("include/edgetune.h")).unwrap_or_default();
    if committed != out {
        if std::env::var_os("EDGETUNE_BLESS").is_some() {
            std::fs::write(Path::new(crate_dir).join("include/edgetune.h"), &out).unwrap();
        } else {
            panic!("targets/capi/include/edgetune.h is stale: rerun with EDGETUNE_BLESS=1");
        }
    }
}

fn plan(dir: &Path) -> PathBuf {
    let onnx = std::fs::read(Path::new(ROOT).join("models/efficientnet_lite0_int8.onnx")).unwrap();
    let opts = edgetune::import::ImportOptions {
        meta: vec![("preprocess".into(), "image:224:127:128".into())],
        ..Default::default()
    };
    let parts = edgetune::import::import_bytes(&onnx, &opts).unwrap();
    let p = dir.join("p.etm");
    std::fs::write(&p, parts.to_bytes()).unwrap();
    p
}

fn build_lib(target: Option<&str>) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--release", "-p", "edgetune-capi"])
        .current_dir(ROOT);
    if let Some(t) = target {
        c.args(["--target", t]);
    }
    assert!(
        c.status().unwrap().success(),
        "building the static library failed"
    );
    let mut d = target_dir();
    if let Some(t) = target {
        d = d.join(t);
    }
    d.join("release")
}

fn compile_c(cc: &str, src: &str, libdir: &Path, dir: &Path) -> PathBuf {
    let exe = dir.join(format!("{src}-{cc}"));
    let st = Command::new(cc)
        .arg(Path::new(ROOT).join(format!("examples/c/{src}.c")))
        .arg("-I")
        .arg(Path::new(ROOT).join("targets/capi/include"))
        .arg(libdir.join("libedgetune_capi.a"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success(), "{cc} {src}.c failed");
    exe
}

fn run_flow(cc: &str, libdir: &Path, runner: &[&str], dir: &Path, plan: &Path) {
    let exe = compile_c(cc, "flow", libdir, dir);
    let data = Path::new(ROOT).join("examples/data");
    let mut cmd = if runner.is_empty() {
        Command::new(&exe)
    } else {
        let mut c = Command::new(runner[0]);
        c.args(&runner[1..]).arg(&exe);
        c
    };
    let out = cmd
        .arg(plan)
        .arg(data.join("fashion_mnist_600-images.idx"))
        .arg(data.join("fashion_mnist_600-labels.idx"))
        .arg(dir.join(format!("user-{cc}.eta")))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{cc}:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && text.contains("PASS"),
        "C flow failed"
    );
}

#[test]
fn c_program_runs_the_whole_flow() {
    let dir = std::env::temp_dir().join(format!("edgetune-capi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = plan(&dir);
    run_flow("gcc", &build_lib(None), &[], &dir, &plan);
    let have = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("aarch64-linux-gnu-gcc") && have("qemu-aarch64") {
        let lib = build_lib(Some("aarch64-unknown-linux-gnu"));
        run_flow(
            "aarch64-linux-gnu-gcc",
            &lib,
            &[
                "qemu-aarch64",
                "-L",
                "/usr/aarch64-linux-gnu",
                "-cpu",
                "max",
            ],
            &dir,
            &plan,
        );
    } else {
        eprintln!("SKIP aarch64 C flow: aarch64-linux-gnu-gcc or qemu-aarch64 missing");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pixel formats apps hand over, with how the test lays a photo out in each.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// RGB rows padded to a stride.
    RgbPadded,
    Rgba,
    Bgra,
    /// NV21 (full-range BT.601, as Android's camera): lossy, chroma at half resolution.
    Nv21,
    /// RGB pixels stored rotated 90° clockwise, handed over with rotation 270 to be upright.
    RgbRotated,
}

/// Writes `im` as a raw frame; returns (EtPixelFormat value, w, h, stride, rotation).
fn write_frame(im: &image::RgbImage, layout: Layout, path: &Path) -> (u32, u32, u32, u32, u32) {
    let (w, h) = im.dimensions();
    let px = |x: u32, y: u32| im.get_pixel(x, y).0;
    let mut v = vec![];
    let r = match layout {
        Layout::RgbPadded => {
            let stride = w * 3 + 5;
            for y in 0..h {
                for x in 0..w {
                    v.extend(px(x, y));
                }
                v.extend([7u8; 5]);
            }
            (0, w, h, stride, 0)
        }
        Layout::Rgba | Layout::Bgra => {
            for y in 0..h {
                for x in 0..w {
                    let [r, g, b] = px(x, y);
                    v.extend(match layout {
                        Layout::Rgba => [r, g, b, 255],
                        _ => [b, g, r, 255],
                    });
                }
            }
            (
                if matches!(layout, Layout::Rgba) { 1 } else { 2 },
                w,
                h,
                0,
                0,
            )
        }
        Layout::Nv21 => {
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let f = |p: [u8; 3]| p.map(|c| c as f32);
            for y in 0..h {
                for x in 0..w {
                    let [r, g, b] = f(px(x, y));
                    v.push(
                        (0.299 * r + 0.587 * g + 0.114 * b)
                            .round()
                            .clamp(0.0, 255.0) as u8,
                    );
                }
            }
            let mut uv = vec![0u8; (w as usize) * ch as usize];
            for cy in 0..ch {
                for cx in 0..cw {
                    // Chroma of the 2x2 block's mean colour.
                    let mut m = [0f32; 3];
                    let mut n = 0.0;
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let (x, y) = (2 * cx + dx, 2 * cy + dy);
                        if x < w && y < h {
                            let p = f(px(x, y));
                            (0..3).for_each(|i| m[i] += p[i]);
                            n += 1.0;
                        }
                    }
                    let [r, g, b] = m.map(|c| c / n);
                    let yy = 0.299 * r + 0.587 * g + 0.114 * b;
                    let o = (cy * w + 2 * cx) as usize;
                    uv[o] = ((r - yy) / 1.402 + 128.0).round().clamp(0.0, 255.0) as u8;
                    if o + 1 < uv.len() {
                        uv[o + 1] = ((b - yy) / 1.772 + 128.0).round().clamp(0.0, 255.0) as u8;
                    }
                }
            }
            v.extend(uv);
            v.extend([0u8; 2]);
            (4, w, h, 0, 0)
        }
        Layout::RgbRotated => {
            // Stored rotated 90° clockwise: stored (x', y') = upright (y', h-1-x').
            for y2 in 0..w {
                for x2 in 0..h {
                    v.extend(px(y2, h - 1 - x2));
                }
            }
            (0, h, w, 0, 270)
        }
    };
    std::fs::write(path, v).unwrap();
    r
}

fn build_cli() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "edgetune",
            "--features",
            "cli",
            "--bin",
            "edgetune",
        ])
        .current_dir(ROOT)
        .status()
        .unwrap();
    assert!(st.success(), "building the CLI failed");
    target_dir().join("release/edgetune")
}

/// Real RGB photos handed to the C ABI as RGB (padded rows), RGBA, BGRA, NV21 and rotated
/// frames give the CLI's predictions on the same JPEG files: the same class and, for the
/// lossless layouts, the same score to the printed digits (NV21 loses chroma detail, so
/// only its class is compared; its score difference is printed).
#[test]
fn c_photos_in_every_pixel_format_predict_as_the_cli() {
    let dir = std::env::temp_dir().join(format!("edgetune-photos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("train")).unwrap();
    let plan = plan(&dir);
    let photos = Path::new(ROOT).join("examples/data/photos");
    let mut classes: Vec<String> = std::fs::read_dir(&photos)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    classes.sort();
    assert!(classes.len() >= 2, "no photos in {}", photos.display());
    // Every enrolment first, then the queries (the C program trains before its first query).
    let (mut manifest, mut query_lines) = (String::new(), String::new());
    let mut queries = vec![]; // (jpeg, layout, label, frame file)
    for (label, c) in classes.iter().enumerate() {
        std::fs::create_dir_all(dir.join("train").join(c)).unwrap();
        for k in 0..5 {
            let jpg = photos.join(c).join(format!("{k}.jpg"));
            let im = image::open(&jpg).unwrap().to_rgb8();
            if k < 3 {
                std::fs::copy(&jpg, dir.join("train").join(c).join(format!("{k}.jpg"))).unwrap();
                let f = dir.join(format!("{c}-{k}.rgb"));
                let (fmt, w, h, st, rot) = write_frame(&im, Layout::RgbPadded, &f);
                manifest += &format!("enrol {label} {fmt} {w} {h} {st} {rot} {}\n", f.display());
                continue;
            }
            for layout in [
                Layout::RgbPadded,
                Layout::Rgba,
                Layout::Bgra,
                Layout::Nv21,
                Layout::RgbRotated,
            ] {
                let f = dir.join(format!("{c}-{k}-{layout:?}.raw"));
                let (fmt, w, h, st, rot) = write_frame(&im, layout, &f);
                query_lines += &format!("query {label} {fmt} {w} {h} {st} {rot} {}\n", f.display());
                queries.push((jpg.clone(), layout, f));
            }
        }
    }
    manifest += &query_lines;
    std::fs::write(dir.join("manifest.txt"), &manifest).unwrap();
    let cli = build_cli();
    let run = |args: &[&std::ffi::OsStr]| {
        let o = Command::new(&cli).args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let lib = build_lib(None);
    let have = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let aarch64 = (have("aarch64-linux-gnu-gcc") && have("qemu-aarch64"))
        .then(|| build_lib(Some("aarch64-unknown-linux-gnu")));
    for method in ["linear", "ncm"] {
        let eta = dir.join(format!("{method}.eta"));
        run(&[
            "adapt".as_ref(),
            "--plan".as_ref(),
            plan.as_os_str(),
            "--train".as_ref(),
            dir.join("train").as_os_str(),
            "--method".as_ref(),
            method.as_ref(),
            "--json".as_ref(),
            "-o".as_ref(),
            eta.as_os_str(),
        ]);
        // CLI: class and score of each query JPEG.
        let mut cli_top = std::collections::HashMap::new();
        for (jpg, _, _) in &queries {
            let out = run(&[
                "predict".as_ref(),
                "--plan".as_ref(),
                plan.as_os_str(),
                "--adapter".as_ref(),
                eta.as_os_str(),
                "--top".as_ref(),
                "1".as_ref(),
                jpg.as_os_str(),
            ]);
            // "<path>: <class> <score>"
            let rest = out.trim().rsplit(": ").next().unwrap().to_string();
            let mut it = rest.split(' ');
            let (c, sc) = (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            );
            let label = classes.iter().position(|n| *n == c).unwrap();
            cli_top.insert(jpg.clone(), (label, sc.parse::<f64>().unwrap()));
        }
        // Natively, and (linear only: it is slow under emulation) cross-compiled for
        // aarch64 and run under qemu, whose kernels (NEON, dotprod, i8mm) round float
        // sums differently: the same classes, scores within 2e-3.
        let mut runs: Vec<(&str, PathBuf, Vec<&str>, f64)> =
            vec![("gcc", lib.clone(), vec![], 5e-4)];
        if method == "linear" {
            match &aarch64 {
                Some(l) => runs.push((
                    "aarch64-linux-gnu-gcc",
                    l.clone(),
                    vec![
                        "qemu-aarch64",
                        "-L",
                        "/usr/aarch64-linux-gnu",
                        "-cpu",
                        "max",
                    ],
                    2e-3,
                )),
                None => {
                    eprintln!("SKIP aarch64 photos: aarch64-linux-gnu-gcc or qemu-aarch64 missing")
                }
            }
        }
        for (cc, libdir, runner, tol) in runs {
            let exe = compile_c(cc, "photos", &libdir, &dir);
            let mut cmd = match runner.split_first() {
                Some((r, args)) => {
                    let mut c = Command::new(r);
                    c.args(args).arg(&exe);
                    c
                }
                None => Command::new(&exe),
            };
            let o = cmd
                .arg(&plan)
                .arg(dir.join("manifest.txt"))
                .arg(method)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            eprintln!(
                "{method} ({cc}):\n{text}{}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                o.status.success() && text.contains("PASS"),
                "C photos failed ({cc})"
            );
            let mut checked = 0;
            for line in text.lines().filter(|l| l.starts_with("query ")) {
                let f: Vec<&str> = line.split(' ').collect();
                let (frame, label, score) = (f[1], f[2].parse::<usize>().unwrap(), f[3]);
                let (jpg, layout, _) = queries
                    .iter()
                    .find(|q| q.2.to_str() == Some(frame))
                    .unwrap();
                let (want, want_sc) = cli_top[jpg];
                assert_eq!(
                    label,
                    want,
                    "{method} {cc} {layout:?} {}: C class vs CLI class",
                    jpg.display()
                );
                // The CLI prints 3 decimals, the C program 5.
                let d = (score.parse::<f64>().unwrap() - want_sc).abs();
                match layout {
                    Layout::Nv21 => {
                        eprintln!(
                            "{method} {cc} NV21 {}: score differs by {d:.4}",
                            jpg.display()
                        )
                    }
                    _ => assert!(
                        d <= tol,
                        "{method} {cc} {layout:?} {}: score {score} vs CLI {want_sc}",
                        jpg.display()
                    ),
                }
                checked += 1;
            }
            assert_eq!(checked, queries.len());
            eprintln!(
            "{method} ({cc}): {checked} frames (RGB padded, RGBA, BGRA, NV21, rotated) agree with the CLI"
        );
        }
    }

    let _ = std::fs::remove_dir_all(&dir);
}
