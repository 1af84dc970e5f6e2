#!/usr/bin/env python3
"""A real XMPP client (slixmpp) for the tests, used as a thin socket.

    xmpp_client.py JID PASSWORD HOST PORT

It logs in (SASL SCRAM over the plaintext loopback port), then relays stanzas:
every stanza received is printed as one JSON line {"stanza": "<xml/>"}; every
line {"send": "<xml/>"} read from stdin is sent as is. {"online": "jid"} is
printed once the session starts, {"disconnected": true} when it ends.
"""
import asyncio
import json
import os
import sys

import slixmpp
from slixmpp.xmlstream import tostring
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Relay(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        # Loopback without TLS; the test server offers SCRAM only.
        super().__init__(jid, password, plugin_config={"feature_mechanisms": {"unencrypted_scram": True}})
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("disconnected", self.on_disconnected)
        # Every message and presence, raw (slixmpp's "message" event skips
        # messages without a body, such as reactions and chat states).
        for name in ("message", "presence"):
            xpath = "{jabber:client}%s" % name
            self.register_handler(Callback("relay " + name, MatchXPath(xpath), self.on_stanza))
        # Answers to requests a test sent itself (ids starting "test-"),
        # not slixmpp's own.
        self.register_handler(Callback("relay answers", MatchXPath("{jabber:client}iq"), self.on_answer))
        self.pending = b""

    async def on_start(self, _event):
        emit({"online": str(self.boundjid)})
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), self.on_input)

    def on_input(self):
        # Read what is there (readline() would keep further lines in a
        # buffer that the event loop cannot see).
        data = os.read(sys.stdin.fileno(), 1 << 16)
        if not data:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            self.disconnect()
            return
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            if line.strip():
                self.send_raw(json.loads(line)["send"])

    def on_answer(self, iq):
        if iq["type"] in ("result", "error") and iq["id"].startswith("test-"):
            self.on_stanza(iq)

    def on_stanza(self, stanza):
        # Written standalone, so the jabber:client namespace is declared.
        emit({"stanza": tostring(stanza.xml, top_level=True)})

    def on_disconnected(self, _event):
        emit({"disconnected": True})
        sys.exit(0)


def main():
    jid, password, host, port = sys.argv[1:5]
    xmpp = Relay(jid, password)
    # The test server listens on loopback without TLS.
    xmpp.enable_starttls = False
    xmpp.enable_direct_tls = False
    xmpp.enable_plaintext = True
    xmpp.connect(host=host, port=int(port))
    asyncio.get_event_loop().run_forever()


if __name__ == "__main__":
    main()
