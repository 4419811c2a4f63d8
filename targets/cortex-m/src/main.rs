//! edgetune on a Cortex-M4 (mps2-an386 under qemu-system-arm, semihosting): reads the
//! int8 backbone plan in place from flash (its weights and its tables: nothing is copied),
//! runs it from a static arena, enrols the few-shot support set stored in flash, trains an
//! `ncm` and a `linear` head on the device (feature `train`, on by default; the only user
//! of the heap), classifies the held-out examples with no heap allocation at all (the
//! allocator fails any), reports accuracy and memory, checks that bad input is refused,
//! and exits with a status the host test reads. Without `train` the firmware has no heap:
//! its allocator has no memory and fails every request. Its log is defmt frames over
//! semihosting, decoded on the host (run.sh).
#![no_std]
#![no_main]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
use defmt::{error, info};
use defmt_semihosting as _;
use edgetune::kernels::Kernels;
use edgetune::plan::PlanView;
use edgetune::preprocess::ImagePrep;
use edgetune::{Error, Executor};
#[cfg(feature = "train")]
use train::*;

/// The heap of training (the tap cache and the heads): counts its live bytes and peak,
/// and fails every allocation while `INFERRING` is set.
#[cfg(feature = "train")]
struct Counting(embedded_alloc::LlffHeap);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INFERRING: AtomicBool = AtomicBool::new(false);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the heap unchanged (or returns null, which `GlobalAlloc` allows);
// only counts bytes.
#[cfg(feature = "train")]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if INFERRING.load(Ordering::Relaxed) {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            error!("heap allocation of {} B during inference", l.size());
            return core::ptr::null_mut();
        }
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

/// The peak since the last call, which starts the next phase from what is live now.
fn phase_peak() -> usize {
    PEAK.swap(LIVE.load(Ordering::Relaxed), Ordering::Relaxed)
}

#[cfg(feature = "train")]
#[global_allocator]
static HEAP: Counting = Counting(embedded_alloc::LlffHeap::empty());
#[cfg(feature = "train")]
const HEAP_BYTES: usize = 96 * 1024;
#[cfg(feature = "train")]
static mut HEAP_MEM: [u8; HEAP_BYTES] = [0; HEAP_BYTES];

/// Inference only: no heap. The runtime links `alloc` (its error texts, the host's
/// paths), so an allocator must exist; this one has no memory and refuses (and counts)
/// every request, at load as in inference.
#[cfg(not(feature = "train"))]
struct NoHeap;
#[cfg(not(feature = "train"))]
const HEAP_BYTES: usize = 0;

// SAFETY: never hands out memory: null is the failure `GlobalAlloc` allows, and `dealloc`
// is never reached (no pointer was ever given).
#[cfg(not(feature = "train"))]
unsafe impl GlobalAlloc for NoHeap {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        error!(
            "heap allocation of {} B (this firmware has no heap)",
            l.size()
        );
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _p: *mut u8, _l: Layout) {}
}

#[cfg(not(feature = "train"))]
#[global_allocator]
static HEAP: NoHeap = NoHeap;

#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

/// The backbone plan in flash, 64-aligned so it is used in place.
static PLAN: &Aligned<[u8]> = &Aligned(*include_bytes!("../assets/tiny_cnn.etm"));
static EPISODE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/episode.bin"));
const ARENA_BYTES: usize = 16 * 1024;
static mut ARENA: Aligned<[u8; ARENA_BYTES]> = Aligned([0; ARENA_BYTES]);
/// The preprocessed input and the features of one example (static, so the memory report
/// counts them).
static mut INPUT_BUF: [f32; INPUT] = [0.0; INPUT];
static mut FEATURES: [f32; MAX_DIM] = [0.0; MAX_DIM];
/// Most held-out examples and classes the firmware keeps results for.
const MAX_QUERIES: usize = 128;
/// Largest feature vector, input tensor and backbone class count the firmware holds.
const MAX_DIM: usize = 256;
const INPUT: usize = 28 * 28;
const MAX_LOGITS: usize = 16;
#[cfg(feature = "train")]
const CLASSES: usize = 5;

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

