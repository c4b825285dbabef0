//! The message-session handshake payloads (`_hello`/`_ok` carry a `Hello`, `_bye` a `Bye`):
//! any bytes decode or are refused, never a panic; what decodes encodes back to itself.
#![no_main]

use p2pnet_messaging::{Bye, Hello};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(hello) = Hello::decode(data) {
        assert_eq!(Hello::decode(&hello.encode()), Some(hello));
    }
    if let Some(bye) = Bye::decode(data) {
        assert_eq!(Bye::decode(&bye.encode()), Some(bye));
    }
});
