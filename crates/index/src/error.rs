//! The error type shared by the indexes of this crate.

use crate::metric::Metric;

/// Errors returned by the indexes in this crate.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A vector's length differs from the index's dimension.
    #[error("vector has {actual} dimensions, index expects {expected}")]
    DimensionMismatch {
        /// The index's dimension.
        expected: usize,
        /// The length of the vector given.
        actual: usize,
    },
    /// A vector contains NaN or an infinity.
    #[error("vector contains a non-finite value at position {position}")]
    NonFinite {
        /// Index of the first offending component.
        position: usize,
    },
    /// A construction parameter is out of its valid range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParam {
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: usize,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A serialized index does not match what the caller expects, or is damaged.
    #[error("serialized index is invalid: {reason}")]
    Corrupt {
        /// What was wrong with it.
        reason: String,
    },
    /// A serialized index was built with another metric than the one requested.
    #[error("serialized index uses metric {found:?}, expected {expected:?}")]
    MetricMismatch {
        /// The metric requested by the caller.
        expected: Metric,
        /// The metric recorded in the bytes.
        found: Metric,
    },
}
