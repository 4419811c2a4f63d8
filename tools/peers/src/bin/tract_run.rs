//! Loads an ONNX model with tract and runs it: the tract peer of `edgetune run` for
//! latency (`tools/bench_backbones.sh`) and program size (`tools/size_report.sh`).
//!   tract_run MODEL.onnx NAME:1x3x224x224[:i64]... [--runs N]
use edgetune_peers::{load_model, model_inputs, InputSpec};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: tract_run MODEL.onnx NAME:SHAPE[:i64]... [--runs N]");
        std::process::exit(2);
    };
    let mut runs = 10usize;
    let mut specs = Vec::new();
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        if a == "--runs" {
            runs = it.next().and_then(|s| s.parse().ok()).unwrap_or(10);
        } else {
            match InputSpec::parse(a) {
                Some(s) => specs.push(s),
                None => {
                    eprintln!("bad input spec {a}");
                    std::process::exit(2);
                }
            }
        }
    }
    let t0 = Instant::now();
    let model = match load_model(path, &specs) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("tract: {e:?}");
            std::process::exit(1);
        }
    };
    let load = t0.elapsed().as_secs_f64();
    let inputs = model_inputs(&specs);
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + 3 {
        let t = Instant::now();
        let out = model.run(inputs.clone()).expect("tract run");
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64());
        }
        std::hint::black_box(out);
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    println!(
        "tract {}: load+optimise {:.2} s, median {:.3} ms over {} runs",
        path,
        load,
        median * 1e3,
        runs
    );
}
