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
    v
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
        k if ALL_TYPES.contains(&k) => Err(vec![OptionError::new(
            "type",
            format!("bridge type {k:?} is not compiled into this build (cargo feature `{k}`)"),
        )]),
        k => Err(vec![OptionError::new(
            "type",
            format!("unknown bridge type {k:?} (this build has: {})", compiled().join(", ")),
        )]),
    }
}
