#!/usr/bin/env bash
# A real Prosody on 127.0.0.1 for the tests.
#
#   prosody.sh install                      install Prosody (idempotent)
#   prosody.sh start DIR C2S_PORT COMP_PORT [HTTP_PORT]
#                                           start one in DIR; prints when ready
#   prosody.sh stop DIR                     stop the one started in DIR
#   prosody.sh register DIR USER PASSWORD   add a user on xmpp.test
#
# Domain xmpp.test; MUC service conference.xmpp.test (with MAM and
# moderation, rooms usable at once); external components bridge.xmpp.test and bridge2.xmpp.test (secret "component-secret");
# with HTTP_PORT, HTTP File Upload (XEP-0363) at upload.xmpp.test, files
# served from http://127.0.0.1:HTTP_PORT/file_share/.
# Users alice/bob/carol (carol is a server admin) and causeway (for the
# bridge's client mode), password "pw", exist from the start. STARTTLS with
# a certificate from a test CA: DIR/certs/ca.pem.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

DOMAIN=xmpp.test
SECRET=component-secret

install() {
    if command -v prosody >/dev/null 2>&1 && [ -e /usr/lib/prosody/modules/mod_muc_moderation/mod_muc_moderation.lua ]; then
        return 0
    fi
    echo "installing prosody…" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package would start a system-wide Prosody; we start our own.
    local guard=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$guard" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard" && created=1
    fi
    apt-get update -qq >/dev/null
    # prosody-modules brings mod_muc_moderation (XEP-0425).
    apt-get install -y -qq --no-install-recommends prosody lua-unbound prosody-modules >/dev/null
    if [ "$created" = 1 ]; then rm -f "$guard"; fi
}

# A test CA and a certificate for the domain signed by it, so clients can
# use STARTTLS and check the server (trust $dir/certs/ca.pem).
certificates() {
    local certs=$1
    [ -f "$certs/$DOMAIN.crt" ] && return 0
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=Causeway test CA" -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$DOMAIN" \
        -keyout "$certs/$DOMAIN.key" -out "$certs/$DOMAIN.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\n' "$DOMAIN" > "$certs/ext.cnf"
    openssl x509 -req -in "$certs/$DOMAIN.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" -CAcreateserial \
        -days 3650 -extfile "$certs/ext.cnf" -out "$certs/$DOMAIN.crt" 2>/dev/null
}

start() {
    local dir=$1 c2s=$2 comp=$3 http=${4:-}
    dir=$(realpath -m "$dir")
    mkdir -p "$dir/data" "$dir/certs"
    certificates "$dir/certs"
    cat > "$dir/prosody.cfg.lua" <<CFG
run_as_root = true
-- carol is a server admin: an owner, so a moderator, in every room.
admins = { "carol@$DOMAIN" }
pidfile = "$dir/prosody.pid.internal"
data_path = "$dir/data"
certificates = "$dir/certs"
log = { { levels = { min = "info" }, to = "file", filename = "$dir/prosody.log" } }
interfaces = { "127.0.0.1" }
c2s_ports = { $c2s }
component_ports = { $comp }
component_interfaces = { "127.0.0.1" }
-- STARTTLS is offered (for the bridge's client mode), not required (the
-- test clients stay in plaintext on loopback). Logins are SCRAM only.
c2s_require_encryption = false
disable_sasl_mechanisms = { "PLAIN" }
authentication = "internal_hashed"
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "presence", "message", "offline" }
modules_disabled = { "s2s" }
http_ports = { ${http:-} }
http_interfaces = { "127.0.0.1" }
https_ports = { }
http_external_url = "http://127.0.0.1:${http:-0}/"
http_default_host = "upload.$DOMAIN"
VirtualHost "$DOMAIN"
Component "conference.$DOMAIN" "muc"
    modules_enabled = { "muc_mam", "muc_moderation" }
    muc_room_locking = false
    muc_log_all_rooms = true
    muc_room_default_public = true
    muc_room_default_change_subject = true
    muc_room_default_persistent = true
    muc_room_default_history_length = 1000
    max_history_messages = 1000
Component "bridge.$DOMAIN"
    component_secret = "$SECRET"
-- A second external component, for a second bridge in the same rooms.
Component "bridge2.$DOMAIN"
    component_secret = "$SECRET"
CFG
    if [ -n "$http" ]; then
        cat >> "$dir/prosody.cfg.lua" <<CFG
Component "upload.$DOMAIN" "http_file_share"
    http_file_share_size_limit = 1048576
CFG
    fi
    for u in alice bob carol causeway erin; do
        prosodyctl --config "$dir/prosody.cfg.lua" register "$u" "$DOMAIN" pw >/dev/null 2>&1
    done
    prosody --config "$dir/prosody.cfg.lua" -F >>"$dir/stdout.log" 2>&1 &
    local pid=$!
    echo "$pid $(start_time "$pid")" > "$dir/prosody.pid"
    for _ in $(seq 1 200); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "prosody exited while starting:" >&2
            tail -n 20 "$dir/prosody.log" "$dir/stdout.log" >&2 || true
            exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$c2s") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$comp") 2>/dev/null; then
            echo "prosody ready (pid $pid, c2s $c2s, component $comp)"
            return 0
        fi
        sleep 0.05
    done
    echo "prosody did not open its ports in 10 s" >&2
    exit 1
}

stop() {
    local dir=$1
    stop_pidfile "$dir/prosody.pid"
}

register() {
    prosodyctl --config "$1/prosody.cfg.lua" register "$2" "$DOMAIN" "$3" >/dev/null
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    register) shift; register "$@" ;;
    *) echo "usage: $0 install | start DIR C2S_PORT COMP_PORT | stop DIR | register DIR USER PASSWORD" >&2; exit 2 ;;
esac
