//! The control-protocol parser with hostile lines: each is a typed error (or a request), never a
//! panic; inputs the fuzzer or a review found are kept in `fuzz/regressions/control_request/`.

use p2pnet_cli::protocol::{MAX_LINE, ProtocolError, Request, parse_request};

#[test]
fn hostile_lines_are_typed_errors() {
    let deep = format!("{{\"cmd\":\"send\",\"peer\":{}}}", "[".repeat(60_000));
    assert!(matches!(
        parse_request(deep.as_bytes()),
        Err(ProtocolError::Malformed(_))
    ));
    let long = vec![b' '; MAX_LINE + 1];
    assert!(matches!(
        parse_request(&long),
        Err(ProtocolError::TooLong { max: MAX_LINE })
    ));
    assert!(matches!(
        parse_request(b"{\"cmd\":\"ping\",\"peer\":\"\xff\"}"),
        Err(ProtocolError::Malformed(_))
    ));
    assert!(matches!(
        parse_request(b"{\"cmd\":\"ping\"}"),
        Err(ProtocolError::Malformed(_))
    ));
    assert!(matches!(
        parse_request(b"[1,2,3]"),
        Err(ProtocolError::Malformed(_))
    ));
    let e = parse_request(b"{\"cmd\":\"format-disk\"}").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("malformed request: unknown variant `format-disk`"),
        "{e}"
    );
    // Blank lines are skipped; a well-formed request parses with its defaults.
    assert!(parse_request(b" \t\r\n").unwrap().is_none());
    assert_eq!(
        parse_request(b"{\"cmd\":\"close\",\"protocol\":\"/x/a\"}\n").unwrap(),
        Some(Request::Close {
            all: false,
            protocol: Some("/x/a".into()),
            listen_addr: None,
            target_addr: None
        })
    );
}

#[test]
fn kept_fuzz_inputs_are_errors_or_requests_that_round_trip() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions/control_request");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let input = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok(Some(request)) = parse_request(&input) {
            let text = serde_json::to_string(&request).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        }
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} inputs in {}", dir.display());
}
