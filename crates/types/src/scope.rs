//! The scope a request asks for: which principals, domain, run and local scope.
//!
//! A request scope only ever *narrows* what the credential allows; resolving it against the
//! credential happens in one place, the engine's visibility module.

use serde::{Deserialize, Serialize};

use crate::{Domain, InvalidName, MemoryScope, RunId, UserToken};

/// Which principals a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// These principals (possibly none: then only tenant-shared records are visible).
    Tokens(Vec<UserToken>),
    /// `["*"]`: every principal. Needs the `all_principals` permission.
    AllPrincipals,
}

impl TokenSelector {
    /// Parses a request's `user_tokens` list, where `["*"]` alone means every principal.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, InvalidName> {
        if items.iter().any(|s| s.as_ref() == "*") {
            if items.len() != 1 {
                return Err(InvalidName {
                    field: UserToken::FIELD,
                    reason: "\"*\" must be the only token when present".into(),
                });
            }
            return Ok(TokenSelector::AllPrincipals);
        }
        let tokens = items
            .iter()
            .map(|s| UserToken::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TokenSelector::Tokens(tokens))
    }
}

impl Serialize for TokenSelector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TokenSelector::Tokens(t) => t.serialize(s),
            TokenSelector::AllPrincipals => ["*"].serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TokenSelector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        TokenSelector::parse(&items).map_err(serde::de::Error::custom)
    }
}

/// How a request's tokens must relate to a record's tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserMatch {
    /// The record shares at least one token with the request.
    #[default]
    Any,
    /// The request holds every token of the record.
    All,
}

/// The scope fields of a request. Every field narrows; none can widen what the credential
/// grants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RequestScope {
    /// Absent: the credential's bound tokens, or none for an unbound credential.
    pub user_tokens: Option<TokenSelector>,
    pub user_match: UserMatch,
    /// Absent: `default`.
    pub memory_domain: Option<Domain>,
    pub run_id: Option<RunId>,
    pub memory_scope: Option<MemoryScope>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_alone_means_all_principals() {
        assert_eq!(
            TokenSelector::parse(&["*"]).unwrap(),
            TokenSelector::AllPrincipals
        );
        assert!(TokenSelector::parse(&["*", "u:a"]).is_err());
        assert!(TokenSelector::parse(&["bad token"]).is_err());
        assert_eq!(
            TokenSelector::parse::<&str>(&[]).unwrap(),
            TokenSelector::Tokens(vec![])
        );
    }

    #[test]
    fn scope_deserializes_strictly() {
        let s: RequestScope = serde_json::from_str(
            r#"{"user_tokens":["u:a"],"user_match":"all","memory_domain":"d"}"#,
        )
        .unwrap();
        assert_eq!(s.user_match, UserMatch::All);
        assert!(serde_json::from_str::<RequestScope>(r#"{"tenant_id":"x"}"#).is_err());
    }
}
