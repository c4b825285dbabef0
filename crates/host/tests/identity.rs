//! Key files: round trip, permissions, malformed files.

use p2pnet_host::{
    HostError, generate_keypair, load_keypair, load_or_generate_keypair, save_keypair,
};

#[test]
fn save_and_load_round_trip_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/identity.key");
    let key = generate_keypair();
    save_keypair(&key, &path).unwrap();
    let loaded = load_keypair(&path).unwrap();
    assert_eq!(loaded.public().to_peer_id(), key.public().to_peer_id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn load_or_generate_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.key");
    let a = load_or_generate_keypair(&path).unwrap();
    let b = load_or_generate_keypair(&path).unwrap();
    assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
}

#[test]
fn malformed_key_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.key");
    std::fs::write(&path, b"not a key").unwrap();
    match load_keypair(&path) {
        Err(HostError::KeyFileMalformed { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected KeyFileMalformed, got {other:?}"),
    }
    let err = load_keypair(&path).unwrap_err().to_string();
    assert!(err.contains("bad.key"), "{err}");
    // Too large to be a key: refused without reading it all.
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    assert!(matches!(
        load_keypair(&path),
        Err(HostError::KeyFileMalformed { .. })
    ));
    // Missing file: an I/O error naming the file.
    let missing = dir.path().join("missing.key");
    assert!(
        matches!(load_keypair(&missing), Err(HostError::KeyFileIo { path, .. }) if path == missing)
    );
}

/// Inputs the fuzzer once found (`fuzz/regressions/identify/`) must keep decoding or erroring.
#[test]
fn identify_fuzz_regressions_do_not_panic() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/identify");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        let _ = p2pnet_host::fuzzing::decode_identify(&bytes);
        seen += 1;
    }
    // The seed inputs are committed with the directory.
    assert!(seen >= 2, "regression inputs missing");
}
