//! The kad-dht message decoder: any bytes a peer sends either decode or are an error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = p2pnet_kad::fuzzing::decode_messages(data);
});
