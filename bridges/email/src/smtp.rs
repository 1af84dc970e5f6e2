//! Sending mail through the configured SMTP server.

use causeway_core::DeliveryError;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{SmtpOptions, Tls};

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

/// Why the SMTP client cannot be made from `smtp.server`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0:?} is not host:port")]
    NotHostPort(String),
    #[error("port of {0:?}: {1}")]
    Port(String, std::num::ParseIntError),
    #[error("TLS with {0}: {1}")]
    Tls(String, lettre::transport::smtp::Error),
}

impl Smtp {
    pub fn new(o: &SmtpOptions) -> Result<Smtp, SetupError> {
        let (host, port) = o.server.rsplit_once(':').ok_or_else(|| SetupError::NotHostPort(o.server.clone()))?;
        let port: u16 = port.parse().map_err(|e| SetupError::Port(o.server.clone(), e))?;
        let tls = |e| SetupError::Tls(host.to_string(), e);
        let mut b = match o.tls {
            Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(tls)?,
            Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(tls)?,
            Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        }
        .port(port)
        .timeout(Some(o.timeout));
        if let (Some(u), Some(p)) = (&o.username, &o.password) {
            b = b.credentials(Credentials::new(u.clone(), p.expose().to_string()));
        }
        Ok(Smtp { transport: b.build() })
    }

    /// Send `bytes` from `from` to every address of `to` in one transaction.
    pub async fn send(&self, from: &str, to: &[String], bytes: &[u8]) -> Result<(), DeliveryError> {
        let parse = |a: &str| a.parse::<lettre::Address>().map_err(|e| DeliveryError::permanent(format!("{a:?}: {e}")));
        let rcpt = to.iter().map(|a| parse(a)).collect::<Result<Vec<_>, _>>()?;
        let envelope = Envelope::new(Some(parse(from)?), rcpt).map_err(|e| DeliveryError::permanent(e.to_string()))?;
        match self.transport.send_raw(&envelope, bytes).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(DeliveryError::permanent(format!("the SMTP server refused the mail: {e}"))),
            Err(e) => Err(DeliveryError::transient(format!("SMTP: {e}"))),
        }
    }
}
