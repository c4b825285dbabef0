//! The one check of stream protocol names that every crate uses.

use crate::HostError;

/// The longest protocol name multistream-select carries, in bytes.
pub const MAX_PROTOCOL_LEN: usize = 140;

/// Checks that `protocol` is a name multistream-select can carry: it starts with `/`, is at most
/// [`MAX_PROTOCOL_LEN`] bytes long and holds no control character (no newline, which ends a
/// multistream-select message, and no NUL).
///
/// Every crate that takes protocol names from users calls this first; rules of its own (such as
/// `p2pnet-forward`'s `/x/` prefix) come after. The host runs it on every name given to
/// [`crate::Host::set_stream_handler`], [`crate::Host::accept_streams`] and
/// [`crate::Host::new_stream`].
///
/// ```
/// use p2pnet_host::{HostError, validate_protocol};
///
/// assert!(validate_protocol("/x/ssh").is_ok());
/// assert!(matches!(
///     validate_protocol("x/ssh"),
///     Err(HostError::InvalidProtocol { reason: "must start with '/'", .. })
/// ));
/// ```
pub fn validate_protocol(protocol: &str) -> Result<(), HostError> {
    let reason = if !protocol.starts_with('/') {
        "must start with '/'"
    } else if protocol.len() > MAX_PROTOCOL_LEN {
        "longer than 140 bytes"
    } else if protocol.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(HostError::InvalidProtocol {
        protocol: protocol.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_table() {
        let long_ok = format!("/{}", "a".repeat(MAX_PROTOCOL_LEN - 1));
        let too_long = format!("/{}", "a".repeat(MAX_PROTOCOL_LEN));
        let cases: &[(&str, Option<&str>)] = &[
            ("/", None),
            ("/x/ssh", None),
            ("/ipfs/ping/1.0.0", None),
            ("/p2pnet/msg/1.0.0", None),
            ("/with space/ünïcode", None),
            (&long_ok, None),
            ("", Some("must start with '/'")),
            ("x/ssh", Some("must start with '/'")),
            (" /x/ssh", Some("must start with '/'")),
            (&too_long, Some("longer than 140 bytes")),
            ("/x/a\nb", Some("contains a control character")),
            ("/x/a\n", Some("contains a control character")),
            ("/x/a\rb", Some("contains a control character")),
            ("/x/a\0b", Some("contains a control character")),
            ("/x/a\tb", Some("contains a control character")),
            ("/x/a\u{7f}", Some("contains a control character")),
            ("/x/a\u{85}", Some("contains a control character")),
        ];
        for (name, want) in cases {
            match (validate_protocol(name), want) {
                (Ok(()), None) => {}
                (Err(HostError::InvalidProtocol { protocol, reason }), Some(want)) => {
                    assert_eq!(&protocol, name);
                    assert_eq!(reason, *want, "{name:?}");
                }
                (got, want) => panic!("{name:?}: got {got:?}, want {want:?}"),
            }
        }
        // The limit counts bytes, not characters.
        let multibyte = format!("/{}", "é".repeat(70));
        assert_eq!(multibyte.chars().count(), 71);
        assert!(validate_protocol(&multibyte).is_err());
    }
}
