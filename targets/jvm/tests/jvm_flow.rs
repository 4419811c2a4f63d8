//! The JVM binding end to end on the host JVM: the Kotlin API (`kotlin/edgetune`) and the
//! test program `tests/jvm/JvmFlow.kt` are compiled with kotlinc (and javac for the Java
//! parts), then run against this crate's `libedgetune_jni` on the bundled photos handed
//! over as raw frames in several pixel layouts. The oracle is the CLI (`edgetune predict
//! --json`) on the same plan, the adapter the JVM saved, and the JPEG files; error
//! messages are compared with the library's own for the same bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const HERE: &str = env!("CARGO_MANIFEST_DIR");

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(HERE).join("target"))
}

fn have(c: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {c}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text
}

/// The CLI built from the root workspace (the oracle, and the plan compiler).
fn build_cli() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .args(["build", "--release", "-p", "edgetune", "--features", "cli"])
        .args(["--bin", "edgetune"])
        .current_dir(ROOT));
    target_dir().join("release/edgetune")
}

/// The shared library `cargo test --release` built for this test: this crate's cdylib in
/// the test's `deps` directory (cargo copies it up to the profile directory only for
/// `cargo build`, so the copy there may be older).
fn jni_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().join(format!(
        "{}edgetune_jni{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(lib.exists(), "{} missing", lib.display());
    lib
}

/// Pixel layouts the test hands over, with how a photo is laid out in each.
#[derive(Clone, Copy, Debug, PartialEq)]
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

/// Writes `im` as a raw frame; returns (PixelFormat name, w, h, stride, rotation).
fn write_frame(
    im: &image::RgbImage,
    layout: Layout,
    path: &Path,
) -> (&'static str, u32, u32, u32, u32) {
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
            ("RGB", w, h, stride, 0)
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
            let name = if layout == Layout::Rgba {
                "RGBA"
            } else {
                "BGRA"
            };
            (name, w, h, 0, 0)
        }
        Layout::Nv21 => {
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let f = |p: [u8; 3]| p.map(|c| c as f32);
            for y in 0..h {
                for x in 0..w {
                    let [r, g, b] = f(px(x, y));
                    let yy = 0.299 * r + 0.587 * g + 0.114 * b;
                    v.push(yy.round().clamp(0.0, 255.0) as u8);
                }
            }
            let mut uv = vec![0u8; (w as usize) * ch as usize];
            for cy in 0..ch {
                for cx in 0..cw {
                    // Chroma of the 2x2 block's mean colour.
                    let (mut m, mut n) = ([0f32; 3], 0.0);
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
            ("NV21", w, h, 0, 0)
        }
        Layout::RgbRotated => {
            // Stored rotated 90° clockwise: stored (x', y') = upright (y', h-1-x').
            for y2 in 0..w {
                for x2 in 0..h {
                    v.extend(px(y2, h - 1 - x2));
                }
            }
            ("RGB", h, w, 0, 270)
        }
    };
    std::fs::write(path, v).unwrap();
    r
}

/// A prediction line of the JVM program or the CLI: (class, score) best first.
type Top = Vec<(String, f64)>;

fn parse_top(fields: &[&str]) -> Top {
    fields
        .iter()
        .map(|f| {
            let (c, s) = f.rsplit_once('=').unwrap();
            (c.to_string(), s.parse().unwrap())
        })
        .collect()
}

#[test]
fn kotlin_and_java_flow_predicts_as_the_cli() {
    let missing: Vec<&str> = ["java", "javac", "kotlinc"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: the JVM flow needs {} (apt-get install default-jdk-headless kotlin)",
            missing.join(", ")
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("edgetune-jvm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("classes")).unwrap();

    // The plan, compiled from the bundled backbone by the CLI.
    let cli = build_cli();
    let plan = dir.join("p.etm");
    run(Command::new(&cli)
        .arg("compile")
        .arg(Path::new(ROOT).join("models/efficientnet_lite0_int8.onnx"))
        .args(["--preprocess", "image:224:127:128", "-o"])
        .arg(&plan));

    // Frames: photos 0-2 of each class enrolled (RGB, padded rows), 3-4 queried in every
    // layout.
    let photos = Path::new(ROOT).join("examples/data/photos");
    let mut classes: Vec<String> = std::fs::read_dir(&photos)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    classes.sort();
    assert!(
        classes.len() >= 3,
        "too few classes in {}",
        photos.display()
    );
    let (mut manifest, mut query_lines) = (String::new(), String::new());
    let mut queries: HashMap<String, (PathBuf, Layout)> = HashMap::new();
    for c in &classes {
        for k in 0..5 {
            let jpg = photos.join(c).join(format!("{k}.jpg"));
            let im = image::open(&jpg).unwrap().to_rgb8();
            let layouts: &[Layout] = if k < 3 {
                &[Layout::RgbPadded]
            } else {
                &[
                    Layout::RgbPadded,
                    Layout::Rgba,
                    Layout::Bgra,
                    Layout::Nv21,
                    Layout::RgbRotated,
                ]
            };
            for &layout in layouts {
                let f = dir.join(format!("{c}-{k}-{layout:?}.raw"));
                let (fmt, w, h, st, rot) = write_frame(&im, layout, &f);
                let line = format!("{c} {fmt} {w} {h} {st} {rot} {}\n", f.display());
                if k < 3 {
                    manifest += &format!("enrol {line}");
                } else {
                    query_lines += &format!("query {line}");
                    queries.insert(f.display().to_string(), (jpg.clone(), layout));
                }
            }
        }
    }
    manifest += &query_lines;
    let manifest_path = dir.join("manifest.txt");
    std::fs::write(&manifest_path, &manifest).unwrap();

    // Compile: the API as a library, then the programs against its classes.
    let classes_dir = dir.join("classes");
    let api = Path::new(HERE).join("kotlin/edgetune");
    let listener = api.join("ProgressListener.java");
    run(Command::new("kotlinc")
        .arg(api.join("Session.kt"))
        .arg(&listener)
        .arg("-d")
        .arg(&classes_dir));
    run(Command::new("javac")
        .arg("-d")
        .arg(&classes_dir)
        .arg("-cp")
        .arg(&classes_dir)
        .arg(&listener));
    let tests = Path::new(HERE).join("tests/jvm");
    // The Kotlin program with the Kotlin runtime in its jar; the Java program needs only
    // the API's classes and that runtime.
    let jar = dir.join("flow.jar");
    run(Command::new("kotlinc")
        .arg(tests.join("JvmFlow.kt"))
        .arg("-cp")
        .arg(&classes_dir)
        .arg("-include-runtime")
        .arg("-d")
        .arg(&jar));
    run(Command::new("javac")
        .arg("-d")
        .arg(&classes_dir)
        .arg("-cp")
        .arg(&classes_dir)
        .arg(tests.join("JavaUse.java")));
    let cp = format!("{}:{}", jar.display(), classes_dir.display());
    let lib = jni_lib();
    // Not on java.library.path (cargo's LD_LIBRARY_PATH, which the JVM adds to it, is
    // removed): System.loadLibrary fails and the property is the fallback.
    let java = |main: &str, args: &[&std::ffi::OsStr]| {
        run(Command::new("java")
            .env_remove("LD_LIBRARY_PATH")
            .arg(format!("-Dedgetune.jni.library={}", lib.display()))
            .args(["-cp", &cp, main])
            .args(args))
    };
    // Without the property or EDGETUNE_JNI_LIBRARY the loader says how to point at it.
    let o = Command::new("java")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("EDGETUNE_JNI_LIBRARY")
        .args(["-cp", &cp, "JavaUse"])
        .arg(&plan)
        .arg(&manifest_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("UnsatisfiedLinkError") && stderr.contains("-Dedgetune.jni.library="),
        "{stderr}"
    );
    let out = java(
        "JvmFlowKt",
        &[
            plan.as_os_str(),
            manifest_path.as_os_str(),
            dir.as_os_str(),
            "ncm,linear".as_ref(),
        ],
    );
    eprintln!("{out}");
    assert!(
        out.lines().any(|l| l == "PASS"),
        "the JVM flow did not pass"
    );

    // Each method's predictions against the CLI's on the JPEG files, with the adapter the
    // JVM saved.
    for method in ["ncm", "linear"] {
        let eta = dir.join(format!("{method}.eta"));
        let mut jpgs: Vec<PathBuf> = queries.values().map(|q| q.0.clone()).collect();
        jpgs.sort();
        jpgs.dedup();
        let json = run(Command::new(&cli)
            .args(["predict", "--top", "4", "--json", "--plan"])
            .arg(&plan)
            .arg("--adapter")
            .arg(&eta)
            .args(&jpgs));
        let mut want: HashMap<PathBuf, Top> = HashMap::new();
        for line in json.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let top = v["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["class"].as_str().unwrap().to_string(),
                        t["score"].as_f64().unwrap(),
                    )
                })
                .collect();
            want.insert(PathBuf::from(v["input"].as_str().unwrap()), top);
        }
        assert_eq!(want.len(), jpgs.len());
        let mut checked = 0;
        let mut nv21 = vec![];
        for line in out.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 3 || f[0] != "pred" || f[1] != method {
                continue;
            }
            let (jpg, layout) = &queries[f[2]];
            let got = parse_top(&f[3..]);
            let cli_top = &want[jpg];
            if *layout == Layout::Nv21 {
                // Lossy chroma: the same class, the score difference is printed.
                assert_eq!(got[0].0, cli_top[0].0, "{method} NV21 {}", jpg.display());
                nv21.push((got[0].1 - cli_top[0].1).abs());
            } else {
                // The same classes in the same order; the CLI prints 5 decimals.
                let names = |t: &Top| t.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
                assert_eq!(names(&got), names(cli_top), "{method} {layout:?} {}", f[2]);
                for ((_, a), (_, b)) in got.iter().zip(cli_top) {
                    assert!(
                        (a - b).abs() <= 6e-6,
                        "{method} {layout:?} {}: score {a} vs CLI {b}",
                        f[2]
                    );
                }
            }
            // ncm and linear get every held-out photo right on this backbone.
            let truth = jpg.parent().unwrap().file_name().unwrap().to_string_lossy();
            assert_eq!(got[0].0, truth, "{method} {layout:?} {}", f[2]);
            checked += 1;
        }
        assert_eq!(checked, queries.len(), "{method}: predictions printed");
        assert!(out.contains(&format!("reload {method} identical {}", queries.len())));
        eprintln!(
            "{method}: {checked} frames (RGB padded, RGBA, BGRA, NV21, rotated; byte[], direct \
             and heap ByteBuffer) give the CLI's classes (scores within 6e-6 except NV21: \
             largest NV21 difference {:.4})",
            nv21.iter().cloned().fold(0.0, f64::max)
        );
    }

    // Errors carry the library's message: compare with the library on the same input.
    let err = |key: &str| -> String {
        let p = format!("error {key} EdgetuneException: ");
        out.lines()
            .find_map(|l| l.strip_prefix(&p))
            .unwrap_or_else(|| panic!("no '{key}' error printed"))
            .to_string()
    };
    let short = edgetune::frame::frame_to_image(
        &[0u8; 299],
        edgetune::frame::PixelFormat::Rgb,
        10,
        10,
        0,
        0,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err("size"), short);
    assert_eq!(err("sizeDirect"), short);
    let rot = edgetune::frame::frame_to_image(
        &[0u8; 300],
        edgetune::frame::PixelFormat::Rgb,
        10,
        10,
        0,
        45,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err("rotation"), rot);
    let nope = dir.join("nope.etm");
    let missing_plan = edgetune::session::Session::open(&nope)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(err("plan"), missing_plan);
    assert!(err("plan").contains("nope.etm"));
    let mut s = edgetune::session::Session::open(&plan).unwrap();
    let missing_adapter = s
        .load_adapter(&dir.join("nope.eta"))
        .unwrap_err()
        .to_string();
    assert_eq!(err("adapter"), missing_adapter);
    assert!(err("method").starts_with("unknown method 'knn'"));
    assert!(err("cancel").contains("cancel"), "{}", err("cancel"));
    assert!(
        err("noAdapter").contains("no adapter"),
        "{}",
        err("noAdapter")
    );
    assert!(err("removeClass").contains("no class"));
    assert!(err("save").contains("no-such-dir"));
    assert!(err("closed").contains("closed"));
    assert!(out.contains("listener exception IllegalStateException: stop from the listener"));
    assert!(
        out.contains("listener exception (linear) IllegalStateException: stop from the listener")
    );
    assert!(err("busy").contains("busy"), "{}", err("busy"));

    // The same API from Java: its ncm prediction of the first query equals Kotlin's.
    let jout = java("JavaUse", &[plan.as_os_str(), manifest_path.as_os_str()]);
    eprintln!("{jout}");
    let jline = jout.lines().find(|l| l.starts_with("java ncm ")).unwrap();
    let first = jline.split(' ').nth(2).unwrap();
    let kline = out
        .lines()
        .find(|l| l.starts_with(&format!("pred ncm {first} ")))
        .unwrap();
    assert_eq!(
        jline.split(' ').skip(3).collect::<Vec<_>>(),
        kline.split(' ').skip(3).collect::<Vec<_>>()
    );
    assert!(jout.contains("java error unknown method 'knn'"));

    let _ = std::fs::remove_dir_all(&dir);
}
