//! The whole harness end to end on a tiny network: the binary starts its workers, runs the kad
//! scenario, writes its JSON and plots, and exits 0; the same seed gives the same plan.

use std::process::Command;

#[test]
fn kad_on_a_tiny_network_writes_its_report() {
    let out = std::env::temp_dir().join(format!("p2pnet-sim-test-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_p2pnet-sim"))
        .args([
            "run",
            "kad",
            "--nodes",
            "12",
            "--lookups",
            "20",
            "--workers",
            "2",
        ])
        .args(["--seed", "3", "--timeout-secs", "240", "--out-dir"])
        .arg(&out)
        .status()
        .expect("running p2pnet-sim");
    assert!(status.success(), "{status}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("kad.json")).expect("kad.json"))
            .expect("valid JSON");
    assert_eq!(json["nodes"], 12);
    assert_eq!(json["killed"], 2);
    let ours = &json["implementations"][0];
    assert_eq!(ours["implementation"], "p2pnet");
    assert_eq!(ours["before_churn"]["lookups"], 20);
    assert_eq!(ours["after_churn"]["lookups"], 20);
    assert_eq!(ours["routing_table"]["dist"]["count"], 12);
    assert!(json["goals"].as_array().is_some_and(|g| g.len() == 3));
    for plot in ["hops", "latency", "requests", "table"] {
        let svg = std::fs::read_to_string(out.join(format!("kad-{plot}.svg"))).expect("plot");
        assert!(svg.starts_with("<svg"), "kad-{plot}.svg");
    }
    let _ = std::fs::remove_dir_all(&out);
}
