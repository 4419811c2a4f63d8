//! edgetune on a Cortex-M4 (mps2-an386 under qemu-system-arm, semihosting): loads the
//! int8 backbone plan from flash without copying, runs it from a static arena, enrols the
//! few-shot support set stored in flash, trains an `ncm` and a `linear` head on the
//! device, classifies the held-out examples, reports accuracy and memory, checks that bad
//! input is refused, and exits with a status the host test reads.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprint, hprintln};
use edgetune::adapt::cache::{CacheFormat, TapCache, TapShape};
use edgetune::adapt::method::pooled;
use edgetune::adapt::{self, train_linear, Adapter, Kind, Method, Ncm, Spec, Support};
use edgetune::features::FeatureExtractor;
use edgetune::kernels::Kernels;
use edgetune::plan::Plan;
use edgetune::preprocess::ImagePrep;
use edgetune::{Error, Executor};

/// Logging with defmt's macro names (`info!`, `error!`), printed as text over
/// semihosting so the host test reads it without a decoder.
macro_rules! info {
    ($($t:tt)*) => { hprintln!("INFO  {}", format_args!($($t)*)) };
}
macro_rules! error {
    ($($t:tt)*) => { hprintln!("ERROR {}", format_args!($($t)*)) };
}

/// The heap the runtime's metadata, tap cache and heads live in; counts its peak.
struct Counting(embedded_alloc::LlffHeap);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the heap unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { self.0.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with layout `l`.
        unsafe { self.0.dealloc(p, l) }
    }
}

#[global_allocator]
static HEAP: Counting = Counting(embedded_alloc::LlffHeap::empty());
const HEAP_BYTES: usize = 96 * 1024;
static mut HEAP_MEM: [u8; HEAP_BYTES] = [0; HEAP_BYTES];

#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

/// The backbone plan in flash, 64-aligned so it is used in place.
static PLAN: &Aligned<[u8]> = &Aligned(*include_bytes!("../assets/tiny_cnn.etm"));
static EPISODE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/episode.bin"));
const ARENA_BYTES: usize = 16 * 1024;
static mut ARENA: Aligned<[u8; ARENA_BYTES]> = Aligned([0; ARENA_BYTES]);

const PAINT: u32 = 0xDEAD_BEEF;
const PAINT_BYTES: usize = 48 * 1024;

/// Fills the stack below the current frame with a pattern; returns the top.
fn paint_stack() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    let (lo, hi) = (sp - PAINT_BYTES, sp - 512);
    for a in (lo..hi).step_by(4) {
        // SAFETY: the 48 KB below the stack pointer are unused stack (the stack grows
        // down from the top of the 4 MB RAM; static data and the heap sit at its bottom).
        unsafe { core::ptr::write_volatile(a as *mut u32, PAINT) };
    }
    sp
}

/// Bytes of stack used below `top` since `paint_stack`.
fn stack_used(top: usize) -> usize {
    let lo = top - PAINT_BYTES;
    let mut a = lo;
    // SAFETY: reads the painted range, which lies in RAM.
    while a < top && unsafe { core::ptr::read_volatile(a as *const u32) } == PAINT {
        a += 4;
    }
    top - a
}

fn example(i: usize) -> (usize, &'static [u8]) {
    let r = &EPISODE[4 + i * 785..][..785];
    (r[0] as usize, &r[1..])
}

/// After a semihosting exit (or if the host ignores it): sleep forever.
fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

fn fail(what: &str, e: &Error) -> ! {
    error!("{}: {}", what, e);
    debug::exit(debug::EXIT_FAILURE);
    halt()
}

/// Trains the two heads the firmware serves, ncm and linear, as `adapt::fit` does for
/// them (the same pooled rows of the cache, the same `Spec` defaults; tests/cortex_m.rs
/// checks the predictions against `fit` on the host). Calling the heads' own trainers
/// rather than `fit` keeps the trainers of the other methods (ladder, query, tail: about
/// 40 KB of code this firmware never runs) out of flash.
fn fit_heads(cache: &TapCache, classes: usize) -> Result<[(Kind, Method); 2], Error> {
    let dim = cache.taps[0].dim;
    let one = TapShape { tokens: 1, dim };
    let n = cache.labels.len();
    let (mut buf, mut x) = (vec![0.0f32; dim], vec![0.0f32; n * dim]);
    for (i, row) in x.chunks_exact_mut(dim).enumerate() {
        cache.read(i, 0, &mut buf);
        pooled(&buf, one, row);
    }
    let support = Support {
        x: &x,
        y: &cache.labels,
        dim,
        classes,
    };
    support.check()?;
    let mut ncm = Ncm::new(dim);
    for (row, &c) in x.chunks_exact(dim).zip(&cache.labels) {
        ncm.enrol(c, row);
    }
    let (linear, _loss) = train_linear(&support, &Spec::new(Kind::Linear).linear)?;
    Ok([
        (Kind::Ncm, Method::Ncm(ncm)),
        (Kind::Linear, Method::Linear(linear)),
    ])
}

/// Class scores of one feature vector, as `Method::scores` gives them for ncm and linear.
fn scores(m: &Method, f: &[f32], d: TapShape, out: &mut [f32]) {
    let mut p = vec![0.0f32; d.dim];
    pooled(f, d, &mut p);
    match m {
        Method::Ncm(n) => n.scores(&p, out),
        Method::Linear(l) => l.logits(&p, out),
        _ => unreachable!("the firmware trains ncm and linear only"),
    }
}

