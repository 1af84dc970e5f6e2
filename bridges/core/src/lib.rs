//! Causeway's core contract: the normalized event model, the [`Bridge`]
//! trait every network implements, capabilities and degradation, and the
//! conformance suite every bridge runs against its real server.
//!
//! The router and the store depend on this crate and on nothing
//! protocol-specific; each bridge crate depends on this crate alone.

pub mod bridge;
pub mod conformance;
pub mod degrade;
pub mod event;
pub mod fetch;
pub mod http;
pub mod network;
pub mod retry;
pub mod secret;
pub mod sign;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod time_zone;

pub use bridge::{
    Accepted, Bridge, BridgeContext, BridgeError, BridgeOptions, Capabilities, Committed, Degrade, Delivered, Delivery, DeliveryError,
    DirectError, Host, IdKind, OptionError, PEOPLE_ROOM, ReadMarkers, Recipient, SubmitError, parse_options,
};
pub use degrade::degrade;
pub use event::{
    Attachment, Body, Event, EventId, Incoming, Membership, Mention, MessageKind, Origin, RemoteSender, Sender, Show, Text, new_id, now_ms,
};
pub use network::{Configured, Network};
pub use secret::Secret;
