#!/usr/bin/env bash
# A real PostgreSQL on 127.0.0.1 for the tests: Debian's server binaries,
# a cluster of its own in DIR, trust logins on 127.0.0.1 only. It runs as
# the `postgres` system user when started by root (initdb and postgres
# refuse to run as root), and DIR is made theirs.
#
#   postgres.sh install          install the server (idempotent)
#   postgres.sh start DIR PORT   start one in DIR on PORT (a cluster made on the
#                                first start); prints nothing unless it fails
#   postgres.sh stop DIR         stop the one started in DIR (idempotent)
#   postgres.sh url DIR PORT     its URL: postgres://causeway@127.0.0.1:PORT/causeway
#
# The role `causeway` (allowed to create databases) owns the database
# `causeway`. DIR/data is the cluster, DIR/run its socket, DIR/postgres.log
# the server's log.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

bin_dir() { # the newest installed server's binaries
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] && [ -x "$d/initdb" ] || { echo "no PostgreSQL server: run $0 install" >&2; return 1; }
    echo "$d"
}

# Run as the user the server runs as: `postgres` when we are root.
as_server() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

install() {
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        return 0
    fi
    echo "installing postgresql…" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package would create and start a system-wide cluster on :5432.
    local guard=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$guard" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard" && created=1
    fi
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
    if [ "$created" = 1 ]; then rm -f "$guard"; fi
}

# A string as a single-quoted value of postgresql.conf.
conf_quote() {
    printf "'%s'" "${1//\'/\'\'}"
}

# SQL on the server through its socket, as the superuser.
superuser_sql() {
    local dir=$1 port=$2 sql=$3
    (cd / && as_server "$BIN/psql" -qXtA -v ON_ERROR_STOP=1 -h "$dir/run" -p "$port" -U postgres -d postgres -c "$sql")
}

running() { # whether the cluster in DIR runs
    [ -f "$1/data/postmaster.pid" ] && (cd / && as_server "$BIN/pg_ctl" status -D "$1/data" >/dev/null 2>&1)
}

start() {
    local dir=$1 port=$2
    BIN=$(bin_dir)
    dir=$(realpath -m "$dir")
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$dir"
        # The server must reach DIR: a parent only root may enter (mode 0700)
        # lets others through, no more (search, not read).
        local up=$dir
        while up=$(dirname "$up") && [ "$up" != / ]; do
            if ! runuser -u postgres -- test -x "$up" 2>/dev/null; then
                chmod o+x "$up"
            fi
        done
    fi
    if running "$dir"; then
        if [ "$(cat "$dir/port" 2>/dev/null)" = "$port" ]; then
            return 0
        fi
        stop "$dir"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        rm -rf "$dir/data"
        (cd / && as_server "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
            >"$dir/initdb.log" 2>&1) || {
            echo "initdb failed:" >&2
            tail -n 20 "$dir/initdb.log" >&2
            return 1
        }
        # Trust on the socket and on 127.0.0.1, nothing else.
        as_server tee "$dir/data/pg_hba.conf" >/dev/null <<HBA
local all all trust
host  all all 127.0.0.1/32 trust
HBA
        echo "include_if_exists = 'causeway.conf'" | as_server tee -a "$dir/data/postgresql.conf" >/dev/null
    fi
    as_server mkdir -p "$dir/run"
    # Written at every start: the port may change between starts.
    as_server tee "$dir/data/causeway.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = $(conf_quote "$dir/run")
max_connections = 300
CONF
    echo "$port" > "$dir/port"
    [ -e "$dir/postgres.log" ] || { touch "$dir/postgres.log"; [ "$(id -u)" != 0 ] || chown postgres:postgres "$dir/postgres.log"; }
    if ! (cd / && as_server "$BIN/pg_ctl" start -w -t 60 -s -D "$dir/data" -l "$dir/postgres.log" >/dev/null 2>&1); then
        echo "postgres did not start:" >&2
        tail -n 20 "$dir/postgres.log" >&2
        return 1
    fi
    local pid
    pid=$(head -n 1 "$dir/data/postmaster.pid")
    echo "$pid $(start_time "$pid")" > "$dir/postgres.pid"
    local ready=0
    for _ in $(seq 1 200); do
        if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then ready=1; break; fi
        sleep 0.05
    done
    if [ "$ready" != 1 ]; then
        echo "postgres does not answer on 127.0.0.1:$port:" >&2
        tail -n 20 "$dir/postgres.log" >&2
        return 1
    fi
    if [ -z "$(superuser_sql "$dir" "$port" "SELECT 1 FROM pg_roles WHERE rolname = 'causeway'")" ]; then
        superuser_sql "$dir" "$port" "CREATE ROLE causeway LOGIN CREATEDB"
    fi
    if [ -z "$(superuser_sql "$dir" "$port" "SELECT 1 FROM pg_database WHERE datname = 'causeway'")" ]; then
        superuser_sql "$dir" "$port" "CREATE DATABASE causeway OWNER causeway"
    fi
}

stop() {
    local dir
    dir=$(realpath -m "$1")
    if [ -f "$dir/data/postmaster.pid" ]; then
        BIN=$(bin_dir)
        (cd / && as_server "$BIN/pg_ctl" stop -m fast -w -t 60 -s -D "$dir/data" >/dev/null 2>&1) || true
    fi
    # Whatever pg_ctl could not stop.
    stop_pidfile "$dir/postgres.pid" 200
}

url() {
    local port=$2
    echo "postgres://causeway@127.0.0.1:$port/causeway"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    url) shift; url "$@" ;;
    *) echo "usage: $0 install | start DIR PORT | stop DIR | url DIR PORT" >&2; exit 2 ;;
esac
