#![no_main]

use std::sync::Once;

static DEFAULT_PANIC_HOOK: Once = Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // arrow-ipc panics on some schemas it cannot read; Spate catches that
    // where plan bytes meet it (`wire::schema_from_bytes`) and errs.
    // libfuzzer-sys's hook would abort at the panic, before that catch, so
    // the default hook comes back; a panic nothing catches still aborts, in
    // libfuzzer-sys's own wrapper.
    DEFAULT_PANIC_HOOK.call_once(|| drop(std::panic::take_hook()));
    spate_engine::fuzz::decode_plan(data)
});
