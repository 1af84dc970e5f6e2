#!/usr/bin/env bash
# A real Postfix (SMTP) and Dovecot (IMAP, LMTP, SASL) on 127.0.0.1 for the tests.
#
#   mail.sh install                          install Postfix and Dovecot (idempotent)
#   mail.sh start DIR SMTP IMAP LMTP AUTH [SUBMIT]   start both in DIR on those ports
#   mail.sh stop DIR                         stop what was started in DIR
#   mail.sh stop-dovecot DIR | start-dovecot DIR   only Dovecot (IMAP outages)
#
# Domain mail.test; users bridge, alice, bob, carol (password "pw"), each
# with a Maildir under DIR/mail. Plus addressing: bridge+ops@mail.test lands
# in bridge's INBOX. Postfix takes mail from 127.0.0.1 for mail.test and
# delivers it by LMTP to Dovecot; unknown recipients are refused; deferred
# mail is retried within seconds. Nothing leaves the machine. Dovecot also
# offers SASL on the AUTH port.
#
# Authentication-Results, as a receiving server writes them (RFC 8601):
# mail submitted on the SUBMIT port after SMTP AUTH (Dovecot's SASL) gets
# "Authentication-Results: smtp.mail.test; auth=pass smtp.auth=USER@mail.test";
# on the SMTP port any header claiming to be smtp.mail.test's is removed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"
DOMAIN=mail.test
USERS=(bridge alice bob carol)

install() {
    if command -v postfix >/dev/null 2>&1 && command -v dovecot >/dev/null 2>&1 && [ -x /usr/lib/dovecot/lmtp ]; then
        return 0
    fi
    echo "installing postfix and dovecot…" >&2
    # Keep the packages from starting system-wide daemons on the default ports.
    local guard=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$guard" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard" && created=1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix dovecot-imapd dovecot-lmtpd >/dev/null
    if [ "$created" = 1 ]; then rm -f "$guard"; fi
}

wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

start_dovecot() {
    local dir=$1
    dovecot -c "$dir/dovecot.conf" -F >>"$dir/dovecot.out" 2>&1 &
    local pid=$!
    echo "$pid $(start_time "$pid")" > "$dir/dovecot.pid"
    # shellcheck disable=SC1091
    . "$dir/ports"
    wait_port "$IMAP" && wait_port "$LMTP" && wait_port "$AUTH" || { tail -n 20 "$dir/dovecot.log" "$dir/dovecot.out" >&2; exit 1; }
}

start() {
    local dir=$1 smtp=$2 imap=$3 lmtp=$4 auth=$5 submit=${6:-}
    dir=$(realpath -m "$dir")
    mkdir -p "$dir/mail" "$dir/dovecot/run" "$dir/dovecot/state" "$dir/postfix/spool" "$dir/postfix/data"
    # Dovecot works as uid 8 (mail) below DIR.
    chmod 711 "$dir"
    chown 8:8 "$dir/mail"
    printf 'SMTP=%s\nIMAP=%s\nLMTP=%s\nAUTH=%s\n' "$smtp" "$imap" "$lmtp" "$auth" > "$dir/ports"
    : > "$dir/users"
    for u in "${USERS[@]}"; do
        echo "$u:{PLAIN}pw" >> "$dir/users"
    done
    cat > "$dir/dovecot.conf" <<CONF
base_dir = $dir/dovecot/run
state_dir = $dir/dovecot/state
log_path = $dir/dovecot.log
instance_name = causeway-test-$imap
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_default_realm = $DOMAIN
auth_username_format = %n
recipient_delimiter = +
lmtp_save_to_detail_mailbox = no
first_valid_uid = 8
mail_location = maildir:$dir/mail/%n
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n $dir/users
}
userdb {
  driver = static
  args = uid=8 gid=8 home=$dir/mail/%n
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Quarantine {
    auto = create
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp
  }
}
service auth {
  inet_listener {
    address = 127.0.0.1
    port = $auth
  }
}
CONF
    local pf=$dir/postfix
    : > "$pf/vmailbox"
    for u in "${USERS[@]}"; do
        echo "$u@$DOMAIN OK" >> "$pf/vmailbox"
    done
    cat > "$pf/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $pf/spool
