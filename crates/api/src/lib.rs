//! Strata's HTTP API: the only crate that knows HTTP.
//!
//! A request flows: middleware (request id, tracing span, body limit) → an authentication
//! extractor ([`edge`]) that turns `Authorization: Bearer …` into a `TenantScope` or
//! `OperatorScope` and checks any tenant the request names → a handler that parses the body
//! and query into engine types ([`input`]) → the engine on the shared fair-queueing worker pool
//! ([`admission`], which also enforces each tenant's rate and in-flight limits) → JSON, or an
//! [`ApiError`] through the one error table ([`error`]).
//!
//! Authentication failures and security events are written to the audit log by one
//! middleware (`security`), whatever layer refused the request; everything that changes
//! state is audited by the engine in the same transaction as the change.
//!
//! Connections are served by [`serve`] (`server`): an accept loop with a connection cap, each
//! tenant's share of it (`tenant_connections`) and per-connection deadlines (`conn_io`); request bodies are on a deadline of their own, and a
//! refusal that leaves a body unread keeps the connection usable or closes it (`body_guard`).
//!
//! The handlers do not re-check visibility: the engine owns those rules and its errors
//! (`SCOPE_FORBIDDEN`, `NOT_FOUND`, …) pass through the table unchanged.

mod admin;
mod admin_query;
pub mod admission;
mod answer_budget;
mod answer_size;
mod audit;
mod backups;
mod bodies;
mod body_guard;
mod collections;
mod conn_io;
mod credential_check;
pub mod edge;
pub mod error;
mod evidence;
mod exposition;
mod feedback;
mod health;
mod idempotency;
pub mod input;
mod isolation;
mod json_body;
mod keys_in_flight;
mod lifecycle;
mod links;
mod media_type;
mod memories;
pub mod metrics;
mod observe;
mod openapi;
mod over_share_lane;
mod parse_slots;
mod put_steps;
mod record_body;
mod reembed;
mod residency;
mod router;
mod scan_steps;
mod search;
mod security;
mod security_throttle;
mod server;
mod shares;
mod state;
mod tenant_bodies;
mod tenant_connections;
mod tenant_ids;
mod timing;
mod transfer;
mod unique_keys;

pub use admission::PoolConfig;
pub use error::{ApiError, ERROR_CODES};
pub use metrics::MetricsConfig;
pub use openapi::document as openapi_document;
pub use over_share_lane::OverShareLane;
pub use router::{openapi, router, served_routes};
pub use security::flush_security_summaries;
pub use security_throttle::SecurityEventLimits;
pub use server::{ServerLimits, serve};
pub use state::{ApiConfig, AppShared, AppState};
pub use strata_sched::{BackgroundPriority, default_idle_poll};
