#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spate_engine::fuzz::plan_sql(data));