#[entry]
fn main() -> ! {
    let top = paint_stack();
    // SAFETY: called once, before any allocation; HEAP_MEM is used by nothing else.
    unsafe {
        HEAP.0
            .init(core::ptr::addr_of_mut!(HEAP_MEM) as usize, HEAP_BYTES)
    };
    // SAFETY: the only reference to ARENA, taken once here.
    let arena: &'static mut [u8] = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };

    let plan = Plan::from_bytes(&PLAN.0).unwrap_or_else(|e| fail("plan", &e));
    let exec =
        Executor::with_arena(&plan, Kernels::detect(), arena).unwrap_or_else(|e| fail("arena", &e));
    let prep = plan
        .meta("preprocess")
        .and_then(ImagePrep::parse)
        .unwrap_or_else(|| {
            fail(
                "plan",
                &Error::Invalid {
                    what: "no preprocessing".into(),
                },
            )
        });
    let mut fx = FeatureExtractor::new(exec, "features").unwrap_or_else(|e| fail("plan", &e));
    let dim = fx.dim;
    let h = plan.hash();
    info!(
        "edgetune firmware: plan {:02x}{:02x}{:02x}{:02x}... in flash at {:p} (zero-copy), {} ops, arena {} of {} bytes",
        h[0], h[1], h[2], h[3], PLAN.0.as_ptr(), plan.ops.len(), plan.arena_bytes(), ARENA_BYTES
    );

    let n_sup = u16::from_le_bytes([EPISODE[0], EPISODE[1]]) as usize;
    let n_qry = u16::from_le_bytes([EPISODE[2], EPISODE[3]]) as usize;
    let mut cache = TapCache::new(
        CacheFormat::F16,
        vec![("features".into(), TapShape::new(1, dim))],
    );
    let (mut input, mut f) = (Vec::new(), vec![0.0f32; dim]);
    for i in 0..n_sup {
        let (label, px) = example(i);
        prep.apply(px, 28, 28, 1, &mut input);
        fx.features(&input, &mut f)
            .unwrap_or_else(|e| fail("backbone", &e));
        cache
            .push(&[&f], label)
            .unwrap_or_else(|e| fail("enrol", &e));
    }
    let classes = 5;
    let methods = fit_heads(&cache, classes).unwrap_or_else(|e| fail("train", &e));
    info!(
        "enrolled {} support examples of {} unseen classes; trained ncm and linear on the device",
        n_sup, classes
    );

    let dims = [TapShape { tokens: 1, dim }];
    let mut preds: Vec<Vec<u8>> = vec![Vec::new(); methods.len()];
    let mut right = [0usize; 2];
    let mut sc = [0.0f32; 5];
    for q in 0..n_qry {
        let (label, px) = example(n_sup + q);
        prep.apply(px, 28, 28, 1, &mut input);
        fx.features(&input, &mut f)
            .unwrap_or_else(|e| fail("backbone", &e));
        for (j, (_, m)) in methods.iter().enumerate() {
            scores(m, &f, dims[0], &mut sc);
            let p = adapt::argmax(&sc);
            preds[j].push(p as u8);
            right[j] += (p == label) as usize;
        }
    }
    for (j, (k, _)) in methods.iter().enumerate() {
        hprint!("predictions {}:", k.name());
        for p in &preds[j] {
            hprint!(" {}", p);
        }
        hprintln!("");
        hprintln!(
            "accuracy {} {}/{} = {:.3}",
            k.name(),
            right[j],
            n_qry,
            right[j] as f32 / n_qry as f32
        );
    }

    // Bad input on the device: each must be refused with a typed error.
    let mut refused = 0;
    let mut corrupt = PLAN.0.to_vec();
    corrupt[100] ^= 0x40;
    match Plan::from_bytes(&corrupt) {
        Err(e) => {
            info!("bad input: corrupt plan -> {}", e);
            refused += 1;
        }
        Ok(_) => error!("bad input: corrupt plan ACCEPTED"),
    }
    let mut small = Aligned([0u8; 1024]);
    match Executor::with_arena(&plan, Kernels::detect(), &mut small.0) {
        Err(e) => {
            info!("bad input: plan too large for the arena -> {}", e);
            refused += 1;
        }
        Ok(_) => error!("bad input: small arena ACCEPTED"),
    }
    let a = Adapter {
        plan_hash: [0x5a; 16],
        taps: vec![("features".into(), dims[0])],
        classes: (0..5).map(|c| alloc::format!("{c}")).collect(),
        hyper: Vec::new(),
        method: methods[0].1.clone(),
    };
    match Adapter::from_bytes(&a.to_bytes(), &plan.hash()) {
        Err(e) => {
            info!("bad input: adapter for another plan -> {}", e);
            refused += 1;
        }
        Ok(_) => error!("bad input: foreign adapter ACCEPTED"),
    }

    extern "C" {
        static __sdata: u8;
        static __ebss: u8;
    }
    // Linker symbols: only their addresses are taken.
    let statics = core::ptr::addr_of!(__ebss) as usize - core::ptr::addr_of!(__sdata) as usize;
    let heap = PEAK.load(Ordering::Relaxed);
    let stack = stack_used(top);
    hprintln!(
        "memory: arena {} B (plan needs {}), heap peak {} B, stack peak {} B, static RAM {} B (arena and heap region included); RAM in use {} B",
        ARENA_BYTES,
        plan.arena_bytes(),
        heap,
        stack,
        statics,
        plan.arena_bytes() + heap + stack + (statics - ARENA_BYTES - HEAP_BYTES)
    );
    if refused == 3 {
        hprintln!("firmware: PASS");
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        hprintln!("firmware: FAIL ({} of 3 bad inputs refused)", refused);
        debug::exit(debug::EXIT_FAILURE);
    }
    halt()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    error!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    halt()
}
