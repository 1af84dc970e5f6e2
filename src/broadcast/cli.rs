//! `causeway broadcast`: ask the running daemon for a broadcast (through
//! the store, where it looks every second), follow it, and show where each
//! recipient stands.

use std::time::Duration;

use super::{Counts, Request, Requested, Summary, Target};
use crate::store::Store;

/// How long `causeway broadcast` waits for the daemon to plan a broadcast
/// before it says that none seems to run.
const PLANNED_WITHIN: Duration = Duration::from_secs(15);

/// What `causeway broadcast` was told to send.
pub struct Send {
    pub to: Vec<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attach: Vec<String>,
    pub from: Option<String>,
    pub wait: bool,
    pub json: bool,
}

fn counts_line(c: &Counts) -> String {
    format!("{} recipients: {} delivered, {} pending, {} failed, {} unreachable", c.total, c.delivered, c.pending, c.failed, c.unreachable)
}

/// Ask for a broadcast; print its id once the daemon has planned it (and,
/// with `wait`, its progress until nothing is pending). The exit code is
/// 0 when it was planned (and, with `wait`, every recipient reached), 1
/// when it was refused or some failed, 2 when no daemon planned it in time
/// (it stays asked for, and is sent when Causeway runs).
pub async fn send(store: &dyn Store, s: Send) -> anyhow::Result<u8> {
    let to: Vec<Target> = s.to.iter().map(|t| t.parse::<Target>()).collect::<Result<_, _>>().map_err(|e| anyhow::anyhow!(e))?;
    let attachments = s.attach.iter().map(|u| causeway_core::Attachment { url: u.clone(), name: None, mime: None, size: None }).collect();
    let text = s.text.clone().unwrap_or_default();
    let request =
        Request::new(to, &text, s.html.as_deref(), attachments, s.from.as_deref().unwrap_or("Causeway")).map_err(|e| anyhow::anyhow!(e))?;
    let requested = Requested::new("cli", request);
    store.request_broadcast(&requested).await?;
    eprintln!("broadcast {} asked for; waiting for causeway to plan it", requested.id);
    let deadline = tokio::time::Instant::now() + PLANNED_WITHIN;
    let summary = loop {
        if let Some(s) = store.broadcasts(Some(&requested.id), 1).await?.pop()
            && s.state() != "waiting"
        {
            break s;
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!("broadcast {} is not planned yet: is causeway running with this config? It is sent once it runs.", requested.id);
            println!("{}", requested.id);
            return Ok(2);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if let Some(e) = &summary.error {
        eprintln!("broadcast {} refused: {e}", requested.id);
        return Ok(1);
    }
    println!("{}", requested.id);
    eprintln!("planned: {}", counts_line(&summary.counts));
    if !s.wait {
        eprintln!("follow it with: causeway broadcast status {}", requested.id);
        return Ok(0);
    }
    let mut last = String::new();
    loop {
        let now = store.broadcasts(Some(&requested.id), 1).await?.pop().map(|s| s.counts).unwrap_or_default();
        let line = counts_line(&now);
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if now.done() {
            if s.json {
                status(store, &requested.id, true).await?;
            }
            return Ok(if now.failed > 0 { 1 } else { 0 });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `causeway broadcast status ID`: the broadcast, then each recipient.
pub async fn status(store: &dyn Store, id: &str, json: bool) -> anyhow::Result<u8> {
    let Some(summary) = store.broadcasts(Some(id), 1).await?.pop() else {
        eprintln!("no broadcast {id:?}");
        return Ok(1);
    };
    let recipients = store.broadcast_recipients(id).await?;
    if json {
        let out = serde_json::json!({"broadcast": summary, "state": summary.state(), "recipients": recipients});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    print_summary(&summary);
    println!();
    println!("{:<24} {:<12} {:<36} {:<12} {:>8}  ERROR", "PERSON", "BRIDGE", "ACCOUNT OR ROOM", "STATE", "ATTEMPTS");
    for r in recipients {
        let whom = r.account.as_deref().or(r.room.as_deref()).unwrap_or("-");
        println!(
            "{:<24} {:<12} {:<36} {:<12} {:>8}  {}",
            r.person.as_deref().unwrap_or("(room)"),
            r.bridge.as_deref().unwrap_or("-"),
            whom,
            r.state.name(),
            // What left the outbox keeps no count of its attempts.
            if matches!(r.state, super::RecipientState::Pending | super::RecipientState::Failed) {
                r.attempts.to_string()
            } else {
                "-".into()
            },
            r.error.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}

fn print_summary(s: &Summary) {
    let r = &s.requested;
    let to: Vec<String> = r.request.to.iter().map(ToString::to_string).collect();
    println!("broadcast {} ({}) by {} to {}", r.id, s.state(), r.requested_by, to.join(" "));
    println!("  {}", r.request.text.plain.lines().next().unwrap_or(""));
    match &s.error {
        Some(e) => println!("  refused: {e}"),
        None => println!("  {}", counts_line(&s.counts)),
    }
}

/// `causeway broadcast list`: the latest broadcasts.
pub async fn list(store: &dyn Store, json: bool) -> anyhow::Result<u8> {
    let all = store.broadcasts(None, 50).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    for s in &all {
        print_summary(s);
    }
    Ok(0)
}
