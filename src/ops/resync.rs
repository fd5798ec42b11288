//! Full resync of one synced table to one provider, written once for the
//! admin API (`POST /api/sync/full`, in the background) and the command
//! line (`syncbridge resync`, in the foreground with a progress bar): a
//! provider with a `resync` job rebuilds the table itself (D1); any other
//! pusher gets every row queued in the outbox for the dispatcher.

use std::sync::Arc;

use crate::domain::ProviderName;
use crate::providers::{Provider, Registry};

/// How a table is resynced to a provider.
pub enum Target {
    /// The provider's own `resync` job, recorded under this job key.
    Job {
        provider: Arc<dyn Provider>,
        key: String,
    },
    /// Every row queued in the outbox.
    Queue,
}

/// Why a resync cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Disabled(&'static str),
    #[error("{0}")]
    NoOutbound(&'static str),
    #[error("{provider} syncs {tables}")]
    NotSynced {
        provider: ProviderName,
        tables: String,
    },
}

/// Checks that `provider` pushes `entity` and says how it is resynced.
pub fn target(
    registry: &Registry,
    provider: ProviderName,
    entity: &str,
) -> Result<Target, Refused> {
    let pusher = registry.get(provider).map_err(Refused::Disabled)?;
    let tables = pusher.pushes().map_err(Refused::NoOutbound)?;
    if !tables.contains(&entity) {
        return Err(Refused::NotSynced {
            provider,
            tables: tables.join(", "),
        });
    }
    Ok(if pusher.jobs().iter().any(|j| j.name() == "resync") {
        Target::Job {
            provider: pusher.clone(),
            key: format!("{provider}.resync.{entity}"),
        }
    } else {
        Target::Queue
    })
}
