#!/usr/bin/env bash
# A real Synapse homeserver on 127.0.0.1 for the tests.
#
#   synapse.sh install                      create or reuse the venv with matrix-synapse
#   synapse.sh start DIR PORT [REGISTRATION…] start one in DIR (config generated once),
#                                           client API on 127.0.0.1:PORT, with the
#                                           application service registration files given
#   synapse.sh stop DIR                     stop the one started in DIR
#   synapse.sh register DIR USER PASSWORD   create a user (shared-secret admin API)
#
# Server name matrix.test; registration closed except through the shared
# secret; rate limits raised so tests are not throttled; no federation.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"
VENV=${CAUSEWAY_SYNAPSE_VENV:-$HOME/.cache/causeway-peers/synapse}
VERSION=1.163.0
SERVER_NAME=matrix.test
SHARED_SECRET=causeway-test-shared-secret

install() {
    if [ ! -x "$VENV/bin/python" ]; then
        mkdir -p "$(dirname "$VENV")"
        python3 -m venv "$VENV"
    fi
    if ! "$VENV/bin/python" -c "import synapse, sys; sys.exit(synapse.__version__ != '$VERSION')" 2>/dev/null; then
        echo "installing matrix-synapse $VERSION…" >&2
        "$VENV/bin/pip" install -q "matrix-synapse==$VERSION"
    fi
}

start() {
    local dir=$1 port=$2
    shift 2
    local registrations=() r
    for r in "$@"; do registrations+=("$(realpath "$r")"); done
    dir=$(realpath -m "$dir")
    mkdir -p "$dir"
    if [ ! -f "$dir/homeserver.yaml" ]; then
        (cd "$dir" && "$VENV/bin/python" -m synapse.app.homeserver --generate-config \
            --server-name "$SERVER_NAME" --config-path "$dir/homeserver.yaml" \
            --data-directory "$dir" --report-stats=no >/dev/null)
    fi
    local rl="{ per_second: 100000, burst_count: 1000000 }"
    {
        echo "server_name: $SERVER_NAME"
        echo "public_baseurl: http://127.0.0.1:$port/"
        echo "listeners:"
        echo "  - { port: $port, bind_addresses: ['127.0.0.1'], type: http, tls: false, x_forwarded: false,"
        echo "      resources: [{ names: [client], compress: false }] }"
        echo "database: { name: sqlite3, args: { database: $dir/homeserver.db } }"
        echo "log_config: $dir/log.config"
        echo "media_store_path: $dir/media"
        echo "enable_registration: false"
        echo "registration_shared_secret: $SHARED_SECRET"
        echo "trusted_key_servers: []"
        echo "suppress_key_server_warning: true"
        echo "federation_domain_whitelist: []"
        echo "report_stats: false"
        echo "presence: { enabled: true }"
        # SYNAPSE_RC_MESSAGE: the message rate limit, e.g. "{ per_second: 1, burst_count: 2 }".
        echo "rc_message: ${SYNAPSE_RC_MESSAGE:-$rl}"
        echo "rc_registration: $rl"
        echo "rc_login: { address: $rl, account: $rl, failed_attempts: $rl }"
        echo "rc_joins: { local: $rl, remote: $rl }"
        echo "rc_joins_per_room: $rl"
        echo "rc_invites: { per_room: $rl, per_user: $rl, per_issuer: $rl }"
        echo "rc_admin_redaction: $rl"
        echo "rc_media_create: $rl"
        echo "rc_presence: { per_user: $rl }"
        echo "rc_room_creation: $rl"
        if [ ${#registrations[@]} -gt 0 ]; then
            echo "app_service_config_files: [$(IFS=,; echo "${registrations[*]}")]"
        fi
    } > "$dir/overrides.yaml"
    # Log to a file in DIR, warnings and up (INFO is very chatty).
    cat > "$dir/log.config" <<LOG
version: 1
formatters: { precise: { format: '%(asctime)s %(name)s %(levelname)s %(message)s' } }
handlers: { file: { class: logging.FileHandler, formatter: precise, filename: $dir/homeserver.log } }
root: { level: WARNING, handlers: [file] }
disable_existing_loggers: false
LOG
    "$VENV/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" -c "$dir/overrides.yaml" \
        >>"$dir/stdout.log" 2>&1 &
    local pid=$!
    echo "$pid $(start_time "$pid")" > "$dir/synapse.pid"
    for _ in $(seq 1 600); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "synapse exited while starting:" >&2
            tail -n 30 "$dir/stdout.log" "$dir/homeserver.log" >&2 || true
            exit 1
        fi
        if "$VENV/bin/python" - "$port" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1).read()
PY
            echo "synapse ready (pid $pid, port $port)"
            return 0
        fi
        sleep 0.1
    done
    echo "synapse did not answer /health in 60 s" >&2
    exit 1
}

stop() {
    local dir=$1
    stop_pidfile "$dir/synapse.pid" 150
}

register() {
    local dir=$1 user=$2 password=$3
    local port
    port=$(awk -F'[ ,]+' '/port:/ { for (i = 1; i <= NF; i++) if ($i == "port:") { print $(i + 1); exit } }' "$dir/overrides.yaml")
    "$VENV/bin/python" - "$port" "$user" "$password" "$SHARED_SECRET" <<'PY'
import hashlib, hmac, json, sys, urllib.request
port, user, password, secret = sys.argv[1:5]
base = f"http://127.0.0.1:{port}/_synapse/admin/v1/register"
nonce = json.load(urllib.request.urlopen(base))["nonce"]
mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
mac.update(b"\x00".join([nonce.encode(), user.encode(), password.encode(), b"notadmin"]))
body = json.dumps({"nonce": nonce, "username": user, "password": password, "admin": False, "mac": mac.hexdigest()})
req = urllib.request.Request(base, data=body.encode(), headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req))["user_id"])
PY
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    register) shift; register "$@" ;;
    *) echo "usage: $0 install | start DIR PORT [REGISTRATION] | stop DIR | register DIR USER PASSWORD" >&2; exit 2 ;;
esac
