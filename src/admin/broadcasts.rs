//! Broadcasts from the console (docs/broadcast.md), the one way the API and
//! the pages send one: the request checked, kept, planned at once, audited.

use causeway_core::Attachment;

use super::Console;
use super::auth::Caller;
use crate::broadcast::{Request, Requested, Summary, Target};
use crate::store::StoreError;

pub enum SendError {
    /// Not understood (a target, no text…): nothing was kept.
    Invalid(String),
    Store(StoreError),
}

/// What the console was asked to send.
pub struct Asked<'a> {
    pub to: &'a [String],
    pub text: &'a str,
    pub html: Option<&'a str>,
    pub attachments: Vec<Attachment>,
    pub from: Option<&'a str>,
}

/// Send a broadcast: its summary once planned (with `error` set when it
/// was refused: an unknown portal, person or group).
pub async fn send(c: &Console, caller: &Caller, asked: Asked<'_>) -> Result<Summary, SendError> {
    let to: Vec<Target> = asked.to.iter().map(|t| t.parse()).collect::<Result<_, String>>().map_err(SendError::Invalid)?;
    let from = asked.from.map(str::trim).filter(|f| !f.is_empty()).unwrap_or(&caller.who);
    let request = Request::new(to, asked.text, asked.html, asked.attachments, from).map_err(SendError::Invalid)?;
    let requested = Requested::new(&format!("admin:{}", caller.who), request);
    c.router.request_broadcast(&requested).await.map_err(SendError::Store)?;
    c.router.plan_broadcasts().await;
    let summary = c.store.broadcasts(Some(&requested.id), 1).await.map_err(SendError::Store)?.pop();
    // Kept, so it is listed; planned, or it waits for the next round.
    let summary = summary.ok_or_else(|| SendError::Invalid("the broadcast was not kept".into()))?;
    let to: Vec<String> = summary.requested.request.to.iter().map(ToString::to_string).collect();
    c.audit(caller, "broadcast.send", &requested.id, &to.join(" ")).await;
    Ok(summary)
}
