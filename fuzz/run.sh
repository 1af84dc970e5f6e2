#!/usr/bin/env bash
# Fuzz every parser of what arrives from outside (docs/fuzzing.md).
#
#   bash fuzz/run.sh [MINUTES] [TARGET ...]   each target for MINUTES (default 5)
#
# Targets: xmpp_stanza xmpp_styling matrix_transaction email_mime
# webhook_payload config html archive_query admin_request broadcast_command calendar. The corpus grows in fuzz/corpus/TARGET
# (seeded from fuzz/seeds/TARGET); a crashing input lands in
# fuzz/artifacts/TARGET and belongs, once fixed, in fuzz/regressions/TARGET
# (the test suite replays those: tests/fuzz_seeds.rs). FUZZ_SANITIZER=address
# builds with AddressSanitizer (default none: the code is safe Rust, and
# panics, stack overflows, leaks of time and memory are what is looked for).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
minutes=${1:-5}
[ $# -gt 0 ] && shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(xmpp_stanza xmpp_styling matrix_transaction email_mime webhook_payload config html archive_query admin_request broadcast_command calendar)
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# cargo-fuzz passes flags the stable compiler takes only with this.
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-none}
cargo fuzz build -s "$sanitizer" >&2
mkdir -p fuzz/logs
failed=0
printf '%-20s %8s %12s %10s %8s %s\n' target minutes execs execs/s cov crashes
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    set +e
    cargo fuzz run -s "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time=$((minutes * 60)) -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        > "fuzz/logs/$t.log" 2>&1
    set -e
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz/logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "fuzz/logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "fuzz/logs/$t.log" | tail -1 | grep -o '[0-9]*')
    printf '%-20s %8s %12s %10s %8s %s\n' "$t" "$minutes" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$((after - before))"
    if [ "$after" -gt "$before" ]; then
        failed=1
        echo "  $t: new crashing input in fuzz/artifacts/$t (log: fuzz/logs/$t.log)" >&2
    fi
done
exit $failed
