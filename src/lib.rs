//! syncbridge keeps a Postgres database and the SaaS tools a business runs
//! on (OpenPhone, Keap, ResMan, Teli, a Cloudflare D1 replica) in sync, in
//! both directions. Signed webhooks come in through the HTTP front
//! ([`http`]), are verified by their [`providers`] module and stored once in
//! the durable [`inbox`]; the [`router`] applies them to the local tables
//! with an audit trail. See ARCHITECTURE.md for the whole map.

pub mod app;
pub mod apply;
pub mod cli;
pub mod config;
pub mod conflict;
pub mod db;
pub mod dispatcher;
pub mod domain;
pub mod events;
pub mod fetcher;
pub mod health;
pub mod http;
pub mod inbox;
pub mod listener;
pub mod ops;
pub mod providers;
pub mod pull;
pub mod router;
pub mod scheduler;
pub mod telemetry;
pub mod worker;
