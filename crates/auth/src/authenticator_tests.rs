//! Unit tests of the authenticator: API key life cycle and JWT verification.

use super::*;
use crate::KEY_PREFIX;
use crate::keys::{RotatedKey, Rotation};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use strata_store::{Reads, Store};

const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";
// Throwaway Ed25519 test keys (generated with `openssl genpkey -algorithm ed25519`).
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIM+/f0gT0gVhdROVVrBw/0w1JLqRAkEYHnoXQ/DrXNQ9
-----END PRIVATE KEY-----
";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAyePH9yi6BUHxahjGhFDZtl0+EvVCq7Y4pJL/cpmaJ+M=
-----END PUBLIC KEY-----
";
const ED_OTHER_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILQUVU09SLTRhKsPqH988T1V9MirMmtgdOyQSg58xSHU
-----END PRIVATE KEY-----
";

/// Key changes here write no audit row (the engine's rows are tested over HTTP).
const NO_AUDIT: &KeyAudit<'static> = &|_, _, _, _| Ok(());

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    auth: Authenticator,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    store
        .write(|w| {
            w.create_tenant(&TenantId::parse("acme").unwrap(), 0, Default::default())
                .map(|_| ())
        })
        .unwrap();
    let config = AuthConfig {
        jwt_hs256_secret: Some(HS_SECRET.into()),
        jwt_eddsa_public_key: Some(ED_PUBLIC.into()),
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(&config, None).unwrap();
    Fixture {
        _dir: dir,
        store,
        auth,
    }
}

fn operator() -> OperatorScope {
    OperatorScope::new("test".into())
}

fn tenant_key(f: &Fixture, expires_at: Option<i64>) -> CreatedKey {
    let new = NewKey {
        tenant: KeyTenant::Tenant(TenantId::parse("acme").unwrap()),
        name: None,
        permissions: Permissions::of(&[Permission::Read]),
        user_tokens: Some(vec![UserToken::parse("u:alice").unwrap()]),
        domains: None,
        expires_at,
    };
    f.auth
        .create_key(f.store.credentials(), &operator(), new, NO_AUDIT)
        .unwrap()
}

