//! What a credential grants inside its tenant: permissions and optional bounds.

use serde::{Deserialize, Serialize};
use strata_types::{Domain, UserToken};

/// One permission a credential may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Read,
    Write,
    Admin,
    /// May ask for `"user_tokens": ["*"]` and see every principal's records.
    AllPrincipals,
}

impl Permission {
    const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Write,
        Permission::Admin,
        Permission::AllPrincipals,
    ];

    fn bit(self) -> u8 {
        match self {
            Permission::Read => 1,
            Permission::Write => 2,
            Permission::Admin => 4,
            Permission::AllPrincipals => 8,
        }
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u8);

impl Permissions {
    pub fn of(list: &[Permission]) -> Self {
        Permissions(list.iter().fold(0, |acc, p| acc | p.bit()))
    }

    /// `read` and `write`: what a plain application key gets.
    pub fn read_write() -> Self {
        Self::of(&[Permission::Read, Permission::Write])
    }

    pub fn has(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn list(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.has(*p))
            .collect()
    }
}

impl Serialize for Permissions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.list().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Permissions::of(&Vec::<Permission>::deserialize(d)?))
    }
}

impl utoipa::PartialSchema for Permissions {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(Permission::schema())
            .unique_items(true)
            .description(Some("The permissions a credential carries."))
            .into()
    }
}

impl utoipa::ToSchema for Permissions {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((Permission::name().into(), Permission::schema()));
    }
}

/// What a credential grants within its tenant. `None` bounds mean unbound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub permissions: Permissions,
    /// The principals the credential acts for; requests may name only a subset.
    pub user_tokens: Option<Vec<UserToken>>,
    /// The domains the credential may touch.
    pub domains: Option<Vec<Domain>>,
}

impl Grant {
    /// Unbound read and write.
    pub fn read_write() -> Self {
        Grant {
            permissions: Permissions::read_write(),
            user_tokens: None,
            domains: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_round_trip() {
        let p = Permissions::of(&[Permission::Read, Permission::AllPrincipals]);
        assert!(p.has(Permission::Read) && !p.has(Permission::Write));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"["read","all_principals"]"#);
        assert_eq!(serde_json::from_str::<Permissions>(&json).unwrap(), p);
    }
}
