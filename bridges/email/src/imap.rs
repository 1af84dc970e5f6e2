//! The IMAP side: one connection to the bridge's mailbox, new mail read in
//! UID order with IDLE (and a poll as a safety net), each mail flagged or
//! moved only after it is committed. The last UID taken and the mailbox's
//! UIDVALIDITY are kept in the store, so a restart neither skips nor
//! re-reads mail (and a mail read twice is recognised by its Message-ID).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::UnsolicitedResponse;
use futures_util::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::config::{ImapOptions, Tls};

/// A connection, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub type Session = async_imap::Session<Stream>;

/// TLS against the system's trust store (or `SSL_CERT_FILE`).
pub fn tls_connector() -> Result<TlsConnector, ConnectError> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    let config = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn tls(host: &str, tcp: TcpStream) -> Result<Stream, ConnectError> {
    let name = ServerName::try_from(host.to_string()).map_err(|e| ConnectError::Unreachable(format!("{host}: {e}")))?;
    let s = tls_connector()?.connect(name, tcp).await.map_err(|e| ConnectError::Unreachable(format!("TLS with {host}: {e}")))?;
    Ok(Stream::Tls(Box::new(s)))
}

/// Why there is no session.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused the login: retrying soon will not help.
    #[error("login refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Unreachable(String),
}

/// Why an IMAP exchange failed. Each ends the session; the bridge opens a
/// new one after a wait.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server answered a command with an error, or the connection
    /// broke during it.
    #[error("{command}: {source}")]
    Command { command: String, source: async_imap::error::Error },
    /// No answer within [`COMMAND_TIMEOUT`].
    #[error("{0}: no answer in {COMMAND_TIMEOUT:?}")]
    Timeout(&'static str),
    /// The server's answer lacks what the bridge needs.
    #[error("{mailbox} has no {what}")]
    Missing { mailbox: String, what: &'static str },
}

/// A command's error, named by the command.
pub(crate) fn failed(command: impl Into<String>) -> impl FnOnce(async_imap::error::Error) -> ImapError {
    let command = command.into();
    move |source| ImapError::Command { command, source }
}

/// Connect, secure, log in.
pub async fn connect(o: &ImapOptions) -> Result<Session, ConnectError> {
    let un = |e: String| ConnectError::Unreachable(e);
    let host = o.server.rsplit_once(':').map(|(h, _)| h).unwrap_or(&o.server).to_string();
    let tcp = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(&o.server))
        .await
        .map_err(|_| un(format!("{}: no connection in 30s", o.server)))?
        .map_err(|e| un(format!("{}: {e}", o.server)))?;
    let client = match o.tls {
        Tls::Tls => {
            let mut c = async_imap::Client::new(tls(&host, tcp).await?);
            c.read_response().await.map_err(|e| un(format!("no greeting: {e}")))?;
            c
        }
        Tls::None => {
            let mut c = async_imap::Client::new(Stream::Plain(tcp));
            c.read_response().await.map_err(|e| un(format!("no greeting: {e}")))?;
            c
        }
        Tls::Starttls => {
            let mut c = async_imap::Client::new(Stream::Plain(tcp));
            c.read_response().await.map_err(|e| un(format!("no greeting: {e}")))?;
            c.run_command_and_check_ok("STARTTLS", None).await.map_err(|e| un(format!("the server did not start TLS: {e}")))?;
            let Stream::Plain(tcp) = c.into_inner() else { unreachable!("plain before STARTTLS") };
            async_imap::Client::new(tls(&host, tcp).await?)
        }
    };
    client.login(&o.username, o.password.expose()).await.map_err(|(e, _)| ConnectError::Refused(format!("as {}: {e}", o.username)))
}

/// The mailbox's UIDVALIDITY after selecting it.
pub async fn select(session: &mut Session, mailbox: &str) -> Result<u32, ImapError> {
    let m = session.select(mailbox).await.map_err(failed(format!("SELECT {mailbox}")))?;
    m.uid_validity.ok_or_else(|| ImapError::Missing { mailbox: mailbox.to_string(), what: "UIDVALIDITY" })
}

/// How long one command may take before the connection counts as dead.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Run one IMAP exchange within [`COMMAND_TIMEOUT`].
pub async fn timed<T>(what: &'static str, f: impl std::future::Future<Output = Result<T, ImapError>>) -> Result<T, ImapError> {
    tokio::time::timeout(COMMAND_TIMEOUT, f).await.map_err(|_| ImapError::Timeout(what))?
}

/// The mailbox's next UID (where a first start begins).
pub async fn uid_next(session: &mut Session, mailbox: &str) -> Result<u32, ImapError> {
    let m = session.examine(mailbox).await.map_err(failed(format!("EXAMINE {mailbox}")))?;
    m.uid_next.ok_or_else(|| ImapError::Missing { mailbox: mailbox.to_string(), what: "UIDNEXT" })
}

/// The size of a mail, before fetching it.
pub async fn size(session: &mut Session, uid: u32) -> Result<Option<u32>, ImapError> {
    let fetches: Vec<_> = session
        .uid_fetch(uid.to_string(), "RFC822.SIZE")
        .await
        .map_err(failed(format!("UID FETCH {uid} RFC822.SIZE")))?
        .try_collect()
        .await
        .map_err(failed(format!("UID FETCH {uid} RFC822.SIZE")))?;
    Ok(fetches.into_iter().find(|f| f.uid == Some(uid)).and_then(|f| f.size))
}

