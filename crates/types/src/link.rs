//! Links between memories: a directed, labelled, weighted edge inside one tenant, followed by
//! spreading activation in `recall` (`docs/memory-intelligence.md`).

use serde::{Deserialize, Serialize};

use crate::{Millis, RecordId, Relation};

/// A stored link. `(source, target, relation)` identifies it: linking the same pair with the
/// same relation again replaces its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Link {
    pub source: RecordId,
    pub target: RecordId,
    pub relation: Relation,
    /// How strongly activation flows along the link, in (0, 1].
    pub weight: f32,
    /// Milliseconds since the Unix epoch.
    #[schema(value_type = i64)]
    pub created_at: Millis,
}

/// The body of `POST /v1/links`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    pub source: RecordId,
    pub target: RecordId,
    /// A label such as `causes` or `next`; `related` when absent.
    #[serde(default = "related")]
    #[schema(default = "related")]
    pub relation: Relation,
    /// In (0, 1]; 1 when absent.
    #[serde(default = "full_weight")]
    #[schema(default = 1.0, exclusive_minimum = 0.0, maximum = 1.0)]
    pub weight: f32,
}

/// Which link: the body of `POST /v1/links/delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRef {
    pub source: RecordId,
    pub target: RecordId,
    #[serde(default = "related")]
    #[schema(default = "related")]
    pub relation: Relation,
}

/// The relation of a link that names none.
pub fn related() -> Relation {
    Relation::parse("related").expect("invariant: literal relation is valid")
}

fn full_weight() -> f32 {
    1.0
}

/// A link that cannot be stored as given; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(pub String);

impl NewLink {
    /// Checks the weight and that the link joins two different records.
    pub fn validate(&self) -> Result<(), LinkError> {
        if !(self.weight > 0.0 && self.weight <= 1.0) {
            return Err(LinkError(format!(
                "weight: {} is not in (0, 1]",
                self.weight
            )));
        }
        if self.source == self.target {
            return Err(LinkError("target: a record cannot link to itself".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let l: NewLink =
            serde_json::from_value(serde_json::json!({"source": "a", "target": "b"})).unwrap();
        assert_eq!((l.relation.as_str(), l.weight), ("related", 1.0));
        assert!(l.validate().is_ok());
        for (w, ok) in [(0.0, false), (-1.0, false), (1.5, false), (0.01, true)] {
            let l = NewLink {
                weight: w,
                ..l.clone()
            };
            assert_eq!(l.validate().is_ok(), ok, "{w}");
        }
        let self_link = NewLink {
            target: l.source.clone(),
            ..l
        };
        assert!(self_link.validate().unwrap_err().0.starts_with("target:"));
        assert!(serde_json::from_value::<NewLink>(serde_json::json!({"source": "a"})).is_err());
    }
}
