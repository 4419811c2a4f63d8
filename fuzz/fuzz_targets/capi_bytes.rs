//! The C ABI's byte-buffer entry points: `et_open_plan` and `et_load_adapter_bytes`.
//! The first input byte picks which; nothing may panic across the boundary or crash.
#![no_main]
use edgetune_capi::*;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Session(*mut EtSession);
// SAFETY: the fuzzer calls the target from one thread at a time.
unsafe impl Send for Session {}
unsafe impl Sync for Session {}

static SESSION: OnceLock<Session> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    if which % 2 == 0 {
        let mut s = std::ptr::null_mut();
        // SAFETY: `rest` is a live slice; `s` is a valid out pointer.
        let st = unsafe { et_open_plan(rest.as_ptr(), rest.len(), &mut s) };
        assert_eq!(st == EtStatus::Ok, !s.is_null());
        // SAFETY: `s` is null or a session just opened, freed once.
        unsafe { et_free(s) };
    } else {
        let s = SESSION.get_or_init(|| {
            // The plan the seed adapters were trained on (fuzz/seed.sh).
            let plan = include_bytes!("../seed/tiny.etm");
            let mut s = std::ptr::null_mut();
            // SAFETY: `plan` is a live buffer; `s` a valid out pointer.
            assert_eq!(unsafe { et_open_plan(plan.as_ptr(), plan.len(), &mut s) }, EtStatus::Ok);
            Session(s)
        });
        // SAFETY: the session is live for the whole run; `rest` is a live slice.
        let _ = unsafe { et_load_adapter_bytes(s.0, rest.as_ptr(), rest.len()) };
    }
});
