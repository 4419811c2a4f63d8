//! The `Session`'s file paths on a small plan (fuzz/seed/tiny.etm, 8×8 RGB images): open a
//! plan file, read image files, save and load an adapter; missing, truncated and foreign
//! files give typed errors and leave no partial file behind. Small enough for Miri.
#![cfg(feature = "files")]

use edgetune::adapt::Kind;
use edgetune::session::Session;
use edgetune::Error;
use std::path::{Path, PathBuf};

fn plan_path() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/seed/tiny.etm"
    ))
    .to_path_buf()
}

/// A fresh folder of its own for each test.
fn folder(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgetune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An 8×8 PNG of one colour with a brighter square at `(x, y)`.
fn png(dir: &Path, name: &str, rgb: [u8; 3], x: u32, y: u32) -> PathBuf {
    let mut im = image::RgbImage::from_pixel(8, 8, image::Rgb(rgb));
    for dy in 0..3 {
        for dx in 0..3 {
            im.put_pixel((x + dx) % 8, (y + dy) % 8, image::Rgb([250, 250, 250]));
        }
    }
    let p = dir.join(name);
    im.save(&p).unwrap();
    p
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn open_enrol_save_and_load_through_files() {
    let dir = folder("session-files");
    let mut s = Session::open(&plan_path()).unwrap();
    s.set_method(Kind::Ncm).unwrap();
    let reds = [
        png(&dir, "r0.png", [200, 30, 30], 0, 0),
        png(&dir, "r1.png", [190, 40, 20], 4, 4),
    ];
    let blues = [
        png(&dir, "b0.png", [20, 30, 210], 0, 4),
        png(&dir, "b1.png", [30, 40, 190], 4, 0),
    ];
    for p in &reds {
        let x = s.load(p).unwrap();
        s.enrol(x, "red").unwrap();
    }
    for p in &blues {
        let x = s.load(p).unwrap();
        s.enrol(x, "blue").unwrap();
    }
    s.fit(&mut |_| true).unwrap();
    let query = png(&dir, "q.png", [195, 35, 25], 2, 2);
    let x = s.load(&query).unwrap();
    let mut before = Vec::new();
    s.scores(&x, &mut before).unwrap();
    assert_eq!(before.len(), 2);

    let eta = dir.join("user.eta");
    s.save(&eta).unwrap();
    // The rename left only the adapter beside the images: no temporary file.
    let mut want: Vec<String> = ["b0.png", "b1.png", "q.png", "r0.png", "r1.png", "user.eta"]
        .map(String::from)
        .to_vec();
    want.sort();
    assert_eq!(files_in(&dir), want);

    // The oracle: the same scores from a second session that reads both files back.
    let mut t = Session::open(&plan_path()).unwrap();
    t.load_adapter(&eta).unwrap();
    assert_eq!(
        t.classes().to_vec(),
        vec!["red".to_string(), "blue".to_string()]
    );
    let x = t.load(&query).unwrap();
    let mut after = Vec::new();
    t.scores(&x, &mut after).unwrap();
    assert_eq!(before, after);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files_give_typed_errors_and_leave_nothing() {
    let dir = folder("session-bad-files");
    let missing = dir.join("missing.etm");
    assert!(matches!(Session::open(&missing), Err(Error::Io { .. })));

    let plan = std::fs::read(plan_path()).unwrap();
    let cut = dir.join("cut.etm");
    std::fs::write(&cut, &plan[..plan.len() / 2]).unwrap();
    assert!(matches!(
        Session::open(&cut),
        Err(Error::BadFile { what: "plan", .. })
    ));

    let mut s = Session::open(&plan_path()).unwrap();
    // Not an image, and no file at all.
    let text = dir.join("not_an_image.png");
    std::fs::write(&text, b"plain text").unwrap();
    assert!(matches!(s.load(&text), Err(Error::Io { .. })));
    assert!(matches!(
        s.load(&dir.join("none.png")),
        Err(Error::Io { .. })
    ));

    // Nothing to save yet; then an adapter saved into a folder that does not exist.
    let nowhere = dir.join("no/such/folder/user.eta");
    assert!(matches!(s.save(&nowhere), Err(Error::Invalid { .. })));
    s.set_method(Kind::Ncm).unwrap();
    for (i, rgb) in [[200, 30, 30], [20, 30, 210]].into_iter().enumerate() {
        let p = png(&dir, &format!("c{i}.png"), rgb, 1, 1);
        let x = s.load(&p).unwrap();
        s.enrol(x, &format!("c{i}")).unwrap();
    }
    s.fit(&mut |_| true).unwrap();
    assert!(matches!(s.save(&nowhere), Err(Error::Io { .. })));
    assert!(!dir.join("no").exists());

    // Adapter files: truncated, and trained on another plan.
    let eta = dir.join("a.eta");
    s.save(&eta).unwrap();
    let bytes = std::fs::read(&eta).unwrap();
    let short = dir.join("short.eta");
    std::fs::write(&short, &bytes[..bytes.len() - 3]).unwrap();
    let mut t = Session::open(&plan_path()).unwrap();
    assert!(matches!(t.load_adapter(&short), Err(Error::BadFile { .. })));
    let mut foreign = bytes.clone();
    // The plan hash sits in the adapter's header; any other plan's hash is refused.
    let h = s.plan().hash();
    let at = bytes
        .windows(16)
        .position(|w| w == h)
        .expect("the adapter names its plan");
    foreign[at] ^= 0xff;
    assert!(matches!(
        t.load_adapter_bytes(&foreign),
        Err(Error::PlanMismatch { .. } | Error::BadFile { .. })
    ));
    assert!(t.adapter().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
