//! The smallest device program: load a plan, enrol 5 examples of 3 classes, train a
//! linear adapter, predict held-out examples. No importer, no CLI crates — the size
//! anchor of the targets issue (`--profile size`).
//!
//! usage: minimal PLAN.etm IMAGES.idx LABELS.idx

use edgetune::adapt::cache::{CacheFormat, TapCache};
use edgetune::adapt::heads::TapDims;
use edgetune::adapt::{self, Kind, Spec};
use edgetune::features::{default_taps, TapReader};
use edgetune::plan::{AlignedBytes, Plan, DEFAULT_ARENA_LIMIT};
use edgetune::preprocess::ImagePrep;
use edgetune::{Error, Executor, Result};

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
    let plan = Plan::from_owned(AlignedBytes::from_slice(&read(&args[1])?))?;
    let (images, labels) = (read(&args[2])?, read(&args[3])?);
    let (px, labels) = (&images[16..], &labels[8..]);
    let prep = plan
        .meta("preprocess")
        .and_then(ImagePrep::parse)
        .ok_or_else(|| Error::Invalid {
            what: "plan declares no preprocessing".into(),
        })?;
    let taps = default_taps(&plan, Kind::Linear);
    let exec = Executor::new(
        &plan,
        edgetune::kernels::Kernels::detect(),
        DEFAULT_ARENA_LIMIT,
    )?;
    let mut reader = TapReader::new(exec, &taps)?;
    let mut cache = TapCache::new(CacheFormat::F16, reader.shapes.clone());
    let mut bufs: Vec<Vec<f32>> = reader.shapes.iter().map(|s| vec![0.0; s.len()]).collect();
    let classes = [0u8, 1, 8];
    let (mut seen, mut held) = ([0usize; 3], vec![]);
    let mut input = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        let Some(c) = classes.iter().position(|&k| k == l) else {
            continue;
        };
        if seen[c] < 5 {
            prep.apply(&px[i * 784..][..784], 28, 28, 1, &mut input);
            reader.run(&input, &mut bufs)?;
            let v: Vec<&[f32]> = bufs.iter().map(|b| &b[..]).collect();
            cache.push(&v, c)?;
        } else if seen[c] < 10 {
            held.push((i, c));
        }
        seen[c] += 1;
    }
    let idx: Vec<usize> = (0..cache.len()).collect();
    let m = adapt::fit(&Spec::new(Kind::Linear), &cache, &[0], &idx, 3, &mut |_| {
        true
    })?;
    let dims = [TapDims {
        tokens: cache.taps[0].tokens,
        dim: cache.taps[0].dim,
    }];
    let (mut ok, mut scores) = (0, [0.0f32; 3]);
    for &(i, c) in &held {
        prep.apply(&px[i * 784..][..784], 28, 28, 1, &mut input);
        reader.run(&input, &mut bufs)?;
        m.scores(&[&bufs[0]], &dims, &mut scores)?;
        ok += (adapt::argmax(&scores) == c) as usize;
    }
    println!("held-out accuracy {ok}/{}", held.len());
    Ok(())
}
