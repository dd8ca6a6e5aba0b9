//! What a credential bound to user tokens or domains may not do (docs/isolation.md, rule 2):
//! write a record it could not have written itself (`Visibility::check_writable`) — a
//! tenant-shared record, or one co-owned with a principal outside its binding — by patch,
//! delete, delete by filter, upsert, evidence or links; or act on the whole tenant
//! (`crate::whole_tenant`).

use serde_json::json;
use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_types::{
    CollectionName, Domain, Evidence, Filter, Metric, NewLink, NewRecord, RecordId, RecordPatch,
    RequestScope, TenantId, TokenSelector, UserToken,
};

use crate::audit::AuditQuery;
use crate::scan::Page;
use crate::{Engine, EngineConfig, EngineError};

fn scope(engine: &Engine, tokens: Option<&[&str]>) -> TenantScope {
    bound_scope(engine, tokens, None)
}

fn bound_scope(engine: &Engine, tokens: Option<&[&str]>, domains: Option<&[&str]>) -> TenantScope {
    let grant = Grant {
        permissions: Permissions::of(&[
            Permission::Read,
            Permission::Write,
            Permission::Admin,
            Permission::AllPrincipals,
        ]),
        user_tokens: tokens.map(|t| t.iter().map(|t| UserToken::parse(*t).unwrap()).collect()),
        domains: domains.map(|d| d.iter().map(|d| Domain::parse(*d).unwrap()).collect()),
    };
    let meta = engine
        .tenant_meta(&TenantId::parse("acme").unwrap())
        .unwrap();
    TenantScope::for_tests(&meta, grant)
}

fn id(s: &str) -> RecordId {
    RecordId::parse(s).unwrap()
}

fn record(name: &str, tokens: &[&str]) -> NewRecord {
    NewRecord {
        id: Some(id(name)),
        modality: Some(CollectionName::parse("c").unwrap()),
        content: Some(format!("about {name}")),
        vector: Some(vec![0.5, 0.5]),
        user_tokens: Some(
            tokens
                .iter()
                .map(|t| UserToken::parse(*t).unwrap())
                .collect(),
        ),
        ..Default::default()
    }
}

fn everyone() -> RequestScope {
    RequestScope {
        user_tokens: Some(TokenSelector::AllPrincipals),
        ..Default::default()
    }
}

fn patch(body: serde_json::Value) -> RecordPatch {
    serde_json::from_value(body).unwrap()
}

/// Tenant `acme` with collection `c` holding `shared` (no tokens), `alice` (`u:alice`),
/// `both` (`u:alice`, `u:bob`) and `bob` (`u:bob`); the unbound scope and Alice's.
fn tenant(dir: &std::path::Path) -> (Engine, TenantScope, TenantScope) {
    let engine = Engine::open(dir, EngineConfig::default()).unwrap();
    engine
        .create_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse("acme").unwrap(),
            None,
        )
        .unwrap();
    let unbound = scope(&engine, None);
    engine
        .create_collection(
            &unbound,
            &CollectionName::parse("c").unwrap(),
            2,
            Metric::L2,
        )
        .unwrap();
    let records = vec![
        record("shared", &[]),
        record("alice", &["u:alice"]),
        record("both", &["u:alice", "u:bob"]),
        record("bob", &["u:bob"]),
    ];
    engine.put(&unbound, &everyone(), records).unwrap();
    let alice = scope(&engine, Some(&["u:alice"]));
    (engine, unbound, alice)
}

fn forbidden<T: std::fmt::Debug>(got: Result<T, EngineError>) {
    assert!(
        matches!(got, Err(EngineError::ScopeForbidden(_))),
        "{got:?}"
    );
}

fn ids(engine: &Engine, s: &TenantScope) -> Vec<String> {
    let page = Page {
        after: None,
        limit: 100,
    };
    let page = engine.scan(s, &everyone(), None, page).unwrap();
    page.records.into_iter().map(|r| r.id.to_string()).collect()
}

