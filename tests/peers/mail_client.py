#!/usr/bin/env python3
"""Real mail clients for the tests (Python's smtplib and imaplib).

    mail_client.py send PORT FROM TO[,TO…]     send the RFC 822 message read from stdin
    mail_client.py submit PORT USER FROM TO[,TO…]   the same, logged in as USER (SMTP AUTH)
    mail_client.py append PORT USER MAILBOX    put the message read from stdin into MAILBOX (IMAP APPEND)
    mail_client.py fetch PORT USER [MAILBOX]   print every message of MAILBOX (default INBOX)
                                               as JSON lines {"uid": n, "raw": "<base64>"}

Both talk to 127.0.0.1 in plaintext (the test servers), as USER with password "pw".
"""
import base64
import imaplib
import json
import smtplib
import sys


def send(port, sender, to):
    raw = sys.stdin.buffer.read()
    with smtplib.SMTP("127.0.0.1", int(port), timeout=30) as s:
        s.sendmail(sender, to.split(","), raw)


def submit(port, user, sender, to):
    raw = sys.stdin.buffer.read()
    with smtplib.SMTP("127.0.0.1", int(port), timeout=30) as s:
        s.login(user, "pw")
        s.sendmail(sender, to.split(","), raw)


def append(port, user, mailbox):
    raw = sys.stdin.buffer.read()
    m = imaplib.IMAP4("127.0.0.1", int(port), timeout=30)
    m.login(user, "pw")
    typ, data = m.append(mailbox, None, None, raw)
    if typ != "OK":
        sys.exit(f"APPEND: {typ} {data}")
    m.logout()


def fetch(port, user, mailbox="INBOX"):
    m = imaplib.IMAP4("127.0.0.1", int(port), timeout=30)
    m.login(user, "pw")
    typ, _ = m.select(mailbox, readonly=True)
    if typ != "OK":
        return
    typ, data = m.uid("SEARCH", None, "ALL")
    for uid in data[0].split():
        typ, parts = m.uid("FETCH", uid, "(BODY.PEEK[])")
        for p in parts:
            if isinstance(p, tuple):
                print(json.dumps({"uid": int(uid), "raw": base64.b64encode(p[1]).decode()}))
    m.logout()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "send":
        send(*args)
    elif cmd == "submit":
        submit(*args)
    elif cmd == "append":
        append(*args)
    elif cmd == "fetch":
        fetch(*args)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
