//! OpenAPI schemas of the types whose JSON form serde derives cannot describe: validated names
//! (strings with a pattern), principal selectors and the filter language. The derived schemas
//! of every other type sit on the types themselves, so the document the server publishes is
//! generated from the same definitions it parses and answers with.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::{
    CollectionName, Domain, Filter, Kind, MemoryScope, RecordId, Relation, RunId, TenantId,
    TokenSelector, UserToken,
};

const NAME_PATTERN: &str = "^[a-zA-Z0-9_.-]{1,64}$";
const TOKEN_PATTERN: &str = "^[a-zA-Z0-9_.:-]{1,64}$";

fn name_schema(pattern: &str, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(64))
        .description(Some(description))
        .into()
}

macro_rules! name_schemas {
    ($($name:ident: $pattern:expr, $description:literal;)*) => {$(
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                name_schema($pattern, $description)
            }
        }
        impl ToSchema for $name {}
    )*};
}

name_schemas! {
    TenantId: NAME_PATTERN, "A tenant id.";
    Domain: NAME_PATTERN, "A memory domain (namespace) inside a tenant; `default` when absent.";
    CollectionName: NAME_PATTERN, "A collection name (`text`, `image`, `audio` or the tenant's own).";
    RunId: NAME_PATTERN, "A run (session or task).";
    MemoryScope: NAME_PATTERN, "The narrowest local scope (one asset, one workspace).";
    RecordId: NAME_PATTERN, "A record id: the server's UUIDv7 or the client's own.";
    Kind: NAME_PATTERN, "A free label such as `episodic` or `semantic`.";
    UserToken: TOKEN_PATTERN, "A principal inside the tenant, such as `u:alice`.";
    Relation: TOKEN_PATTERN, "The label of a link between two memories, such as `next` or `causes`.";
}

impl PartialSchema for TokenSelector {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^([a-zA-Z0-9_.:-]{1,64}|\\*)$")),
            )
            .description(Some(
                "Principals the request speaks for. `[\"*\"]` alone means every principal \
                 (needs the `all_principals` permission and an unbound credential); `[]` means \
                 only tenant-shared records.",
            ))
            .into()
    }
}
impl ToSchema for TokenSelector {}

impl PartialSchema for Filter {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .description(Some(
                "A Mongo-style filter over metadata paths and built-in fields (`created_at`, \
                 `updated_at`, `expires_at`, `kind`, `confidence`, …): `{\"field\": value}`, \
                 `{\"field\": {\"$eq\"|\"$ne\"|\"$gt\"|\"$gte\"|\"$lt\"|\"$lte\": v}}`, \
                 `{\"field\": {\"$in\"|\"$nin\": [...]}}`, `{\"field\": {\"$exists\": bool}}`, \
                 `{\"$and\"|\"$or\": [filters]}`. At most 1024 clauses, nested at most 32 \
                 deep, and at most 1024 values compared in all (each comparison counts one, each \
                 value of an `$in` or `$nin` one); past that, `400 BAD_REQUEST`. An \
                 array-valued field matches element by element, as in MongoDB: \
                 `{\"tags\": \"b\"}` matches `[\"a\", \"b\"]` (so does the whole array), a \
                 range matches if any element is in it, and `$ne`/`$nin` exclude an array that \
                 contains the value.",
            ))
            .into()
    }
}
impl ToSchema for Filter {}
