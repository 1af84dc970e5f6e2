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
# One PostgreSQL server for the run: the store's unit tests run on it beside
# SQLite, and then the end-to-end tests again with every daemon's store a
# database of its own there (CAUSEWAY_TEST_STORE=postgres). STORES=sqlite
# runs only the first pass.
pg=$(mktemp -d /tmp/causeway-pg.XXXXXX)
trap 'bash tests/peers/postgres.sh stop "$pg"; rm -rf "$pg"' EXIT
# A free port below those the tests take (tests/common: free_port) and
# below the kernel's ephemeral range.
pg_port=$(python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0]) - 13000
for port in random.sample(range(max(low, 1024), max(low, 1024) + 1000), 1000):
    try:
        socket.socket().bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
PY
)
bash tests/peers/postgres.sh start "$pg" "$pg_port"
CAUSEWAY_TEST_POSTGRES=$(bash tests/peers/postgres.sh url "$pg" "$pg_port")
export CAUSEWAY_TEST_POSTGRES
cargo test --workspace --locked "$@"
if [ "${STORES:-sqlite postgres}" != sqlite ]; then
    echo "== the end-to-end tests again, each daemon's store on PostgreSQL"
    if [ $# -eq 0 ]; then set -- --test '*'; fi
    CAUSEWAY_TEST_STORE=postgres cargo test --locked "$@"
fi
