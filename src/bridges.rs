//! Which bridge types this build has, and how a config section becomes one.
//! Each type is a cargo feature; the router never names a specific one.

use std::sync::Arc;

use causeway_core::{Bridge, OptionError};
use serde_json::Value;

/// Every bridge type Causeway knows, compiled in or not.
const ALL_TYPES: &[&str] = &["webhook", "xmpp", "matrix", "email"];

/// The bridge types compiled into this binary.
pub fn compiled() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "webhook") {
        v.push("webhook");
    }
    if cfg!(feature = "xmpp") {
        v.push("xmpp");
    }
    if cfg!(feature = "matrix") {
        v.push("matrix");
    }
    if cfg!(feature = "email") {
        v.push("email");
    }
    v
}

/// The application service registration of the config's Matrix bridge
/// (`name`, or the only one).
pub fn matrix_registration(config: &crate::config::Config, name: Option<&str>, double_puppet: bool) -> anyhow::Result<String> {
    let matrix: Vec<(&String, &Value)> =
        config.bridges.iter().filter(|(_, s)| s.get("type").and_then(Value::as_str) == Some("matrix")).collect();
    let (name, section) = match (name, matrix.as_slice()) {
        (Some(n), _) => matrix
            .iter()
            .find(|(b, _)| b.as_str() == n)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no Matrix bridge named {n:?} in the config"))?,
        (None, [one]) => *one,
        (None, []) => anyhow::bail!("the config has no bridge of type matrix"),
        (None, _) => anyhow::bail!("the config has several Matrix bridges: say which with --bridge NAME"),
    };
    registration(name, section, double_puppet)
}

#[cfg(feature = "matrix")]
fn registration(name: &str, section: &Value, double_puppet: bool) -> anyhow::Result<String> {
    let mut options = section.clone();
    if let Some(o) = options.as_object_mut() {
        o.remove("type");
    }
    let bridge = causeway_matrix::MatrixBridge::from_options(options).map_err(|e| {
        anyhow::anyhow!("bridges.{name}: {}", e.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("; "))
    })?;
    if double_puppet {
        return bridge
            .double_puppet_registration()
            .ok_or_else(|| anyhow::anyhow!("bridges.{name}: set double_puppet_token first (a new random secret)"));
    }
    Ok(bridge.registration())
}

#[cfg(not(feature = "matrix"))]
fn registration(_name: &str, _section: &Value, _double_puppet: bool) -> anyhow::Result<String> {
    anyhow::bail!("this build has no Matrix bridge (cargo feature `matrix`)")
}

/// Build (not start) a bridge from its config section.
pub fn build(section: &Value) -> Result<Arc<dyn Bridge>, Vec<OptionError>> {
    let Value::Object(map) = section else {
        return Err(vec![OptionError::new("", "expected a mapping with a `type` and the bridge's options")]);
    };
    let kind = match map.get("type") {
        Some(Value::String(k)) => k.as_str(),
        Some(_) => return Err(vec![OptionError::new("type", "expected a string")]),
        None => return Err(vec![OptionError::new("", format!("missing `type` (one of: {})", compiled().join(", ")))]),
    };
    let mut options = map.clone();
    options.remove("type");
    let options = Value::Object(options);
    match kind {
        #[cfg(feature = "webhook")]
        "webhook" => Ok(Arc::new(causeway_webhook::WebhookBridge::from_options(options)?)),
        #[cfg(feature = "xmpp")]
        "xmpp" => Ok(Arc::new(causeway_xmpp::XmppBridge::from_options(options)?)),
        #[cfg(feature = "matrix")]
        "matrix" => Ok(Arc::new(causeway_matrix::MatrixBridge::from_options(options)?)),
        #[cfg(feature = "email")]
        "email" => Ok(Arc::new(causeway_email::EmailBridge::from_options(options)?)),
        k if ALL_TYPES.contains(&k) => {
            Err(vec![OptionError::new("type", format!("bridge type {k:?} is not compiled into this build (cargo feature `{k}`)"))])
        }
        k => Err(vec![OptionError::new("type", format!("unknown bridge type {k:?} (this build has: {})", compiled().join(", ")))]),
    }
}
