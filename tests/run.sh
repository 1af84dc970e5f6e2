#!/usr/bin/env bash
# The whole test suite: unit and property tests of every crate, and the
# end-to-end tests that run the real `causeway` binary against real HTTP
# peers on 127.0.0.1. Benchmarks are separate (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# Every peer (a real server or client), installed or found installed:
# each tests/peers/*.sh takes `install`; process.sh is sourced by them.
for peer in tests/peers/*.sh; do
    [ "$(basename "$peer")" = process.sh ] || bash "$peer" install
done
# Habits before tests: formatted as rustfmt.toml says, and no clippy warning.
cargo fmt --all --check
(cd fuzz && cargo fmt --check)
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