/// Bytes of stack used since reset: from the top of the stack (`_stack_start`, which
/// counts `main`'s own frame) down to the deepest word written below `top`, where
/// `paint_stack` started painting.
fn stack_used(top: usize) -> usize {
    let lo = top - PAINT_BYTES;
    let mut a = lo;
    // SAFETY: reads the painted range, which lies in RAM.
    while a < top && unsafe { core::ptr::read_volatile(a as *const u32) } == PAINT {
        a += 4;
    }
    stack_start() - a
}

/// The top of the stack (where it starts, growing down).
fn stack_start() -> usize {
    extern "C" {
        static _stack_start: u32;
    }
    // A linker symbol: only its address is taken.
    core::ptr::addr_of!(_stack_start) as usize
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
    error!("{=str}: {}", what, e);
    debug::exit(debug::EXIT_FAILURE);
    halt()
}

/// A failure of the firmware's own checks (no `Error`: its text would need the heap).
fn fail_msg(what: &str, msg: &str) -> ! {
    error!("{=str}: {=str}", what, msg);
    debug::exit(debug::EXIT_FAILURE);
    halt()
}

/// The index of the largest score (the first on ties), as `adapt::argmax`.
fn argmax(s: &[f32]) -> usize {
    edgetune::adapt::argmax(s)
}

#[cfg(feature = "train")]
mod train {
    pub use alloc::vec;
    pub use edgetune::adapt::cache::{CacheFormat, TapCache, TapShape};
    use edgetune::adapt::method::pooled;
    pub use edgetune::adapt::{train_linear, Adapter, Kind, Method, Ncm, Spec, Support};
    use edgetune::Error;

