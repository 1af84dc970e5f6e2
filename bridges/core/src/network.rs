//! A kind of network, as the config's `type:` names it: how its options are
//! read and checked (no I/O, no client built), how a bridge is made of them
//! when the daemon starts, and the command-line verbs it brings.
//!
//! The daemon keeps one table of [`Network`]s (`src/bridges.rs`); nothing
//! else in it names a network.

use std::any::Any;
use std::sync::Arc;

pub use clap;
use serde_json::Value;

use crate::{Bridge, OptionError};

/// One kind of network (`webhook`, `xmpp`, …).
pub trait Network: Send + Sync + 'static {
    /// The `type:` of its config sections, and the cargo feature of the
    /// daemon that compiles it in.
    fn kind(&self) -> &'static str;

    /// Read and check the options of one config section (without `type`).
    /// Builds nothing and connects to nothing: `causeway check` calls it.
    fn configure(&self, options: Value) -> Result<Box<dyn Configured>, Vec<OptionError>>;

    /// Its command-line verbs, as `causeway <kind> <verb> …` (`causeway
    /// matrix registration`); `None`: it has none. The daemon adds
    /// `--bridge NAME` and `--output FILE` to each verb itself.
    fn command(&self) -> Option<clap::Command> {
        None
    }

    /// Run a verb of [`Network::command`] for one bridge of this kind,
    /// `name` with `options`; what it returns is printed (or written to
    /// `--output`).
    fn run_command(&self, matches: &clap::ArgMatches, name: &str, options: &dyn Configured) -> Result<String, String> {
        let _ = (matches, name, options);
        Err(format!("{} bridges have no commands", self.kind()))
    }
}

/// A config section's options, read and checked.
pub trait Configured: Send + Sync + 'static {
    /// The network they are for (the section's `type`).
    fn kind(&self) -> &'static str;

    /// Whether `room` names something this bridge can link (for the
    /// portals of the config); the error says what is wrong.
    fn check_room(&self, room: &str) -> Result<(), String>;

    /// Make the bridge: its HTTP clients, its connections' settings.
    /// Starts nothing ([`Bridge::start`] does).
    fn build(&self) -> Result<Arc<dyn Bridge>, Vec<OptionError>>;

    /// For [`Network::run_command`], which knows its own options' type.
    fn as_any(&self) -> &dyn Any;
}

/// The options of `section` (a config section of `kind`) as their own type.
pub fn options_of<'a, T: 'static>(section: &'a dyn Configured, kind: &str) -> Result<&'a T, String> {
    section.as_any().downcast_ref::<T>().ok_or_else(|| format!("not the options of a {kind} bridge"))
}
