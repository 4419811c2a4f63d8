//! The smallest device program: load a plan, enrol 5 examples of 3 classes, train a
//! linear adapter, predict held-out examples, all through the library's `Session`. No
//! importer, no CLI crates — the size anchor of the targets (`--profile size`).
//!
//! usage: minimal PLAN.etm IMAGES.idx LABELS.idx

use edgetune::frame::Image;
use edgetune::{adapt::Kind, Error, Result, Session};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn read(p: &str) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| Error::Io {
        path: p.into(),
        detail: e.to_string(),
    })
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err(Error::Invalid {
            what: "usage: minimal PLAN.etm IMAGES.idx LABELS.idx".into(),
        });
    }
    let mut s = Session::from_bytes(&read(&args[1])?)?;
    s.set_method(Kind::Linear)?;
    let (images, labels) = (read(&args[2])?, read(&args[3])?);
    if images.len() < 16 || labels.len() < 8 || images.len() - 16 < (labels.len() - 8) * 784 {
        return Err(Error::BadFile {
            what: "idx",
            detail: "images and labels do not match (28x28 grey images expected)".into(),
        });
    }
    let (px, labels) = (&images[16..], &labels[8..]);
    let image = |i: usize| Image {
        px: px[i * 784..][..784].to_vec(),
        w: 28,
        h: 28,
        c: 1,
    };
    let classes = [0u8, 1, 8];
    let (mut seen, mut held) = ([0usize; 3], vec![]);
    for (i, &l) in labels.iter().enumerate() {
        let Some(c) = classes.iter().position(|&k| k == l) else {
            continue;
        };
        if seen[c] < 5 {
            let x = s.image(image(i))?;
            s.enrol(x, &l.to_string())?;
        } else if seen[c] < 10 {
            held.push((i, l));
        }
        seen[c] += 1;
    }
    s.fit(&mut |_| true)?;
    let mut ok = 0;
    for &(i, l) in &held {
        let x = s.image(image(i))?;
        let top = s.predict(&x, 1)?;
        ok += (s.class_name(top[0].0) == Some(l.to_string().as_str())) as usize;
    }
    println!("held-out accuracy {ok}/{}", held.len());
    Ok(())
}
