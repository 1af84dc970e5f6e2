#!/usr/bin/env bash
# A real CalDAV server on 127.0.0.1 for the tests: Radicale (from PyPI, in
# the peers' venv, tests/peers/python.sh), with htpasswd logins (from 3.5
# Radicale denies every login unless told how to check them).
#
#   radicale.sh install                    install it (the peers' venv)
#   radicale.sh start DIR PORT USER PASS   serve DIR/collections; USER/PASS may log in
#   radicale.sh stop DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"
here=$(dirname "${BASH_SOURCE[0]}")

install() {
    bash "$here/python.sh" install
}

start() {
    local dir=$1 port=$2 user=$3 pass=$4 python
    python=$(bash "$here/python.sh" path)
    dir=$(realpath -m "$dir")
    mkdir -p "$dir/collections"
    printf '%s:%s\n' "$user" "$pass" > "$dir/users"
    cat > "$dir/config" <<CONF
[server]
hosts = 127.0.0.1:$port
[auth]
type = htpasswd
htpasswd_filename = $dir/users
htpasswd_encryption = plain
[rights]
type = owner_only
[storage]
filesystem_folder = $dir/collections
[web]
type = none
[logging]
level = warning
CONF
    "$python" -m radicale -C "$dir/config" >>"$dir/radicale.log" 2>&1 &
    local pid=$!
    echo "$pid $(start_time "$pid")" > "$dir/radicale.pid"
    wait_for_port radicale "$pid" "$port" "$dir/radicale.log" 400
}

stop() {
    stop_pidfile "$1/radicale.pid"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: $0 install | start DIR PORT USER PASS | stop DIR" >&2; exit 2 ;;
esac
