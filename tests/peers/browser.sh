#!/usr/bin/env bash
# Debian's Chromium (headless: printing pages to PDF) and poppler-utils
# (pdftotext: reading the PDF back), for the archive's printable export.
#
#   browser.sh install   install both (idempotent)
#   browser.sh path      print Chromium's path
#
# Nothing is downloaded by a tool of its own: the packages come from apt.
set -euo pipefail

case "${1:-}" in
    install)
        if command -v chromium >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1; then
            exit 0
        fi
        echo "installing chromium and poppler-utils…" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium poppler-utils fonts-noto-core fonts-noto-color-emoji >/dev/null
        ;;
    path) command -v chromium ;;
    *) echo "usage: $0 install | path" >&2; exit 2 ;;
esac