fn unauthorized(r: Result<Principal, AuthError>) -> String {
    match r {
        Err(AuthError::Unauthorized(why)) => why.into_owned(),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[test]
fn api_key_authenticates_to_its_tenant_and_grant() {
    let f = fixture();
    let key = tenant_key(&f, None);
    assert!(key.secret.starts_with(KEY_PREFIX));
    let Principal::Tenant(scope) = f
        .auth
        .authenticate(f.store.credentials(), &key.secret)
        .unwrap()
    else {
        panic!("expected a tenant scope");
    };
    assert_eq!(scope.tenant().as_str(), "acme");
    assert_eq!(
        scope.grant().permissions,
        Permissions::of(&[Permission::Read])
    );
    assert_eq!(scope.actor(), format!("key:{}", key.info.id));
}

#[test]
fn only_the_hash_is_stored() {
    let f = fixture();
    let key = tenant_key(&f, None);
    let row = f.store.credentials().get(&key.info.id).unwrap().unwrap();
    let row = String::from_utf8(row.body).unwrap();
    let secret_part = key.secret.rsplit('_').next().unwrap();
    assert!(!row.contains(secret_part), "secret stored in clear: {row}");
}

#[test]
fn wrong_secret_revoked_and_expired_keys_are_refused() {
    let f = fixture();
    let key = tenant_key(&f, None);
    // Same id, different secret: the row is found, the hash does not match.
    let mut forged = key.secret.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        unauthorized(f.auth.authenticate(f.store.credentials(), &forged)),
        "wrong api key secret"
    );
    assert_eq!(
        unauthorized(f.auth.authenticate(f.store.credentials(), "sk_nope")),
        "malformed api key"
    );
    assert_eq!(
        unauthorized(f.auth.authenticate(f.store.credentials(), "")),
        "empty bearer token"
    );

    f.auth
        .revoke_key(f.store.credentials(), &operator(), &key.info.id, NO_AUDIT)
        .unwrap();
    assert_eq!(
        unauthorized(f.auth.authenticate(f.store.credentials(), &key.secret)),
        "revoked api key"
    );

    let expired = tenant_key(&f, Some(1));
    assert_eq!(
        unauthorized(f.auth.authenticate(f.store.credentials(), &expired.secret)),
        "expired api key"
    );
}

fn rotate(f: &Fixture, id: &str, rotation: Rotation) -> Result<RotatedKey, AuthError> {
    f.auth
        .rotate_key(f.store.credentials(), &operator(), id, rotation, NO_AUDIT)
}

#[test]
fn a_rotated_key_has_a_successor_with_its_grant_and_works_until_its_deadline() {
    let f = fixture();
    let later = now_millis() + 3_600_000;
    let old = tenant_key(&f, Some(later + 1_000));
    let rotation = Rotation {
        old_until: Some(now_millis() + 60_000),
        expires_at: None,
    };
    let r = rotate(&f, &old.info.id, rotation).unwrap();
    assert_ne!(r.created.info.id, old.info.id);
    // The successor: same tenant, permissions and bindings, the old key's expiry.
    let Principal::Tenant(scope) = f
        .auth
        .authenticate(f.store.credentials(), &r.created.secret)
        .unwrap()
    else {
        panic!("expected a tenant scope");
    };
    assert_eq!(scope.tenant().as_str(), "acme");
    assert_eq!(scope.grant(), &old.info.grant());
    assert_eq!(r.created.info.expires_at, Some(later + 1_000));
    // The old key: still working, until the grace deadline (earlier than its own expiry).
    assert_eq!(r.old.expires_at, rotation.old_until);
    assert!(
        f.auth
            .authenticate(f.store.credentials(), &old.secret)
            .is_ok()
    );
    let stored = crate::key(f.store.credentials(), &operator(), &old.info.id);
    assert_eq!(stored.unwrap().expires_at, rotation.old_until);
    // A deadline later than the key's own expiry does not lengthen its life.
    let short = tenant_key(&f, Some(now_millis() + 5_000));
    let r = rotate(
        &f,
        &short.info.id,
        Rotation {
            old_until: Some(later),
            expires_at: Some(later),
        },
    )
    .unwrap();
    assert_eq!(r.old.expires_at, short.info.expires_at);
    assert_eq!(r.created.info.expires_at, Some(later));
}

#[test]
fn a_key_in_its_grace_is_not_rotated_again() {
    let f = fixture();
    let old = tenant_key(&f, None);
    let grace = Rotation {
        old_until: Some(now_millis() + 60_000),
        expires_at: None,
    };
    let first = rotate(&f, &old.info.id, grace).unwrap();
    assert_eq!(first.created.info.expires_at, None);
    // A retry would have minted a second successor dying with the first one's grace.
    match rotate(&f, &old.info.id, grace) {
        Err(AuthError::Conflict(m)) => assert!(m.contains(&first.created.info.id), "{m}"),
        other => panic!("{other:?}"),
    }
    let keys = f
        .auth
        .list_keys(f.store.credentials(), &operator(), None)
        .unwrap();
    assert_eq!(keys.len(), 2, "the refusal wrote nothing: {keys:?}");
    // The successor itself rotates as any key.
    assert!(rotate(&f, &first.created.info.id, grace).is_ok());
}

#[test]
fn rotating_without_grace_revokes_and_a_dead_key_is_not_rotated() {
    let f = fixture();
    let old = tenant_key(&f, None);
    let now = Rotation {
        old_until: None,
        expires_at: None,
    };
    let r = rotate(&f, &old.info.id, now).unwrap();
    assert!(r.old.revoked_at.is_some());
    assert_eq!(r.created.info.expires_at, None);
    assert_eq!(
        unauthorized(f.auth.authenticate(f.store.credentials(), &old.secret)),
        "revoked api key"
    );
    assert!(matches!(
        rotate(&f, &old.info.id, now),
        Err(AuthError::Conflict(_))
    ));
    let expired = tenant_key(&f, Some(1));
    assert!(matches!(
        rotate(&f, &expired.info.id, now),
        Err(AuthError::Conflict(_))
    ));
    assert!(matches!(
        rotate(&f, "0123456789abcdef", now),
        Err(AuthError::KeyNotFound)
    ));
    // Nothing was written by the refusals: the tenant has the two keys of the rotation and
    // the expired one.
    let keys = f
        .auth
        .list_keys(f.store.credentials(), &operator(), None)
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
}

#[test]
fn keys_need_an_existing_tenant() {
    let f = fixture();
    let new = NewKey {
        tenant: KeyTenant::Tenant(TenantId::parse("ghost").unwrap()),
        name: None,
        permissions: Permissions::read_write(),
        user_tokens: None,
        domains: None,
        expires_at: None,
    };
    assert!(matches!(
        f.auth
            .create_key(f.store.credentials(), &operator(), new, NO_AUDIT),
        Err(AuthError::TenantNotFound(_))
    ));
}

#[test]
fn operator_key_is_bootstrapped_once() {
    let f = fixture();
    let first = f
        .auth
        .bootstrap_operator(f.store.credentials())
        .unwrap()
        .unwrap();
    assert!(
        f.auth
            .bootstrap_operator(f.store.credentials())
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        f.auth
            .authenticate(f.store.credentials(), &first.secret)
            .unwrap(),
        Principal::Operator(_)
    ));
}

