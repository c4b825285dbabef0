//! The layering rules of docs/ARCHITECTURE.md, checked: arrows point down only, and the
//! `libp2p` meta crate never becomes a product dependency.

use std::path::Path;

/// (crate folder, dependencies it must not have in `[dependencies]`)
const RULES: &[(&str, &[&str])] = &[
    (
        "yamux",
        &[
            "libp2p",
            "libp2p-core",
            "libp2p-swarm",
            "tokio",
            "futures",
            "p2pnet-host",
            "p2pnet-dispatcher",
            "p2pnet-messaging",
            "p2pnet-forward",
            "p2pnet-netservice",
        ],
    ),
    (
        "host",
        &[
            "libp2p",
            "libp2p-swarm",
            "p2pnet-dispatcher",
            "p2pnet-messaging",
            "p2pnet-forward",
            "p2pnet-netservice",
        ],
    ),
    (
        "dispatcher",
        &[
            "libp2p",
            "libp2p-core",
            "libp2p-swarm",
            "p2pnet-host",
            "p2pnet-messaging",
            "p2pnet-forward",
        ],
    ),
    (
        "messaging",
        &[
            "libp2p",
            "libp2p-swarm",
            "p2pnet-dispatcher",
            "p2pnet-forward",
            "p2pnet-netservice",
        ],
    ),
    (
        "forward",
        &[
            "libp2p",
            "libp2p-swarm",
            "p2pnet-dispatcher",
            "p2pnet-messaging",
            "p2pnet-netservice",
        ],
    ),
    (
        "kad",
        &[
            "libp2p",
            "libp2p-swarm",
            "libp2p-kad",
            "p2pnet-dispatcher",
            "p2pnet-messaging",
            "p2pnet-forward",
            "p2pnet-netservice",
        ],
    ),
    ("netservice", &["libp2p", "libp2p-swarm"]),
];

#[test]
fn crates_depend_only_downwards() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for (dir, forbidden) in RULES {
        let manifest = root.join("crates").join(dir).join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue; // that crate does not exist yet
        };
        let value: toml::Value = text.parse().expect("valid Cargo.toml");
        let deps = value.get("dependencies").and_then(|d| d.as_table());
        for name in *forbidden {
            assert!(
                deps.is_none_or(|d| !d.contains_key(*name)),
                "crates/{dir} must not depend on {name} (see docs/ARCHITECTURE.md)"
            );
        }
        checked += 1;
    }
    assert!(checked >= 1, "no crate manifest found");
}
