pub mod rust_peer;
