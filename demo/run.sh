#!/usr/bin/env bash
# The Causeway demo: real Prosody (XMPP), Synapse (Matrix) and Postfix +
# Dovecot (mail) on 127.0.0.1, and Causeway joining a group chat, a Matrix
# room, a mailing list and a webhook into one conversation. Ctrl-C stops
# everything it started.
#
# Settings (environment): DEMO_DIR (where everything lives; default
# var/demo), CAUSEWAY_BIN (default: build and run with cargo), DEMO_HOOK_URL
# (where webhook deliveries go; default http://127.0.0.1:9999/hook), and the
# ports DEMO_HTTP (8080), DEMO_XMPP (15222), DEMO_COMPONENT (15347),
# DEMO_MATRIX (18008), DEMO_SMTP (12025), DEMO_IMAP (12143), DEMO_LMTP
# (12024), DEMO_AUTH (12026).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PEERS=$ROOT/tests/peers
DIR=$(realpath -m "${DEMO_DIR:-var/demo}")
HTTP=${DEMO_HTTP:-8080}
XMPP=${DEMO_XMPP:-15222}
COMPONENT=${DEMO_COMPONENT:-15347}
MATRIX=${DEMO_MATRIX:-18008}
SMTP=${DEMO_SMTP:-12025}
IMAP=${DEMO_IMAP:-12143}
LMTP=${DEMO_LMTP:-12024}
AUTH=${DEMO_AUTH:-12026}
HOOK_URL=${DEMO_HOOK_URL:-http://127.0.0.1:9999/hook}

say() { printf '\033[1m%s\033[0m\n' "$*"; }

mkdir -p "$DIR"
say "Installing what the demo needs (once)…"
bash "$PEERS/prosody.sh" install
bash "$PEERS/python.sh" install
bash "$PEERS/synapse.sh" install
bash "$PEERS/mail.sh" install

if [ -z "${CAUSEWAY_BIN:-}" ]; then
    say "Building Causeway…"
    cargo build --quiet
    CAUSEWAY_BIN=$ROOT/target/debug/causeway
fi

CAUSEWAY_PID=""
stop_all() {
    trap - INT TERM EXIT
    say "Stopping…"
    if [ -n "$CAUSEWAY_PID" ]; then
        kill -TERM "$CAUSEWAY_PID" 2>/dev/null || true
        wait "$CAUSEWAY_PID" 2>/dev/null || true
    fi
    bash "$PEERS/synapse.sh" stop "$DIR/synapse" || true
    bash "$PEERS/mail.sh" stop "$DIR/mail" || true
    bash "$PEERS/prosody.sh" stop "$DIR/prosody" || true
    say "Stopped."
}
trap stop_all INT TERM EXIT

say "Starting Prosody and the mail servers…"
bash "$PEERS/prosody.sh" start "$DIR/prosody" "$XMPP" "$COMPONENT" >/dev/null
mkdir -p "$DIR/mail"
bash "$PEERS/mail.sh" start "$DIR/mail" "$SMTP" "$IMAP" "$LMTP" "$AUTH" >/dev/null

cat > "$DIR/causeway.yaml" <<CONF
# Written by demo/run.sh.
http: { listen: "127.0.0.1:$HTTP" }
store: { path: "$DIR/causeway.db" }
outbox: { retry_initial: 200ms, retry_max: 5s }
bridges:
  hooks:
    type: webhook
    endpoints:
      web:
        inbound: { token: demo-token }
        outbound: { url: "$HOOK_URL" }
        events: { token: demo-token }
  xmpp:
    type: xmpp
    server: "127.0.0.1:$COMPONENT"
    domain: bridge.xmpp.test
    secret: component-secret
  matrix:
    type: matrix
    homeserver: "http://127.0.0.1:$MATRIX"
    server_name: matrix.test
    url: "http://127.0.0.1:$HTTP/bridges/matrix"
    as_token: demo-as-token
    hs_token: demo-hs-token
  mail:
    type: email
    url: "http://127.0.0.1:$HTTP/bridges/mail"
    attachments_dir: "$DIR/attachments"
    imap: { server: "127.0.0.1:$IMAP", tls: none, username: bridge, password: pw, poll_interval: 10s }
    smtp: { server: "127.0.0.1:$SMTP", tls: none }
    lists:
      bridge+ops@mail.test: { name: Ops, subscribers: [carol] }
portals:
  - id: ops
    name: Operations
    links:
      - { bridge: xmpp, room: ops@conference.xmpp.test }
      - { bridge: matrix, room: "#causeway_ops:matrix.test" }
      - { bridge: mail, room: bridge+ops@mail.test }
      - { bridge: hooks, room: web }
people:
  - id: alice
    name: Alice Liddell
    accounts: { xmpp: alice@xmpp.test }
  - id: bob
    name: Bob Builder
    accounts: { matrix: "@bob:matrix.test" }
  - id: carol
    name: Carol Danvers
    accounts: { mail: carol@mail.test }
CONF
"$CAUSEWAY_BIN" matrix registration --config "$DIR/causeway.yaml" --output "$DIR/registration.yaml" 2>/dev/null

say "Starting Synapse…"
bash "$PEERS/synapse.sh" start "$DIR/synapse" "$MATRIX" "$DIR/registration.yaml" >/dev/null
for u in alice bob; do
    bash "$PEERS/synapse.sh" register "$DIR/synapse" "$u" pw >/dev/null 2>&1 || true
done

say "Starting Causeway…"
"$CAUSEWAY_BIN" run --config "$DIR/causeway.yaml" >>"$DIR/causeway.log" 2>&1 &
CAUSEWAY_PID=$!
for _ in $(seq 1 300); do
    if grep -q "every Matrix room is set up" "$DIR/causeway.log" 2>/dev/null; then break; fi
    if ! kill -0 "$CAUSEWAY_PID" 2>/dev/null; then
        tail -30 "$DIR/causeway.log" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<TEXT

  Causeway is running: one conversation on four networks. Password everywhere: pw

  XMPP    any client, as alice@xmpp.test (or bob@, carol@), server 127.0.0.1 port $XMPP
          (STARTTLS with the demo's own CA, $DIR/prosody/certs/ca.pem, or allow
          an unencrypted connection on this loopback server), then join
          ops@conference.xmpp.test
  Matrix  any client, homeserver http://127.0.0.1:$MATRIX, as alice or bob,
          then join #causeway_ops:matrix.test
  Mail    any client as carol (IMAP 127.0.0.1:$IMAP, SMTP 127.0.0.1:$SMTP, no TLS);
          write to bridge+ops@mail.test; carol gets the list's mail
  Webhook curl -H 'Authorization: Bearer demo-token' -H 'Content-Type: application/json' \\
               -d '{"sender": {"id": "ops-bot"}, "text": "hello from curl"}' \\
               http://127.0.0.1:$HTTP/bridges/hooks/web
          curl -N -H 'Authorization: Bearer demo-token' http://127.0.0.1:$HTTP/bridges/hooks/web/events
          deliveries go to $HOOK_URL

  Metrics http://127.0.0.1:$HTTP/metrics    Log $DIR/causeway.log

  Ctrl-C stops everything.
TEXT
echo "demo ready"
wait "$CAUSEWAY_PID"
