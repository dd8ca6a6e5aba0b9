//! Shared knowledge in searches: which granted shared domains a search includes
//! (`include_shared`), and where a hit from one of them came from (`source`).

use serde::{Deserialize, Serialize};

use crate::{Domain, TenantId};

/// The most grants one search may name.
pub const MAX_SHARED_SELECTORS: usize = 32;

/// One entry of `include_shared`: a share id, or the owner tenant and domain of a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedRef {
    /// A share id as `POST /v1/shares` returned it.
    Id(String),
    /// `"owner/domain"`.
    OwnerDomain(TenantId, Domain),
}

/// `include_shared`: every live grant of the caller (`"all"`) or the listed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedSelector {
    All,
    Some(Vec<SharedRef>),
}

impl SharedSelector {
    /// Parses `include_shared`; errors name the field.
    pub fn parse(v: &serde_json::Value) -> Result<SharedSelector, String> {
        use serde_json::Value;
        let bad = |why: &str| format!("include_shared: {why}");
        match v {
            Value::String(s) if s == "all" => Ok(SharedSelector::All),
            Value::Array(items) => {
                if items.len() > MAX_SHARED_SELECTORS {
                    return Err(bad(&format!("at most {MAX_SHARED_SELECTORS} entries")));
                }
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let Value::String(s) = item else {
                        return Err(bad("entries are share ids or \"owner/domain\" strings"));
                    };
                    out.push(SharedRef::parse(s).map_err(|e| bad(&e))?);
                }
                Ok(SharedSelector::Some(out))
            }
            _ => Err(bad(
                "expected \"all\" or a list of share ids and \"owner/domain\" strings",
            )),
        }
    }

    /// Whether the grant `id` of `owner`'s `domain` is selected.
    pub fn selects(&self, id: &str, owner: &TenantId, domain: &Domain) -> bool {
        match self {
            SharedSelector::All => true,
            SharedSelector::Some(refs) => refs.iter().any(|r| match r {
                SharedRef::Id(i) => i == id,
                SharedRef::OwnerDomain(o, d) => o == owner && d == domain,
            }),
        }
    }
}

impl SharedRef {
    fn parse(s: &str) -> Result<SharedRef, String> {
        match s.split_once('/') {
            Some((owner, domain)) => Ok(SharedRef::OwnerDomain(
                TenantId::parse(owner).map_err(|e| e.to_string())?,
                Domain::parse(domain).map_err(|e| e.to_string())?,
            )),
            None => {
                // Share ids are names too: the same alphabet, so they never contain a `/`.
                // The reason alone: the caller prefixes the field (`include_shared: `) once.
                let id = crate::RecordId::parse_field("include_shared", s).map_err(|e| e.reason)?;
                Ok(SharedRef::Id(id.as_str().to_owned()))
            }
        }
    }
}

/// The OpenAPI schema of `include_shared`: `"all"`, or a list of share ids and
/// `"owner/domain"` strings.
pub fn include_shared_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["all"])),
        )
        .item(
            ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String))
                .max_items(Some(MAX_SHARED_SELECTORS)),
        )
        .build();
    Schema::OneOf(one_of)
}

impl<'de> Deserialize<'de> for SharedSelector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        SharedSelector::parse(&v).map_err(serde::de::Error::custom)
    }
}

/// Where a search hit from a shared domain came from. Hits from the caller's own tenant carry
/// none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HitSource {
    /// The tenant that published the domain.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    #[schema(value_type = String)]
    pub domain: Domain,
    /// The share (grant) the hit was read through.
    pub share: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_all_ids_and_owner_domain() {
        assert_eq!(
            SharedSelector::parse(&json!("all")).unwrap(),
            SharedSelector::All
        );
        let s = SharedSelector::parse(&json!(["sh-1", "org/kb"])).unwrap();
        let (org, kb) = (
            TenantId::parse("org").unwrap(),
            Domain::parse("kb").unwrap(),
        );
        assert!(s.selects("sh-1", &org, &Domain::parse("x").unwrap()));
        assert!(s.selects("other", &org, &kb));
        assert!(!s.selects("other", &TenantId::parse("b").unwrap(), &kb));
    }

    #[test]
    fn refuses_what_is_not_a_selector_naming_the_field() {
        for bad in [
            json!("some"),
            json!(3),
            json!([1]),
            json!(["a/b/c"]),
            json!(["bad id"]),
            json!({"all": true}),
        ] {
            let e = SharedSelector::parse(&bad).unwrap_err();
            assert!(e.starts_with("include_shared: "), "{bad}: {e}");
            assert_eq!(e.matches("include_shared").count(), 1, "named once: {e}");
        }
        let e = SharedSelector::parse(&json!([""])).unwrap_err();
        assert!(e.starts_with("include_shared: must be 1 to"), "{e}");
        let many: Vec<String> = (0..=MAX_SHARED_SELECTORS)
            .map(|i| format!("s{i}"))
            .collect();
        assert!(SharedSelector::parse(&json!(many)).is_err());
    }
}
