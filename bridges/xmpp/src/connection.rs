//! The connection to the XMPP server: as a component (XEP-0114, plaintext
//! on loopback), or as a client (STARTTLS, SASL SCRAM, resource binding).
//!
//! Both read and write raw XML elements and turn them into stanzas here, so
//! that a stanza xmpp-parsers cannot read is logged and dropped instead of
//! ending the connection, and so that one set of stanza types serves both
//! stream namespaces (`jabber:component:accept` and `jabber:client`).

use std::borrow::Cow;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeSet;
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::{Element, Node};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::xmlstream::{ReadError, StreamHeader, Timeouts, XmlStream};

use sasl::common::ChannelBinding;
use tokio_xmpp::parsers::sasl_cb::Type as CbType;
use tokio_xmpp::{Stanza, client_login};

use crate::config::{Connect, XmppOptions};
use crate::ns::{NS_BIND, NS_CLIENT, NS_COMPONENT, NS_STREAMS};
use causeway_core::Secret;
use std::net::SocketAddr;

/// How long connecting, logging in and binding may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

type ComponentIo = tokio::io::BufStream<crate::depth::Guarded<tokio::net::TcpStream>>;
type ClientIo = tokio::io::BufStream<crate::depth::Guarded<tokio_xmpp::connect::tls_common::TlsStream<tokio::net::TcpStream>>>;

#[expect(clippy::large_enum_variant, reason = "one per connection; boxing would only move it")]
enum Stream {
    Component(XmlStream<ComponentIo, Element>),
    Client(XmlStream<ClientIo, Element>),
}

/// What the connection brings next.
#[expect(clippy::large_enum_variant, reason = "mostly a stanza; boxing would allocate once more per stanza")]
pub(crate) enum Next {
    Stanza(Stanza),
    /// Nothing heard for `keepalive`: make the server say something within
    /// half that time, or the connection counts as dead.
    Quiet,
    /// A stanza nested too deep to take, dropped.
    TooDeep,
}

fn timeouts(options: &XmppOptions) -> Timeouts {
    Timeouts { read_timeout: options.keepalive, response_timeout: options.keepalive / 2 }
}

/// One established connection. Stanzas are in the component namespace on
/// this side whatever the stream's.
pub(crate) struct Connection {
    stream: Stream,
    /// The client's bound JID (client mode).
    pub bound: Option<FullJid>,
    /// Elements the guard cut out for being too deep, and how many of them
    /// were reported.
    cut: std::sync::Arc<std::sync::atomic::AtomicU64>,
    cut_seen: u64,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// Wrong secret or password, or the server refused us: retrying soon will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// The network or the server is not there (yet).
    #[error("{0}")]
    Unreachable(String),
}

fn unreachable(e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Unreachable(e.to_string())
}

impl Connection {
    pub(crate) async fn open(options: &XmppOptions, connect: &Connect) -> Result<Connection, ConnectError> {
        let attempt = async {
            match connect {
                Connect::Component { domain, secret, server } => open_component(options, domain, secret, *server).await,
                Connect::Client { jid, password, server, .. } => open_client(options, jid, password, server.as_deref()).await,
            }
        };
        tokio::time::timeout(LOGIN_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(ConnectError::Unreachable(format!("no login within {LOGIN_TIMEOUT:?}"))))
    }

    /// The next stanza (or a quiet spell); `None` once the connection is
    /// gone. Stanzas that do not parse are logged and skipped.
    pub(crate) async fn next(&mut self) -> Option<Next> {
        loop {
            let (element, client) = match &mut self.stream {
                Stream::Component(s) => (next_element(s).await?, false),
                Stream::Client(s) => (next_element(s).await?, true),
            };
            let Some(element) = element else { return Some(Next::Quiet) };
            // The guard cut something out of this one (it was nested too deep
            // to parse), or it is too deep all the same (client mode, no
            // guard): parsing it into a stanza, or even dropping it the usual
            // way, would recurse once per level.
            let cut = self.cut.load(std::sync::atomic::Ordering::Relaxed);
            if cut > self.cut_seen || too_deep(&element, MAX_DEPTH) {
                self.cut_seen = cut;
                tracing::warn!(
                    name = element.name(),
                    from = element.attr("from").unwrap_or(""),
                    "dropping a stanza nested deeper than {MAX_DEPTH} levels"
                );
                drop_flat(element);
                return Some(Next::TooDeep);
            }
            if element.ns() == NS_STREAMS {
                let text: Vec<String> = element.children().map(|c| c.name().to_string()).collect();
                tracing::warn!(error = ?text, "the server ended the stream");
                return None;
            }
            let element = if client { renamespace(element, NS_CLIENT, NS_COMPONENT) } else { element };
            match stanza(element) {
                Ok(Some(s)) => return Some(Next::Stanza(s)),
                Ok(None) => {}
                Err(e) => tracing::warn!("dropping a stanza that does not parse: {e}"),
            }
        }
    }

