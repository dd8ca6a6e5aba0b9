//! Authentication and credential-management errors.

use std::borrow::Cow;

use strata_store::StoreError;
use strata_types::{InvalidName, TenantId};

/// Why a credential was refused or a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed, unknown, wrong, expired or revoked credential. The reason is for the
    /// server's log only: clients get one message for all of them, so a probe learns nothing.
    /// Mostly a fixed sentence; owned when it names the claim at fault.
    #[error("unauthorized: {0}")]
    Unauthorized(Cow<'static, str>),
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("{0}")]
    BadRequest(String),
    #[error("tenant {0} does not exist")]
    TenantNotFound(TenantId),
    #[error("key not found")]
    KeyNotFound,
    /// The key is in a state the operation does not apply to (rotating a revoked key).
    #[error("{0}")]
    Conflict(String),
    /// The authentication settings are unusable; the server refuses to start.
    #[error("auth configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
