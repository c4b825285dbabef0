//! The yamux frame header decoder: every 12 bytes either decode, and re-encode to themselves, or
//! are a typed error naming the bad version or type byte; never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    p2pnet_yamux::fuzzing::frames(data);
});
