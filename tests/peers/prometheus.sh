#!/usr/bin/env bash
# A real Prometheus on 127.0.0.1 for the tests.
#
#   prometheus.sh install                        install Debian's prometheus (and promtool)
#   prometheus.sh start DIR PORT TARGET RULES    scrape TARGET (host:port) every second,
#                                                with the rule file RULES
#   prometheus.sh stop DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

install() {
    if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    echo "installing prometheus…" >&2
    # Keep the package from starting a system-wide Prometheus on :9090.
    local guard=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$guard" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard" && created=1
    fi
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if [ "$created" = 1 ]; then rm -f "$guard"; fi
}

start() {
    local dir=$1 port=$2 target=$3 rules=$4
    dir=$(realpath -m "$dir")
    mkdir -p "$dir/data"
    cp "$rules" "$dir/rules.yml"
    cat > "$dir/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $dir/rules.yml
scrape_configs:
  - job_name: causeway
    static_configs:
      - targets: ["$target"]
CONF
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" >>"$dir/prometheus.log" 2>&1 &
    local pid=$!
    echo "$pid $(start_time "$pid")" > "$dir/prometheus.pid"
    wait_for_port prometheus "$pid" "$port" "$dir/prometheus.log"
}

stop() {
    local dir=$1
    stop_pidfile "$dir/prometheus.pid"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: $0 install | start DIR PORT TARGET RULES | stop DIR" >&2; exit 2 ;;
esac
