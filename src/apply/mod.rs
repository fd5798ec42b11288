//! The apply stage: what the router, the fetcher and the dispatcher's
//! read-before-write share to turn a remote state into local rows. The
//! conflict engine's decision is pure (`engine::decide`, on top of
//! `conflict::resolve`); its writes (`engine::reconcile`: the local
//! columns, the link's snapshot and remote version, pushes, conflicts and
//! one audit row) live beside it. Providers' own writers (their `store`
//! modules) call into this stage; it never calls back into a provider.

pub mod checked;
pub mod engine;

use uuid::Uuid;

/// What applying one event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Inserted(Uuid),
    Updated(Uuid),
    /// Nothing written: an equal or newer state was already applied.
    Stale(String),
    /// Nothing to apply it to.
    Ignored(String),
    /// Both sides changed it and a `manual` rule holds: recorded in
    /// `sync_conflicts`, nothing applied.
    Conflict(String),
    /// Turned into work for later (fetch hints queued).
    Queued,
}