#[test]
fn a_token_bound_credential_cannot_patch_a_record_it_may_only_read() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, unbound, alice) = tenant(dir.path());
    let req = RequestScope::default();
    for target in ["shared", "both"] {
        for body in [
            json!({"content": "rewritten"}),
            json!({"user_tokens": ["u:alice"]}),
            json!({"move_to_domain": "alicedom"}),
            json!({"metadata": {"x": 1}}),
        ] {
            forbidden(engine.patch(&alice, &req, &id(target), patch(body)));
        }
    }
    // Its own principal's record it may patch; one it cannot see stays a missing id.
    let own = engine.patch(
        &alice,
        &req,
        &id("alice"),
        patch(json!({"content": "mine"})),
    );
    assert_eq!(own.unwrap().content.as_deref(), Some("mine"));
    let hidden = engine.patch(&alice, &req, &id("bob"), patch(json!({"content": "x"})));
    assert!(matches!(hidden, Err(EngineError::NotFound)), "{hidden:?}");
    // Nothing was changed by the refusals.
    let shared = engine.get(&unbound, &everyone(), &id("shared")).unwrap();
    assert_eq!(shared.content.as_deref(), Some("about shared"));
    assert!(shared.user_tokens.is_empty());
    let both = engine.get(&unbound, &everyone(), &id("both")).unwrap();
    assert_eq!(both.user_tokens.len(), 2);
    // An unbound credential still patches tenant-shared records.
    engine
        .patch(
            &unbound,
            &req,
            &id("shared"),
            patch(json!({"content": "ok"})),
        )
        .unwrap();
}

#[test]
fn a_token_bound_credential_deletes_only_what_it_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, unbound, alice) = tenant(dir.path());
    let req = RequestScope::default();
    forbidden(engine.delete(&alice, &req, &id("shared")));
    forbidden(engine.delete(&alice, &req, &id("both")));
    let hidden = engine.delete(&alice, &req, &id("bob"));
    assert!(matches!(hidden, Err(EngineError::NotFound)), "{hidden:?}");
    // By filter: it sees shared, alice and both, and deletes only its own.
    let all = Filter::parse(&json!({})).unwrap();
    assert_eq!(engine.delete_where(&alice, &req, &all).unwrap(), 1);
    assert_eq!(ids(&engine, &unbound), ["bob", "both", "shared"]);
}

#[test]
fn a_token_bound_credential_cannot_take_over_a_record_by_upsert() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, unbound, alice) = tenant(dir.path());
    let req = RequestScope::default();
    for target in ["shared", "both"] {
        forbidden(engine.put(&alice, &req, vec![record(target, &["u:alice"])]));
    }
    assert!(
        engine
            .get(&unbound, &everyone(), &id("shared"))
            .unwrap()
            .user_tokens
            .is_empty()
    );
    // Its own record it replaces as before.
    let out = engine
        .put(&alice, &req, vec![record("alice", &["u:alice"])])
        .unwrap();
    assert!(!out[0].created);
}

#[test]
fn a_token_bound_credential_cannot_give_evidence_on_a_record_it_may_only_read() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, unbound, alice) = tenant(dir.path());
    let req = RequestScope::default();
    let before = engine.get(&unbound, &everyone(), &id("shared")).unwrap();
    forbidden(engine.add_evidence(&alice, &req, &id("shared"), Evidence::Contradict));
    let after = engine.get(&unbound, &everyone(), &id("shared")).unwrap();
    assert_eq!(before.confidence, after.confidence);
    engine
        .add_evidence(&alice, &req, &id("alice"), Evidence::Corroborate)
        .unwrap();
}

