//! Configuration text: any input (including every multiaddr and peer field) either loads or is
//! a typed error; it never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = p2pnet_netservice::NetConfig::from_toml_str(text);
    }
});