    /// End the stream (its footer) and the sending side, within a second.
    pub(crate) async fn close(&mut self) {
        let shutdown = async {
            match &mut self.stream {
                Stream::Component(s) => s.shutdown().await,
                Stream::Client(s) => s.shutdown().await,
            }
        };
        if let Ok(Err(e)) = tokio::time::timeout(std::time::Duration::from_secs(1), shutdown).await {
            tracing::debug!("the stream did not end cleanly: {e}");
        }
    }

    pub(crate) async fn send(&mut self, stanza: Stanza) -> std::io::Result<()> {
        let element = match stanza {
            Stanza::Message(m) => Element::from(m),
            Stanza::Presence(p) => Element::from(p),
            Stanza::Iq(iq) => Element::from(iq),
        };
        match &mut self.stream {
            Stream::Component(s) => s.send(&element).await,
            Stream::Client(s) => s.send(&renamespace(element, NS_COMPONENT, NS_CLIENT)).await,
        }
    }
}

/// Deeper than any stanza needs (a message with rich text and a few
/// extensions nests about ten levels).
pub(crate) const MAX_DEPTH: usize = 128;

/// Whether `e` nests deeper than `max` levels, found without recursion.
pub(crate) fn too_deep(e: &Element, max: usize) -> bool {
    let mut stack = vec![(e, 1usize)];
    while let Some((e, depth)) = stack.pop() {
        if depth > max {
            return true;
        }
        stack.extend(e.children().map(|c| (c, depth + 1)));
    }
    false
}

/// Drop `e` level by level instead of by recursion.
pub(crate) fn drop_flat(e: Element) {
    let mut stack = vec![e];
    while let Some(mut e) = stack.pop() {
        for node in e.take_nodes() {
            if let Node::Element(child) = node {
                stack.push(child);
            }
        }
    }
}

/// The next element, `Some(None)` after a quiet spell, `None` once the stream is gone.
async fn next_element<Io: AsyncBufRead + AsyncWrite + Unpin>(s: &mut XmlStream<Io, Element>) -> Option<Option<Element>> {
    match s.next().await? {
        Ok(e) => Some(Some(e)),
        Err(ReadError::SoftTimeout) => Some(None),
        Err(ReadError::StreamFooterReceived) => None,
        Err(ReadError::HardError(e)) => {
            tracing::warn!("connection lost: {e}");
            None
        }
        Err(ReadError::ParseError(e)) => {
            tracing::warn!("the server sent what is not XML: {e}");
            None
        }
    }
}

/// A top-level element as a stanza; `Ok(None)` for what is not a stanza.
fn stanza(e: Element) -> Result<Option<Stanza>, String> {
    if e.ns() != NS_COMPONENT {
        return Ok(None);
    }
    Ok(Some(match e.name() {
        "message" => Message::try_from(e).map_err(|err| err.to_string())?.into(),
        "presence" => Presence::try_from(e).map_err(|err| err.to_string())?.into(),
        "iq" => Iq::try_from(e).map_err(|err| err.to_string())?.into(),
        _ => return Ok(None),
    }))
}

/// `e` with every element of namespace `from` (itself and the children that
/// inherit it, such as `body`) moved to `to`; other namespaces untouched.
pub(crate) fn renamespace(mut e: Element, from: &str, to: &str) -> Element {
    if e.ns() != from {
        return e;
    }
    let mut out = Element::bare(e.name(), to);
    *out.attrs_mut() = e.attrs().clone();
    for node in e.take_nodes() {
        match node {
            Node::Element(child) => {
                out.append_child(renamespace(child, from, to));
            }
            Node::Text(t) => out.append_text_node(t),
        }
    }
    out
}

