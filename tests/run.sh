#!/usr/bin/env bash
# The whole test suite: unit and property tests of every crate, and the
# end-to-end tests that run the real `causeway` binary against real HTTP
# peers on 127.0.0.1. Benchmarks are separate (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/peers/prosody.sh install
bash tests/peers/python.sh install
bash tests/peers/synapse.sh install
bash tests/peers/mail.sh install
bash tests/peers/prometheus.sh install
bash tests/peers/ldap.sh install
# Habits before tests: formatted as rustfmt.toml says, and no clippy warning.
cargo fmt --all --check
(cd fuzz && cargo fmt --check)
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