data_directory = $pf/data
mail_owner = postfix
setgid_group = postdrop
myhostname = smtp.$DOMAIN
mydomain = $DOMAIN
myorigin = $DOMAIN
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
recipient_delimiter = +
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_maps = texthash:$pf/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:$lmtp
# No SMTP AUTH: clients on loopback are trusted (mynetworks), and smtpd
# keeps taking mail while Dovecot (which would check logins) is away.
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_tls_security_level = none
smtp_tls_security_level = none
# Retry deferred mail (Dovecot away) within seconds, not minutes. A queue
# file the deferred-queue scan finds still locked by its last delivery
# attempt ("skipped, still being delivered") goes back to the incoming
# queue for 60s, and the incoming queue is only looked at again when new
# mail arrives or qmgr is woken: so qmgr is woken every second (master.cf)
# rather than every 300s, or such a mail waits minutes after the others.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
maillog_file = $dir/postfix.log
maillog_file_prefixes = /var, /dev/stdout, $dir
CONF
    # Who logged in, as the receiving server says it (the SASL name, with
    # the domain when the client left it out).
    cat > "$pf/sasl_results" <<CONF
/^([^@]+)\$/ PREPEND Authentication-Results: smtp.$DOMAIN; auth=pass smtp.auth=\$1@$DOMAIN
/^(.+@.+)\$/ PREPEND Authentication-Results: smtp.$DOMAIN; auth=pass smtp.auth=\$1
CONF
    # Nobody else speaks for this server.
    printf '/^Authentication-Results:[[:space:]]*smtp\\.%s([[:space:];]|$)/ IGNORE\n' "${DOMAIN//./\\.}" > "$pf/strip_results"
    cat > "$pf/master.cf" <<CONF
127.0.0.1:$smtp inet n - n - - smtpd
  -o cleanup_service_name=cleanup_in
cleanup_in unix n - n - 0 cleanup
  -o header_checks=regexp:$pf/strip_results
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 1 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
showq     unix  n - n - - showq
postlog   unix-dgram n - n - 1 postlogd
CONF
    if [ -n "$submit" ]; then
        cat >> "$pf/master.cf" <<CONF
127.0.0.1:$submit inet n - n - - smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:127.0.0.1:$auth
  -o smtpd_client_restrictions=
  -o smtpd_recipient_restrictions=check_sasl_access,regexp:$pf/sasl_results,permit_sasl_authenticated,reject
CONF
        echo "SUBMIT=$submit" >> "$dir/ports"
    fi
    # Postfix commands stall while their config files are seconds old.
    touch -d '1 hour ago' "$pf/main.cf" "$pf/master.cf" "$pf/vmailbox" "$pf/sasl_results" "$pf/strip_results"
    start_dovecot "$dir"
    # The queue and data directories, owned as Postfix wants them.
    chown root:root "$pf/spool" && chmod 755 "$pf/spool"
    chown postfix:postfix "$pf/data" && chmod 700 "$pf/data"
    postfix -c "$pf" set-permissions create-missing >>"$dir/postfix.out" 2>&1 || { cat "$dir/postfix.out" >&2; exit 1; }
    postfix -c "$pf" check >>"$dir/postfix.out" 2>&1 || { cat "$dir/postfix.out" >&2; exit 1; }
    postfix -c "$pf" start >>"$dir/postfix.out" 2>&1 || { cat "$dir/postfix.out" "$dir/postfix.log" >&2 2>/dev/null; exit 1; }
    local pid=""
    for _ in $(seq 1 100); do
        pid=$(tr -d ' ' < "$pf/spool/pid/master.pid" 2>/dev/null || true)
        [ -n "$pid" ] && break
        sleep 0.05
    done
    echo "$pid $(start_time "$pid")" > "$dir/postfix.pid"
    wait_port "$smtp" || { tail -n 20 "$dir/postfix.log" >&2; exit 1; }
    echo "mail ready (smtp $smtp, imap $imap)"
}

stop() {
    local dir=$1
    stop_pidfile "$dir/postfix.pid"
    stop_pidfile "$dir/dovecot.pid"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    stop-dovecot) stop_pidfile "$2/dovecot.pid" ;;
    start-dovecot) start_dovecot "$(realpath -m "$2")" ;;
    *) echo "usage: $0 install | start DIR SMTP IMAP LMTP AUTH [SUBMIT] | stop DIR | stop-dovecot DIR | start-dovecot DIR" >&2; exit 2 ;;
esac