async fn open_component(options: &XmppOptions, domain: &str, secret: &Secret, server: SocketAddr) -> Result<Connection, ConnectError> {
    let jid = Jid::new(domain).map_err(unreachable)?;
    // The bytes from the server pass a guard that cuts out elements nested
    // deeper than any stanza needs, before the parser (which recurses once
    // per level) sees them.
    let tcp = tokio::net::TcpStream::connect(server).await.map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let guarded = crate::depth::Guarded::new(tcp, MAX_DEPTH + 1);
    let cut = guarded.cut();
    let header = StreamHeader { to: Some(Cow::Borrowed(jid.domain().as_str())), from: None, id: None };
    let mut pending = tokio_xmpp::xmlstream::initiate_stream(tokio::io::BufStream::new(guarded), NS_COMPONENT, header, timeouts(options))
        .await
        .map_err(unreachable)?;
    let id = pending.take_header().id.map(Cow::into_owned).ok_or_else(|| unreachable("the server sent no stream id"))?;
    let mut stream: XmlStream<ComponentIo, Element> = pending.skip_features();
    let handshake = tokio_xmpp::parsers::component::Handshake::from_stream_id_and_password(id, secret.expose());
    let request = Element::from(handshake);
    stream.send(&request).await.map_err(unreachable)?;
    let answer =
        next_element(&mut stream).await.flatten().ok_or_else(|| unreachable("the server closed the stream during the handshake"))?;
    if answer.is("handshake", NS_COMPONENT) {
        Ok(Connection { stream: Stream::Component(stream), bound: None, cut, cut_seen: 0 })
    } else {
        let why: Vec<String> = answer.children().map(|c| c.name().to_string()).collect();
        Err(ConnectError::Refused(format!("the server refused the component handshake for {domain} ({}): check `secret`", why.join(", "))))
    }
}

