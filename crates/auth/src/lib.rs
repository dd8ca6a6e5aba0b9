//! Authentication: turns a credential into a [`TenantScope`] or an [`OperatorScope`].
//!
//! These handles are the type-level tenant boundary: every data-touching engine call takes one,
//! and nothing outside this crate can construct them (their fields are private and there is no
//! public constructor, except [`TenantScope::for_tests`] behind the `test-support` feature).
//! In production the only constructor call sites are in [`Authenticator`], which verifies API
//! keys (hashed, in the store's credentials table) and JWTs (HS256 or EdDSA, configured keys).

mod authenticator;
mod error;
mod grant;
mod jwt;
mod keys;
mod scope;

pub use authenticator::{AuthConfig, Authenticator, Principal};
pub use error::AuthError;
pub use grant::{Grant, Permission, Permissions};
pub use keys::{
    CreatedKey, KEY_PREFIX, KeyAudit, KeyInfo, KeyTenant, NewKey, RotatedKey, Rotation, create_key,
    key, list_keys, revoke_key, rotate_key,
};
pub use scope::{OperatorScope, RequestContext, TenantScope};
