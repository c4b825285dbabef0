//! A yamux connection fed hostile bytes in arbitrary chunks, interleaved with application
//! operations the input chooses (`p2pnet_yamux::fuzzing::connection`): it never panics, buffers
//! no stream beyond the largest receive window, queues only what each step may produce, and keeps
//! its counts within the limits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    p2pnet_yamux::fuzzing::connection(data);
});
