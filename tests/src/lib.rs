//! Cross-crate scenarios for p2pnet live in `tests/tests/`; this library holds shared test helpers.
