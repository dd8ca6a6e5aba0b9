//! Authentication: turns a credential into a [`TenantScope`] or an [`OperatorScope`].
//!
//! These handles are the type-level tenant boundary: every data-touching engine call takes one,
//! and nothing outside this crate can construct them (their fields are private and there is no
//! public constructor, except [`TenantScope::for_tests`] behind the `test-support` feature).

mod grant;
mod scope;

pub use grant::{Grant, Permission, Permissions};
pub use scope::{OperatorScope, TenantScope};
