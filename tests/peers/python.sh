#!/usr/bin/env bash
# The Python environment of the test peers (real clients such as slixmpp,
# readers such as slack-export-viewer, which reads Slack export archives,
# schemathesis, which tests the admin API against its OpenAPI document,
# and Radicale, a CalDAV server), kept in one venv that is reused when
# present.
#
#   python.sh install   create or update the venv (idempotent)
#   python.sh path      print the venv's python
set -euo pipefail
VENV=${CAUSEWAY_PEERS_VENV:-$HOME/.cache/causeway-peers/venv}
PACKAGES=(slixmpp==1.17.0 slack-export-viewer==3.5.0 schemathesis==4.32.5 radicale==3.9.0)

case "${1:-}" in
    install)
        if [ ! -x "$VENV/bin/python" ]; then
            mkdir -p "$(dirname "$VENV")"
            python3 -m venv "$VENV"
        fi
        if ! "$VENV/bin/python" -c 'import slixmpp, slackviewer, schemathesis, radicale' 2>/dev/null; then
            "$VENV/bin/pip" install -q "${PACKAGES[@]}"
        fi
        ;;
    path) echo "$VENV/bin/python" ;;
    *) echo "usage: $0 install | path" >&2; exit 2 ;;
esac