#[test]
fn env_operator_key_works_and_suppresses_bootstrap() {
    let f = fixture();
    let env_key = "an-operator-key-from-the-environment";
    let auth = Authenticator::new(&AuthConfig::default(), Some(env_key)).unwrap();
    assert!(matches!(
        auth.authenticate(f.store.credentials(), env_key).unwrap(),
        Principal::Operator(_)
    ));
    assert!(
        auth.bootstrap_operator(f.store.credentials())
            .unwrap()
            .is_none()
    );
    assert!(Authenticator::new(&AuthConfig::default(), Some("short")).is_err());
}

fn claims(exp_offset: i64) -> Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({"tenant": "acme", "sub": "svc", "permissions": ["read"],
           "user_tokens": ["u:bob"], "exp": now + exp_offset, "iat": now})
}

fn hs(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn ed(claims: &Value, private_pem: &str) -> String {
    let key = EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap();
    encode(&Header::new(jsonwebtoken::Algorithm::EdDSA), claims, &key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    // URL-safe base64 without padding, enough for hand-built test tokens.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn valid_jwts_of_both_algorithms_authenticate() {
    let f = fixture();
    for token in [
        hs(&claims(600), HS_SECRET.as_bytes()),
        ed(&claims(600), ED_PRIVATE),
    ] {
        let Principal::Tenant(scope) = f.auth.authenticate(f.store.credentials(), &token).unwrap()
        else {
            panic!("expected a tenant scope");
        };
        assert_eq!(scope.tenant().as_str(), "acme");
        assert_eq!(scope.actor(), "jwt:svc");
        assert_eq!(
            scope.grant().user_tokens,
            Some(vec![UserToken::parse("u:bob").unwrap()])
        );
    }
}

#[test]
fn jwt_attacks_are_refused() {
    let f = fixture();
    let good = hs(&claims(600), HS_SECRET.as_bytes());
    let parts: Vec<&str> = good.split('.').collect();
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(serde_json::to_string(&claims(600)).unwrap().as_bytes());
    let mut no_exp = claims(600);
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut other_tenant = claims(600);
    other_tenant["tenant"] = json!("ghost");
    let mut no_iat = claims(600);
    no_iat.as_object_mut().unwrap().remove("iat");
    let mut future_iat = claims(600);
    future_iat["iat"] = json!(jsonwebtoken::get_current_timestamp() + 3600);
    let mut crit_header = Header::new(jsonwebtoken::Algorithm::HS256);
    crit_header.crit = Some(vec!["exp-unknown".into()]);
    let crit = encode(
        &crit_header,
        &claims(600),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("alg none", format!("{none_header}.{payload}.")),
        (
            "alg none, signature kept",
            format!("{none_header}.{payload}.{}", parts[2]),
        ),
        (
            "HS256 signed with the public key",
            hs(&claims(600), ED_PUBLIC.as_bytes()),
        ),
        (
            "wrong HMAC secret",
            hs(&claims(600), b"another-secret-of-at-least-32-bytes!!"),
        ),
        ("wrong Ed25519 key", ed(&claims(600), ED_OTHER_PRIVATE)),
        (
            "tampered payload",
            format!("{}.{}.{}", parts[0], payload_with_tenant(), parts[2]),
        ),
        ("expired", hs(&claims(-600), HS_SECRET.as_bytes())),
        ("missing exp", hs(&no_exp, HS_SECRET.as_bytes())),
        ("unknown tenant", hs(&other_tenant, HS_SECRET.as_bytes())),
        ("missing iat", hs(&no_iat, HS_SECRET.as_bytes())),
        ("iat in the future", hs(&future_iat, HS_SECRET.as_bytes())),
        ("unknown crit extension", crit),
        ("garbage", "a.b.c".into()),
    ];
    for (name, token) in cases {
        assert!(
            matches!(
                f.auth.authenticate(f.store.credentials(), &token),
                Err(AuthError::Unauthorized(_))
            ),
            "{name} was accepted"
        );
    }
}

fn payload_with_tenant() -> String {
    let mut c = claims(600);
    c["permissions"] = json!(["read", "write", "admin"]);
    b64(serde_json::to_string(&c).unwrap().as_bytes())
}

#[test]
fn jwts_are_refused_when_no_key_is_configured() {
    let f = fixture();
    let auth = Authenticator::new(&AuthConfig::default(), None).unwrap();
    let token = hs(&claims(600), HS_SECRET.as_bytes());
    assert!(matches!(
        auth.authenticate(f.store.credentials(), &token),
        Err(AuthError::Unauthorized(_))
    ));
    let short = AuthConfig {
        jwt_hs256_secret: Some("short".into()),
        ..AuthConfig::default()
    };
    assert!(Authenticator::new(&short, None).is_err());
}

/// Deletes tenant `acme` and creates it again, as a purge and a later create would.
fn recreate_acme(f: &Fixture, created_at: i64) {
    let id = TenantId::parse("acme").unwrap();
    f.store
        .write(|w| {
            let meta = w.tenant(&id)?.unwrap();
            w.erase_tenant(&meta)?;
            w.create_tenant(&id, created_at, Default::default())
                .map(|_| ())
        })
        .unwrap();
}

#[test]
fn credentials_never_outlive_their_tenant_incarnation() {
    let f = fixture();
    let key = tenant_key(&f, None);
    let mut old_claims = claims(600);
    // Issued two seconds before the tenant is created again.
    old_claims["iat"] = json!(jsonwebtoken::get_current_timestamp() - 2);
    let old_jwt = hs(&old_claims, HS_SECRET.as_bytes());
    assert!(f.auth.authenticate(f.store.credentials(), &old_jwt).is_ok());
    // Created again a second ago, so a token minted now is of a later second.
    recreate_acme(&f, strata_types::now_millis() - 1000);
    // Erasing the tenant erased its key's row; the old JWT predates the new incarnation.
    assert_eq!(
        unauthorized(f.auth.authenticate(f.store.credentials(), &key.secret)),
        "unknown api key"
    );
    assert!(f.store.credentials().get(&key.info.id).unwrap().is_none());
    assert_eq!(
        unauthorized(f.auth.authenticate(f.store.credentials(), &old_jwt)),
        "credential was issued for a deleted tenant of the same id"
    );
    // Credentials issued for the new incarnation work.
    let fresh = tenant_key(&f, None);
    assert!(
        f.auth
            .authenticate(f.store.credentials(), &fresh.secret)
            .is_ok()
    );
    let new_jwt = hs(&claims(600), HS_SECRET.as_bytes());
    assert!(f.auth.authenticate(f.store.credentials(), &new_jwt).is_ok());
}

#[test]
fn a_key_row_of_an_older_incarnation_is_refused_even_if_it_survived() {
    let f = fixture();
    let key = tenant_key(&f, None);
    // Simulate a row that survived its tenant: copy it aside, re-create the tenant, put the
    // row back exactly as it was (owner = the old incarnation's storage key).
    let row = f.store.credentials().get(&key.info.id).unwrap().unwrap();
    recreate_acme(&f, 0);
    f.store
        .credentials()
        .restore_for_tests(&key.info.id, &row)
        .unwrap();
    assert_eq!(
        unauthorized(f.auth.authenticate(f.store.credentials(), &key.secret)),
        "credential was issued for a deleted tenant of the same id"
    );
}

#[test]
fn legacy_key_rows_are_upgraded_to_the_current_incarnation_at_start() {
    let f = fixture();
    let key = tenant_key(&f, None);
    let row = f.store.credentials().get(&key.info.id).unwrap().unwrap();
    // A row as versions before incarnations wrote it: the bare JSON body, no owner.
    let legacy = strata_store::StoredCredential {
        owner: None,
        body: row.body.clone(),
    };
    f.store
        .credentials()
        .restore_for_tests(&key.info.id, &legacy)
        .unwrap();
    assert_eq!(
        unauthorized(f.auth.authenticate(f.store.credentials(), &key.secret)),
        "api key has no tenant incarnation"
    );
    f.auth.bootstrap_operator(f.store.credentials()).unwrap();
    assert_eq!(
        f.store.credentials().get(&key.info.id).unwrap().unwrap(),
        row
    );
    assert!(
        f.auth
            .authenticate(f.store.credentials(), &key.secret)
            .is_ok()
    );
}

#[test]
fn a_jwt_is_accepted_from_the_second_its_tenant_was_created_in() {
    let f = fixture();
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let token = |iat: i64| {
        let mut c = claims(600);
        c["iat"] = json!(iat);
        hs(&c, HS_SECRET.as_bytes())
    };
    // Created half-way through a second, and exactly at the start of one. (A token of an
    // earlier incarnation never carries the creation second: the engine re-creates an id only
    // in a later second than its purge.)
    for created_at in [(now - 10) * 1000 + 500, (now - 10) * 1000] {
        recreate_acme(&f, created_at);
        assert_eq!(
            unauthorized(f.auth.authenticate(f.store.credentials(), &token(now - 11))),
            "credential was issued for a deleted tenant of the same id",
            "created at {created_at}"
        );
        for iat in [now - 10, now - 9] {
            assert!(
                f.auth
                    .authenticate(f.store.credentials(), &token(iat))
                    .is_ok(),
                "iat {iat}, created at {created_at}"
            );
        }
    }
    // An absurd `iat` is compared without overflow (and refused as from the future).
    assert!(
        f.auth
            .authenticate(f.store.credentials(), &token(i64::MAX))
            .is_err()
    );
}

#[test]
fn a_jwt_subject_is_bounded_and_has_no_control_characters() {
    let f = fixture();
    let with_sub = |sub: &str| {
        let mut c = claims(600);
        c["sub"] = json!(sub);
        hs(&c, HS_SECRET.as_bytes())
    };
    for sub in [
        "a\nb",
        "a\u{7f}",
        "a\u{2028}b",
        "admin\u{202e}nimda",
        "a\u{200b}b",
        &"s".repeat(257),
    ] {
        assert_eq!(
            unauthorized(f.auth.authenticate(f.store.credentials(), &with_sub(sub))),
            "jwt sub is too long or has control characters"
        );
    }
    assert!(
        f.auth
            .authenticate(f.store.credentials(), &with_sub(&"s".repeat(256)))
            .is_ok()
    );
    // Letters of any script are fine.
    assert!(
        f.auth
            .authenticate(f.store.credentials(), &with_sub("svc:übersetzer-日本"))
            .is_ok()
    );
}

#[test]
fn a_jwt_with_a_misspelt_claim_strata_reads_is_refused() {
    let f = fixture();
    // Meant to bind the token to a domain; ignored, it would act for the whole tenant.
    for (name, value) in [
        ("Domains", json!(["support"])),
        ("userTokens", json!(["u:bob"])),
        ("user-tokens", json!(["u:bob"])),
        ("PERMISSIONS", json!(["read"])),
    ] {
        let mut c = claims(600);
        c[name] = value;
        assert!(
            unauthorized(
                f.auth
                    .authenticate(f.store.credentials(), &hs(&c, HS_SECRET.as_bytes()))
            )
            .contains("spelled like one Strata reads"),
            "{name}"
        );
    }
    // Claims of other meanings are ignored, as issuers add their own.
    let mut c = claims(600);
    c["azp"] = json!("client-1");
    c["scope"] = json!("openid");
    c["nbf"] = json!(0);
    assert!(
        f.auth
            .authenticate(f.store.credentials(), &hs(&c, HS_SECRET.as_bytes()))
            .is_ok()
    );
}

#[test]
fn bindings_to_more_user_tokens_than_the_limit_are_refused() {
    let mut f = fixture();
    f.auth = f.auth.with_max_user_tokens(3);
    let tokens = |n: usize| (0..n).map(|i| format!("u:{i}")).collect::<Vec<_>>();
    // A JWT: a bad credential, with the reason in the log.
    for (n, ok) in [(3, true), (4, false), (2000, false)] {
        let mut c = claims(600);
        c["user_tokens"] = json!(tokens(n));
        let r = f
            .auth
            .authenticate(f.store.credentials(), &hs(&c, HS_SECRET.as_bytes()));
        if ok {
            assert!(r.is_ok(), "{n}: {r:?}");
        } else {
            assert!(unauthorized(r).contains("max_user_tokens"), "{n}");
        }
    }
    // A key: a bad request at creation.
    let new = |n: usize| NewKey {
        tenant: KeyTenant::Tenant(TenantId::parse("acme").unwrap()),
        name: None,
        permissions: Permissions::of(&[Permission::Read]),
        user_tokens: Some(
            tokens(n)
                .iter()
                .map(|t| UserToken::parse(t).unwrap())
                .collect(),
        ),
        domains: None,
        expires_at: None,
    };
    let creds = f.store.credentials();
    assert!(
        f.auth
            .create_key(creds, &operator(), new(3), NO_AUDIT)
            .is_ok()
    );
    match f.auth.create_key(creds, &operator(), new(1000), NO_AUDIT) {
        Err(AuthError::BadRequest(m)) => assert!(m.starts_with("user_tokens:"), "{m}"),
        other => panic!("expected a bad request, got {other:?}"),
    }
}

#[test]
fn bindings_with_repeats_or_too_many_domains_are_refused() {
    let f = fixture();
    let domains = |n: usize| (0..n).map(|i| format!("d{i}")).collect::<Vec<_>>();
    // A JWT: a bad credential, the reason naming the claim.
    for (claim, list, ok) in [
        ("domains", json!(domains(MAX_BOUND_DOMAINS)), true),
        ("domains", json!(domains(MAX_BOUND_DOMAINS + 1)), false),
        ("domains", json!(vec!["d1"; 5000]), false),
        ("domains", json!(["d1", "d2", "d1"]), false),
        ("user_tokens", json!(["u:a", "u:a"]), false),
        ("user_tokens", json!(["u:a", "u:b"]), true),
    ] {
        let mut c = claims(600);
        c[claim] = list.clone();
        let r = f
            .auth
            .authenticate(f.store.credentials(), &hs(&c, HS_SECRET.as_bytes()));
        if ok {
            assert!(r.is_ok(), "{claim} {list}: {r:?}");
        } else {
            assert!(unauthorized(r).contains(claim), "{claim} {list}");
        }
    }
    // A key: a bad request at creation, naming the field.
    let new = |tokens: &[&str], domains: &[String]| NewKey {
        tenant: KeyTenant::Tenant(TenantId::parse("acme").unwrap()),
        name: None,
        permissions: Permissions::of(&[Permission::Read]),
        user_tokens: Some(
            tokens
                .iter()
                .map(|t| UserToken::parse(t).unwrap())
                .collect(),
        ),
        domains: Some(domains.iter().map(|d| Domain::parse(d).unwrap()).collect()),
        expires_at: None,
    };
    let creds = f.store.credentials();
    let refused = |k: NewKey, field: &str| match f.auth.create_key(creds, &operator(), k, NO_AUDIT)
    {
        Err(AuthError::BadRequest(m)) => assert!(m.starts_with(field), "{m}"),
        other => panic!("expected a bad request, got {other:?}"),
    };
    refused(new(&["u:a", "u:a"], &domains(1)), "user_tokens:");
    refused(new(&["u:a"], &vec!["d1".to_owned(); 5000]), "domains:");
    refused(new(&["u:a"], &domains(MAX_BOUND_DOMAINS + 1)), "domains:");
    assert!(
        f.auth
            .create_key(
                creds,
                &operator(),
                new(&["u:a", "u:b"], &domains(MAX_BOUND_DOMAINS)),
                NO_AUDIT
            )
            .is_ok()
    );
}
