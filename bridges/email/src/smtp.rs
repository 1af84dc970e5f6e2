//! Sending mail through the configured SMTP server.

use causeway_core::DeliveryError;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{SmtpOptions, Tls};

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Smtp {
    pub fn new(o: &SmtpOptions) -> Result<Smtp, String> {
        let (host, port) = o.server.rsplit_once(':').ok_or("server is not host:port")?;
        let port: u16 = port.parse().map_err(|e| format!("port: {e}"))?;
        let mut b = match o.tls {
            Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?,
            Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| e.to_string())?,
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