    /// Trains the two heads the firmware serves, ncm and linear, as `adapt::fit` does for
    /// them (the same pooled rows of the cache, the same `Spec` defaults;
    /// tests/cortex_m.rs checks the predictions against `fit` on the host). Calling the
    /// heads' own trainers rather than `fit` keeps the trainers of the other methods
    /// (ladder, query, tail: about 40 KB of code this firmware never runs) out of flash.
    pub fn fit_heads(cache: &TapCache, classes: usize) -> Result<[(Kind, Method); 2], Error> {
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

    /// Class scores of one feature vector (features are one token, so pooling is the
    /// identity), as `Method::scores` gives them for ncm and linear; no allocation.
    pub fn scores(m: &Method, f: &[f32], out: &mut [f32]) {
        match m {
            Method::Ncm(n) => n.scores(f, out),
            Method::Linear(l) => l.logits(f, out),
            _ => unreachable!("the firmware trains ncm and linear only"),
        }
    }
}

#[entry]
fn main() -> ! {
    let top = paint_stack();
    // SAFETY: called once, before any allocation; HEAP_MEM is used by nothing else.
    #[cfg(feature = "train")]
    unsafe {
        HEAP.0
            .init(core::ptr::addr_of_mut!(HEAP_MEM) as usize, HEAP_BYTES)
    };
    // SAFETY: the only reference to ARENA, taken once here.
    let arena: &'static mut [u8] = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };

    // Load: the plan is read in place, weights and tables (tensors, ops, names) alike;
    // nothing of it is copied to RAM.
    let plan = PlanView::from_bytes(&PLAN.0).unwrap_or_else(|e| fail("plan", &e));
    let mut exec =
        Executor::in_place(&plan, Kernels::detect(), arena).unwrap_or_else(|e| fail("arena", &e));
    let prep = plan
        .meta("preprocess")
        .and_then(ImagePrep::parse)
        .unwrap_or_else(|| fail_msg("plan", "no preprocessing"));
    let logits_id = plan
        .outputs()
        .find(|p| p.name == "logits")
        .unwrap_or_else(|| fail_msg("plan", "no output named logits"))
        .tensor;
    let n_logits = exec.tensor_meta(logits_id).len();
    let features_id = exec
        .port("features")
        .unwrap_or_else(|| fail_msg("plan", "no output or tap named features"));
    let dim = exec.tensor_meta(features_id).len();
    // SAFETY: the only references to INPUT_BUF and FEATURES, taken once here.
    let (f, input) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(FEATURES),
            &mut *core::ptr::addr_of_mut!(INPUT_BUF),
        )
    };
    if dim > MAX_DIM || prep.tensor_len() > INPUT || n_logits > MAX_LOGITS {
        fail_msg(
            "plan",
            "features, input or classes larger than the firmware's buffers",
        );
    }
    let (f, input) = (&mut f[..dim], &mut input[..prep.tensor_len()]);
    let mut logits = [0.0f32; MAX_LOGITS];
    let logits = &mut logits[..n_logits];
    // One example through the backbone: its features in `f`.
    let mut features = |exec: &mut Executor, px: &[u8], f: &mut [f32]| -> Result<(), Error> {
        if !prep.apply_into(px, 28, 28, 1, input) {
            fail_msg("example", "pixels do not fit the preprocessing");
        }
        exec.run(&[input])?;
        exec.tensor_f32(features_id, f)
    };
    let h = plan.hash();
    info!(
        "edgetune firmware: plan {=[u8]:02x}... in flash at {=usize:#x} (weights and tables in place), {} ops, arena {} of {} B",
        h[..4], PLAN.0.as_ptr() as usize, plan.op_count(), plan.arena_bytes(), ARENA_BYTES
    );
    #[cfg(not(feature = "train"))]
    info!("heap: none (the allocator has no memory and refuses every request)");
    let load_heap = phase_peak();

    let n_sup = u16::from_le_bytes([EPISODE[0], EPISODE[1]]) as usize;
    let n_qry = u16::from_le_bytes([EPISODE[2], EPISODE[3]]) as usize;
    if n_qry > MAX_QUERIES {
        fail_msg("episode", "too many held-out examples");
    }

    // Training (feature `train`): enrol the support set, fit the heads, on the heap.
    #[cfg(feature = "train")]
    let methods = {
        let mut cache = TapCache::new(
            CacheFormat::F16,
            vec![("features".into(), TapShape::new(1, dim))],
        );
        for i in 0..n_sup {
            let (label, px) = example(i);
            features(&mut exec, px, f).unwrap_or_else(|e| fail("backbone", &e));
            cache
                .push(&[f], label)
                .unwrap_or_else(|e| fail("enrol", &e));
        }
        let methods = fit_heads(&cache, CLASSES).unwrap_or_else(|e| fail("train", &e));
        info!(
            "enrolled {} support examples of {} unseen classes; trained ncm and linear on the device",
            n_sup, CLASSES
        );
        methods
    };
    let train_heap = if cfg!(feature = "train") {
        phase_peak()
    } else {
        0
    };

    // Inference: every held-out example through the backbone (its own classes read from
    // its output) and, with `train`, the two heads. The heap refuses any allocation here.
    let mut backbone = [0u8; MAX_QUERIES];
    #[cfg(feature = "train")]
    let (mut preds, mut right) = ([[0u8; MAX_QUERIES]; 2], [0usize; 2]);
    let live_before = LIVE.load(Ordering::Relaxed);
    INFERRING.store(true, Ordering::Relaxed);
    for (q, class) in backbone[..n_qry].iter_mut().enumerate() {
        let (_label, px) = example(n_sup + q);
        features(&mut exec, px, f).unwrap_or_else(|e| fail("backbone", &e));
        exec.tensor_f32(logits_id, logits)
            .unwrap_or_else(|e| fail("backbone", &e));
        *class = argmax(logits) as u8;
        #[cfg(feature = "train")]
        for (j, (_, m)) in methods.iter().enumerate() {
            let mut sc = [0.0f32; CLASSES];
            scores(m, f, &mut sc);
            let p = argmax(&sc);
            preds[j][q] = p as u8;
            right[j] += (p == _label) as usize;
        }
    }
    INFERRING.store(false, Ordering::Relaxed);
    let refused = REFUSED.load(Ordering::Relaxed);
    let inference_heap = PEAK.load(Ordering::Relaxed) - live_before;
    info!(
        "inference: {} held-out examples, {} heap allocations (heap {} B above the load's)",
        n_qry, refused, inference_heap
    );
    info!("predictions backbone: {=[u8]}", backbone[..n_qry]);
    #[cfg(feature = "train")]
    for (j, (k, _)) in methods.iter().enumerate() {
        info!("predictions {=str}: {=[u8]}", k.name(), preds[j][..n_qry]);
        info!(
            "accuracy {=str} {}/{} = {=f32}",
            k.name(),
            right[j],
            n_qry,
            right[j] as f32 / n_qry as f32
        );
    }

    // Bad input on the device: each must be refused with a typed error.
    let mut bad_refused = 0;
    let mut bad_inputs = 0;
    let mut refuse = |what: &str, r: Result<(), Error>| {
        bad_inputs += 1;
        match r {
            Err(e) => {
                info!("bad input: {=str} -> {}", what, e);
                bad_refused += 1;
            }
            Ok(()) => error!("bad input: {=str} ACCEPTED", what),
        }
    };
    let truncated = &PLAN.0[..PLAN.0.len() - 64];
    refuse("truncated plan", PlanView::from_bytes(truncated).map(drop));
    refuse(
        "plan not 64-byte aligned",
        PlanView::from_bytes(&PLAN.0[1..]).map(drop),
    );
    // A plan of another version (its header, the version field raised by one): the
    // refusal is static text, so the build without a heap refuses it too.
    let mut other = Aligned([0u8; 64]);
    other.0.copy_from_slice(&PLAN.0[..64]);
    other.0[4] = other.0[4].wrapping_add(1);
    refuse(
        "plan of another version",
        PlanView::from_bytes(&other.0).map(drop),
    );
    let mut small = Aligned([0u8; 1024]);
    refuse(
        "plan too large for the arena",
        Executor::in_place(&plan, Kernels::detect(), &mut small.0).map(drop),
    );
    #[cfg(feature = "train")]
    {
        // A 64-aligned copy on the heap with one bit flipped.
        let mut corrupt = edgetune::plan::AlignedBytes::from_slice(&PLAN.0);
        corrupt.as_mut()[100] ^= 0x40;
        refuse(
            "corrupt plan",
            PlanView::from_bytes(corrupt.as_ref()).map(drop),
        );
        let a = Adapter {
            plan_hash: [0x5a; 16],
            taps: vec![("features".into(), TapShape { tokens: 1, dim })],
            classes: (0..CLASSES).map(|c| alloc::format!("{c}")).collect(),
            hyper: alloc::vec::Vec::new(),
            method: methods[0].1.clone(),
        };
        refuse(
            "adapter for another plan",
            Adapter::from_bytes(&a.to_bytes(), &plan.hash()).map(drop),
        );
    }

    extern "C" {
        static __sdata: u8;
        static __ebss: u8;
    }
    // Linker symbols: only their addresses are taken.
    let statics = core::ptr::addr_of!(__ebss) as usize - core::ptr::addr_of!(__sdata) as usize;
    let heap = load_heap.max(train_heap);
    let stack = stack_used(top);
    info!(
        "memory: arena {} B (plan needs {}), heap {} B (peak at load {} B, in training {} B, in inference {} allocations), stack peak {} B ({} B of it main's frame and above), static RAM {} B (arena and heap region included); RAM in use {} B",
        ARENA_BYTES,
        plan.arena_bytes(),
        HEAP_BYTES,
        load_heap,
        train_heap,
        refused,
        stack,
        stack_start() - top,
        statics,
        plan.arena_bytes() + heap + stack + (statics - ARENA_BYTES - HEAP_BYTES)
    );
    if bad_refused == bad_inputs && refused == 0 {
        info!("firmware: PASS");
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        error!(
            "firmware: FAIL ({} of {} bad inputs refused, {} allocations in inference)",
            bad_refused, bad_inputs, refused
        );
        debug::exit(debug::EXIT_FAILURE);
    }
    halt()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let msg = info.message().as_str().unwrap_or("(formatted message)");
    match info.location() {
        Some(l) => error!("panic at {=str}:{}: {=str}", l.file(), l.line(), msg),
        None => error!("panic: {=str}", msg),
    }
    debug::exit(debug::EXIT_FAILURE);
    halt()
}