/// UIDs above `after`, ascending.
pub async fn new_uids(session: &mut Session, after: u32) -> Result<Vec<u32>, ImapError> {
    let found = session.uid_search(format!("UID {}:*", after.saturating_add(1))).await.map_err(failed("UID SEARCH"))?;
    // `n:*` always matches the last message, even below n.
    let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > after).collect();
    uids.sort_unstable();
    Ok(uids)
}

/// The whole mail, without marking it read (that waits for the commit).
pub async fn fetch(session: &mut Session, uid: u32) -> Result<Option<Vec<u8>>, ImapError> {
    let fetches: Vec<_> = session
        .uid_fetch(uid.to_string(), "BODY.PEEK[]")
        .await
        .map_err(failed(format!("UID FETCH {uid}")))?
        .try_collect()
        .await
        .map_err(failed(format!("UID FETCH {uid}")))?;
    // The answer for this UID that carries the body: the server may also
    // send FETCH responses of its own for the same message (a flag change)
    // in between, without one.
    Ok(fetches.into_iter().filter(|f| f.uid == Some(uid)).find_map(|f| f.body().map(<[u8]>::to_vec)))
}

/// Mark a mail read.
pub async fn mark_seen(session: &mut Session, uid: u32) -> Result<(), ImapError> {
    let _: Vec<_> = session
        .uid_store(uid.to_string(), "+FLAGS (\\Seen)")
        .await
        .map_err(failed(format!("UID STORE {uid}")))?
        .try_collect()
        .await
        .map_err(failed(format!("UID STORE {uid}")))?;
    Ok(())
}

/// Move a mail to another folder: MOVE where the server has it, else
/// copy, flag deleted and expunge (that one mail, with UIDPLUS).
pub async fn move_to(session: &mut Session, uid: u32, folder: &str, has_move: bool) -> Result<(), ImapError> {
    if has_move {
        return session.uid_mv(uid.to_string(), folder).await.map_err(failed(format!("UID MOVE {uid} to {folder}")));
    }
    session.uid_copy(uid.to_string(), folder).await.map_err(failed(format!("UID COPY {uid} to {folder}")))?;
    let _: Vec<_> = session
        .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Deleted)")
        .await
        .map_err(failed(format!("UID STORE {uid}")))?
        .try_collect()
        .await
        .map_err(failed(format!("UID STORE {uid}")))?;
    let _: Vec<_> = session
        .uid_expunge(uid.to_string())
        .await
        .map_err(failed(format!("UID EXPUNGE {uid}")))?
        .try_collect()
        .await
        .map_err(failed(format!("UID EXPUNGE {uid}")))?;
    Ok(())
}

/// Create a folder unless it is there.
pub async fn ensure_folder(session: &mut Session, folder: &str) -> Result<(), ImapError> {
    let Err(e) = session.create(folder).await else { return Ok(()) };
    // Refused: fine if it is there already, as LIST tells (servers say so
    // in a response code only some of them send, or in prose).
    let listed: Vec<_> = session
        .list(None, Some(folder))
        .await
        .map_err(failed(format!("LIST {folder} (after CREATE failed: {e})")))?
        .try_collect()
        .await
        .map_err(failed(format!("LIST {folder} (after CREATE failed: {e})")))?;
    if listed.iter().any(|n| n.name() == folder) { Ok(()) } else { Err(failed(format!("CREATE {folder}"))(e)) }
}

/// Wait for new mail: IDLE until the server says something or `timeout`
/// passes (whatever keep-alive lines the server sends meanwhile). Gives the
/// session back.
///
/// A mail that arrives between the last search and IDLE is announced
/// (`* n EXISTS`) with the answer to an earlier command, or before the
/// server's `+ idling`: async-imap puts those on the session's unsolicited
/// channel, not into the IDLE wait. So the channel is read before and after
/// IDLE starts, and any news ends the wait at once; the caller searches
/// again. (Read each time, the channel also never fills up and drops news.)
pub async fn wait(session: Session, timeout: Duration) -> Result<Session, ImapError> {
    let news = session.unsolicited_responses.clone();
    if announced(&news) {
        return Ok(session);
    }
    let mut idle = session.idle();
    timed("IDLE", async { idle.init().await.map_err(failed("IDLE")) }).await?;
    if !announced(&news) {
        let (wait, stop) = idle.wait_with_timeout(timeout);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(IdleResponse::NewData(_) | IdleResponse::Timeout | IdleResponse::ManualInterrupt)) => {}
            Ok(Err(e)) => return Err(failed("IDLE")(e)),
            // The server kept the connection busy without news: done waiting.
            Err(_) => drop(stop),
        }
    }
    timed("IDLE DONE", async { idle.done().await.map_err(failed("IDLE DONE")) }).await
}

/// Whether the server announced new mail since the channel was last read
/// (everything in it is taken).
fn announced(news: &async_channel::Receiver<UnsolicitedResponse>) -> bool {
    let mut any = false;
    while let Ok(r) = news.try_recv() {
        any |= matches!(r, UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_));
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_is_new_mail_only_and_the_channel_is_emptied() {
        let (tx, rx) = async_channel::bounded(100);
        assert!(!announced(&rx));
        tx.try_send(UnsolicitedResponse::Expunge(3)).unwrap();
        assert!(!announced(&rx), "an expunge is no new mail");
        tx.try_send(UnsolicitedResponse::Expunge(3)).unwrap();
        tx.try_send(UnsolicitedResponse::Exists(7)).unwrap();
        tx.try_send(UnsolicitedResponse::Recent(1)).unwrap();
        assert!(announced(&rx));
        assert!(rx.is_empty());
        assert!(!announced(&rx), "told once");
    }
}
