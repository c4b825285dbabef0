//! A control-socket request line: any bytes either parse or are a typed error, never a panic;
//! what parses serialises back to the same request.
#![no_main]

use p2pnet_cli::protocol::{Request, parse_request};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some(request)) = parse_request(data) {
        let text = serde_json::to_string(&request).expect("a parsed request serialises");
        let again: Request = serde_json::from_str(&text).expect("a serialised request parses");
        assert_eq!(again, request);
    }
});
