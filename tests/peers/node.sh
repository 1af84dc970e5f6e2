#!/usr/bin/env bash
# Node.js with playwright-core, which drives Debian's Chromium in the
# console's browser tests (tests/console/). playwright-core never
# downloads a browser: the tests give it /usr/bin/chromium.
#
#   node.sh install   install Node.js (apt) and playwright-core (npm), idempotent
#   node.sh modules   print the node_modules directory
set -euo pipefail
DIR=${CAUSEWAY_PEERS_NODE:-$HOME/.cache/causeway-peers/node}
PLAYWRIGHT=1.65.2

case "${1:-}" in
    install)
        if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
            echo "installing nodejs and npm…" >&2
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
        fi
        if [ "$(node -p "try { require('$DIR/node_modules/playwright-core/package.json').version } catch (e) { '' }")" != "$PLAYWRIGHT" ]; then
            mkdir -p "$DIR"
            [ -f "$DIR/package.json" ] || echo '{"name": "causeway-console-tests", "private": true}' > "$DIR/package.json"
            PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$DIR" --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT" >&2
        fi
        ;;
    modules) echo "$DIR/node_modules" ;;
    *) echo "usage: $0 install | modules" >&2; exit 2 ;;
esac
