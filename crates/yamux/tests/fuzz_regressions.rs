//! Inputs the fuzz targets found, or hostile inputs made by hand (`fuzz/regressions/yamux_frames/`,
//! `fuzz/regressions/yamux_connection/`), replayed through the same harnesses: none may panic.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        run(&bytes);
        seen += 1;
    }
    assert!(seen > 0, "regression inputs missing in {}", dir.display());
}

#[test]
fn yamux_frames_regressions() {
    replay("yamux_frames", p2pnet_yamux::fuzzing::frames);
}

#[test]
fn yamux_connection_regressions() {
    replay("yamux_connection", p2pnet_yamux::fuzzing::connection);
}