async fn open_client(options: &XmppOptions, bare: &BareJid, password: &Secret, server: Option<&str>) -> Result<Connection, ConnectError> {
    let dns = match server.map(|s| (s, s.rsplit_once(':'))) {
        // An address as it is; a host name looked up (without SRV).
        Some((addr, _)) if addr.parse::<std::net::SocketAddr>().is_ok() => DnsConfig::addr(addr),
        Some((_, Some((host, port)))) => DnsConfig::no_srv(host, port.parse().map_err(unreachable)?),
        Some((other, None)) => return Err(ConnectError::Refused(format!("server {other:?} is not host:port"))),
        None => DnsConfig::srv_default_client(bare.domain().as_str()),
    };
    // STARTTLS here rather than by tokio-xmpp's connector, so that the bytes
    // out of TLS pass the depth guard before the parser sees them.
    let header = || StreamHeader { to: Some(Cow::Borrowed(bare.domain().as_str())), from: None, id: None };
    let tcp = dns.resolve().await.map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let plain = tokio_xmpp::xmlstream::initiate_stream(tokio::io::BufStream::new(tcp), NS_CLIENT, header(), timeouts(options))
        .await
        .map_err(unreachable)?;
    let (features, plain) = plain.recv_features().await.map_err(unreachable)?;
    if !features.can_starttls() {
        return Err(ConnectError::Refused(format!("{} does not offer STARTTLS (the server must offer STARTTLS)", bare.domain())));
    }
    let (tls, binding) = tokio_xmpp::connect::starttls::starttls(plain, bare.domain().as_str()).await.map_err(unreachable)?;
    let guarded = crate::depth::Guarded::new(tls, MAX_DEPTH + 1);
    let cut = guarded.cut();
    let pending = tokio_xmpp::xmlstream::initiate_stream(tokio::io::BufStream::new(guarded), NS_CLIENT, header(), timeouts(options))
        .await
        .map_err(unreachable)?;
    let (features, stream) = pending.recv_features().await.map_err(unreachable)?;
    // SCRAM only: never a password in the clear, not even inside TLS.
    let mechanisms: BTreeSet<String> = features.sasl_mechanisms.iter().filter(|m| m.starts_with("SCRAM-")).cloned().collect();
    if mechanisms.is_empty() {
        return Err(ConnectError::Refused(format!("{} offers no SCRAM login (only {:?})", bare.domain(), features.sasl_mechanisms)));
    }
    // Channel binding (the -PLUS mechanisms) only where the server says it
    // can check tls-exporter, the one binding this TLS stack gives; a server
    // that cannot bind this TLS version offers the plain SCRAM ones.
    let exporter = features.sasl_cb.as_ref().is_some_and(|cb| cb.types.contains(&CbType::TlsExporter));
    let plus = mechanisms.iter().any(|m| m.ends_with("-PLUS"));
    let binding = if plus && exporter && matches!(binding, ChannelBinding::TlsExporter(_)) { binding } else { ChannelBinding::None };
    let password = password.expose().to_string();
    let creds = sasl::common::Credentials::default()
        .with_username(bare.node().map(|n| n.as_str()).unwrap_or_default())
        .with_password(password)
        .with_channel_binding(binding);
    let stream = client_login(stream, mechanisms, creds).await.map_err(|e| match e {
        tokio_xmpp::Error::Auth(a) => ConnectError::Refused(format!("login as {bare} failed: {a} (check `password`)")),
        e => unreachable(e),
    })?;
    let header = StreamHeader { to: Some(Cow::Borrowed(bare.domain().as_str())), from: None, id: None };
    let pending = stream.send_header(header).await.map_err(unreachable)?;
    let (_, mut stream) = pending.recv_features::<Element>().await.map_err(unreachable)?;
    // Bind a resource (RFC 6120 §7).
    let resource = Element::builder("resource", NS_BIND).append(crate::RESOURCE).build();
    let bind = Element::builder("iq", NS_CLIENT)
        .attr(tokio_xmpp::minidom::rxml::xml_ncname!("type").into(), "set")
        .attr(tokio_xmpp::minidom::rxml::xml_ncname!("id").into(), "bind")
        .append(Element::builder("bind", NS_BIND).append(resource).build())
        .build();
    stream.send(&bind).await.map_err(unreachable)?;
    loop {
        let e = next_element(&mut stream).await.flatten().ok_or_else(|| unreachable("the server closed the stream while binding"))?;
        if !e.is("iq", NS_CLIENT) || e.attr("id") != Some("bind") {
            continue;
        }
        if e.attr("type") != Some("result") {
            return Err(ConnectError::Refused(format!("the server refused to bind a resource for {bare}")));
        }
        let full = e
            .get_child("bind", NS_BIND)
            .and_then(|b| b.get_child("jid", NS_BIND))
            .and_then(|j| j.text().parse::<FullJid>().ok())
            .ok_or_else(|| unreachable("the bind answer has no full JID"))?;
        return Ok(Connection { stream: Stream::Client(stream), bound: Some(full), cut, cut_seen: 0 });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stanzas_too_deep_to_take_are_found_and_dropped_without_recursion() {
        let deep = |depth: usize| {
            format!(
                "<message xmlns='jabber:component:accept' from='a@b/c' to='causeway@bridge.example.org' type='chat'><body>deep</body>{}{}</message>",
                "<a>".repeat(depth),
                "</a>".repeat(depth)
            )
        };
        let shallow: Element = deep(100).parse().unwrap();
        assert!(!too_deep(&shallow, MAX_DEPTH));
        assert!(stanza(shallow).unwrap().is_some());
        // Far deeper than a 2 MiB stack would take by recursion.
        let ok = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn({
                let xml = deep(40_000);
                move || {
                    let e: Element = xml.parse().unwrap();
                    assert!(too_deep(&e, MAX_DEPTH));
                    drop_flat(e);
                }
            })
            .unwrap()
            .join();
        assert!(ok.is_ok());
    }

    use super::*;

    #[test]
    fn namespaces_move_for_the_stanza_and_its_plain_children_only() {
        let xml = "<message xmlns='jabber:client' to='a@b' type='chat'><body>hi</body>\
                   <reply xmlns='urn:xmpp:reply:0' id='x'/><thread>t</thread></message>";
        let e: Element = xml.parse().unwrap();
        let moved = renamespace(e.clone(), NS_CLIENT, NS_COMPONENT);
        assert!(moved.is("message", NS_COMPONENT));
        assert!(moved.get_child("body", NS_COMPONENT).is_some());
        assert!(moved.get_child("reply", "urn:xmpp:reply:0").is_some());
        assert_eq!(moved.attr("type"), Some("chat"));
        match stanza(moved.clone()).unwrap() {
            Some(Stanza::Message(m)) => assert_eq!(m.bodies.values().next().map(String::as_str), Some("hi")),
            other => panic!("{other:?}"),
        }
        assert_eq!(renamespace(moved, NS_COMPONENT, NS_CLIENT), e);
    }

    #[test]
    fn what_does_not_parse_is_an_error_not_a_stanza() {
        for bad in [
            "<message xmlns='jabber:component:accept' type='shout'><body>a</body></message>",
            "<presence xmlns='jabber:component:accept' type='maybe'/>",
            "<iq xmlns='jabber:component:accept' type='get'/>",
        ] {
            let e: Element = bad.parse().unwrap();
            assert!(stanza(e).is_err(), "{bad}");
        }
        let other: Element = "<r xmlns='urn:xmpp:sm:3'/>".parse().unwrap();
        assert!(stanza(other).unwrap().is_none());
    }
}
