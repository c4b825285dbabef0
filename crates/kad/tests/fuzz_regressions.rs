//! Inputs the fuzz target found, or hostile inputs made by hand (`fuzz/regressions/kad_message/`),
//! replayed through the same harness: none may panic.

use std::path::Path;

#[test]
fn kad_message_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/kad_message");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        p2pnet_kad::fuzzing::decode_messages(&bytes);
        seen += 1;
    }
    assert!(seen > 0, "regression inputs missing in {}", dir.display());
}
