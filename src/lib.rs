//! The Causeway daemon: config, router, store, outbox, HTTP surface.
//! Protocols live in the bridge crates (`bridges/`); nothing here names one
//! except the registry in [`bridges`].

pub mod admin;
pub mod app;
pub mod archive;
pub mod bridges;
pub mod broadcast;
pub mod calendar;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod http;
pub mod ldap;
pub mod metrics;
pub mod outbox;
pub mod person;
pub mod presence;
pub mod reload;
pub mod router;
pub mod running;
pub mod store;
pub mod topology;
