#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livechain::fuzzing::provider_frame(data));
