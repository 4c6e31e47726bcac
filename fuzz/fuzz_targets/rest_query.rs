#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livechain::fuzzing::rest_query(data));
