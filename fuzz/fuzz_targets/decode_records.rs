#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spate_engine::fuzz::decode_records(data));