#[test]
fn a_token_bound_credential_links_only_from_or_to_a_record_it_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, unbound, alice) = tenant(dir.path());
    let req = RequestScope::default();
    let link = |s: &str, t: &str| -> NewLink {
        serde_json::from_value(json!({"source": s, "target": t})).unwrap()
    };
    forbidden(engine.link(&alice, &req, link("shared", "both")));
    engine.link(&alice, &req, link("alice", "shared")).unwrap();
    engine.link(&alice, &req, link("shared", "alice")).unwrap();
    // The unbound credential's link between two shared records is not Alice's to remove.
    engine
        .link(&unbound, &everyone(), link("shared", "both"))
        .unwrap();
    let which = serde_json::from_value(json!({"source": "shared", "target": "both"})).unwrap();
    forbidden(engine.unlink(&alice, &req, &which));
    let mine = serde_json::from_value(json!({"source": "alice", "target": "shared"})).unwrap();
    engine.unlink(&alice, &req, &mine).unwrap();
}

#[test]
fn a_bound_admin_credential_cannot_act_on_the_whole_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, unbound, _) = tenant(dir.path());
    let c = CollectionName::parse("c").unwrap();
    let other = CollectionName::parse("other").unwrap();
    for bound in [
        bound_scope(&engine, None, Some(&["public"])),
        bound_scope(&engine, Some(&["u:carol"]), None),
        bound_scope(&engine, Some(&["u:alice"]), Some(&["default"])),
    ] {
        forbidden(engine.delete_collection(&bound, &c));
        forbidden(engine.create_collection(&bound, &other, 2, Metric::L2));
        forbidden(engine.own_audit_rows(&bound, &AuditQuery::default()));
        forbidden(engine.own_usage(&bound));
        forbidden(engine.adaptive_stats(&bound));
        forbidden(engine.index_stats(&bound));
        forbidden(engine.reembed_plan(&bound, &c));
        forbidden(engine.reembed_start(&bound, &c));
        forbidden(engine.reembed_status(&bound, &c));
    }
    // Nothing was deleted; the unbound credential still does all of it.
    assert_eq!(ids(&engine, &unbound).len(), 4);
    assert!(
        !engine
            .own_audit_rows(&unbound, &AuditQuery::default())
            .unwrap()
            .is_empty()
    );
    engine.own_usage(&unbound).unwrap();
    assert_eq!(engine.delete_collection(&unbound, &c).unwrap(), 4);
}

/// An unbound `admin` credential without `all_principals` never sees a principal's private
/// records, so it may not delete them with their collection, re-embed them, read the audit rows
/// that name them, nor count them (docs/isolation.md, rules 3 and 4); it may still create a
/// collection, which changes and counts no record.
#[test]
fn an_unbound_admin_without_all_principals_cannot_reach_every_principals_records() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, unbound, _) = tenant(dir.path());
    let meta = engine
        .tenant_meta(&TenantId::parse("acme").unwrap())
        .unwrap();
    let admin = TenantScope::for_tests(
        &meta,
        Grant {
            permissions: Permissions::of(&[Permission::Read, Permission::Write, Permission::Admin]),
            user_tokens: None,
            domains: None,
        },
    );
    let c = CollectionName::parse("c").unwrap();
    fn lacks_all_principals<T: std::fmt::Debug>(got: Result<T, EngineError>) {
        assert!(
            matches!(
                got,
                Err(EngineError::PermissionDenied(Permission::AllPrincipals))
            ),
            "{got:?}"
        );
    }
    lacks_all_principals(engine.delete_collection(&admin, &c));
    lacks_all_principals(engine.own_audit_rows(&admin, &AuditQuery::default()));
    lacks_all_principals(engine.own_usage(&admin));
    lacks_all_principals(engine.adaptive_stats(&admin));
    lacks_all_principals(engine.index_stats(&admin));
    lacks_all_principals(engine.reembed_plan(&admin, &c));
    lacks_all_principals(engine.reembed_start(&admin, &c));
    lacks_all_principals(engine.reembed_status(&admin, &c));
    // The collection and every principal's records in it are still there.
    assert_eq!(ids(&engine, &unbound).len(), 4);
    assert!(
        engine
            .collections(&unbound)
            .unwrap()
            .iter()
            .any(|col| col.name == c)
    );
    // A new collection holds no record: `admin` alone creates it.
    let other = CollectionName::parse("other").unwrap();
    engine
        .create_collection(&admin, &other, 2, Metric::L2)
        .unwrap();
}
