//! Which networks this build has: the one table of bridge types. Each type
//! is a cargo feature of the same name; nothing else in the daemon names a
//! network. The bridges that run are in [`crate::running`].

use std::collections::BTreeMap;
use std::sync::Arc;

use causeway_core::{Bridge, Configured, Network, OptionError};
use serde_json::Value;

/// A row of the table: a bridge type, and its network when compiled in.
macro_rules! network {
    ($feature:literal, $network:expr) => {{
        #[cfg(feature = $feature)]
        const NETWORK: Option<&'static dyn Network> = Some(&$network);
        #[cfg(not(feature = $feature))]
        const NETWORK: Option<&'static dyn Network> = None;
        ($feature, NETWORK)
    }};
}

/// Every bridge type Causeway knows, and its network where this build has it.
const TYPES: &[(&str, Option<&'static dyn Network>)] = &[
    network!("webhook", causeway_webhook::NETWORK),
    network!("xmpp", causeway_xmpp::NETWORK),
    network!("matrix", causeway_matrix::Matrix),
    network!("email", causeway_email::NETWORK),
];

/// The networks compiled into this binary.
pub fn networks() -> impl Iterator<Item = &'static dyn Network> {
    TYPES.iter().filter_map(|(_, n)| *n)
}

/// The bridge types compiled into this binary.
pub fn compiled() -> Vec<&'static str> {
    networks().map(|n| n.kind()).collect()
}

/// The network of bridge type `kind`, when compiled in.
pub fn network(kind: &str) -> Option<&'static dyn Network> {
    networks().find(|n| n.kind() == kind)
}

/// Read and check (not build) a bridge's config section.
pub fn configure(section: &Value) -> Result<Box<dyn Configured>, Vec<OptionError>> {
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
    match TYPES.iter().find(|(k, _)| *k == kind) {
        Some((_, Some(network))) => network.configure(Value::Object(options)),
        Some((k, None)) => {
            Err(vec![OptionError::new("type", format!("bridge type {k:?} is not compiled into this build (cargo feature `{k}`)"))])
        }
        None => Err(vec![OptionError::new("type", format!("unknown bridge type {kind:?} (this build has: {})", compiled().join(", ")))]),
    }
}

/// Build every configured bridge (their clients; nothing starts), naming
/// each failing option by its path in the config.
pub fn build(configured: &BTreeMap<String, Box<dyn Configured>>) -> anyhow::Result<BTreeMap<String, Arc<dyn Bridge>>> {
    let mut built = BTreeMap::new();
    for (name, options) in configured {
        let bridge = build_one(name, options.as_ref()).map_err(|e| one_error(&e))?;
        built.insert(name.clone(), bridge);
    }
    Ok(built)
}

/// Read, check and build bridge `name` from its config section (a bridge
/// started later, on the instance that takes its lease).
pub fn build_section(name: &str, section: &Value) -> anyhow::Result<Arc<dyn Bridge>> {
    let options = configure(section).map_err(|e| one_error(&under(name, e)))?;
    build_one(name, options.as_ref()).map_err(|e| one_error(&e))
}

/// Build the bridge `name`; each error names its option by its path in
/// the config (`bridges.NAME.…`).
pub fn build_one(name: &str, options: &dyn Configured) -> Result<Arc<dyn Bridge>, Vec<OptionError>> {
    options.build().map_err(|errors| under(name, errors))
}

/// Errors of bridge `name`'s options, named by their paths in the config.
fn under(name: &str, errors: Vec<OptionError>) -> Vec<OptionError> {
    errors
        .into_iter()
        .map(|e| {
            let path = if e.path.is_empty() { format!("bridges.{name}") } else { format!("bridges.{name}.{}", e.path) };
            OptionError::new(path, e.message)
        })
        .collect()
}

/// Option errors as one error, each with its path.
fn one_error(errors: &[OptionError]) -> anyhow::Error {
    let each: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
    anyhow::anyhow!("{}", each.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compiled_network_is_in_the_table_under_its_own_type() {
        for (kind, network) in TYPES {
            if let Some(n) = network {
                assert_eq!(n.kind(), *kind);
            }
        }
        let err = configure(&serde_json::json!({"type": "carrier-pigeon"})).err().unwrap();
        assert_eq!(err[0].path, "type");
        assert!(err[0].message.contains("unknown bridge type"), "{}", err[0].message);
    }
}
