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

use crate::{Bridge, BridgeOptions, OptionError};

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

/// What a bridge crate's options type says to be [`Configured`] (which it
/// then is): its type, its rooms, the bridge it makes.
pub trait Options: BridgeOptions + Clone + Send + Sync + 'static {
    /// The `type:` of its config sections.
    const KIND: &'static str;
    /// Whether `room` names something a bridge of these options can link.
    fn room_ok(&self, room: &str) -> Result<(), String>;
    /// The bridge these options make (its HTTP clients; nothing started).
    fn bridge(&self) -> Result<Arc<dyn Bridge>, Vec<OptionError>>;
}

impl<T: Options> Configured for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn check_room(&self, room: &str) -> Result<(), String> {
        self.room_ok(room)
    }

    fn build(&self) -> Result<Arc<dyn Bridge>, Vec<OptionError>> {
        self.bridge()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// [`Network::configure`] for options of type `T`.
pub fn configure<T: Options>(options: Value) -> Result<Box<dyn Configured>, Vec<OptionError>> {
    Ok(Box::new(crate::parse_options::<T>(options)?))
}

/// The network of options `T`, for one with no command-line verbs.
pub struct NetworkOf<T>(std::marker::PhantomData<fn() -> T>);

impl<T> NetworkOf<T> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        NetworkOf(std::marker::PhantomData)
    }
}

impl<T: Options> Network for NetworkOf<T> {
    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn configure(&self, options: Value) -> Result<Box<dyn Configured>, Vec<OptionError>> {
        configure::<T>(options)
    }
}

/// The options of `section` as their own type `T` (for [`Network::run_command`]).
pub fn options_of<T: Options>(section: &dyn Configured) -> Result<&T, String> {
    section.as_any().downcast_ref::<T>().ok_or_else(|| format!("not the options of a {} bridge", T::KIND))
}
