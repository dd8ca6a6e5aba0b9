//! Unit tests of JWT verification: the configured issuer and audience, and near-miss claims.

use super::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "strata";

fn verifier(issuer: Option<&str>, audience: Option<&str>) -> JwtVerifier {
    JwtVerifier::new(&AuthConfig {
        jwt_hs256_secret: Some(SECRET.into()),
        jwt_issuer: issuer.map(str::to_owned),
        jwt_audience: audience.map(str::to_owned),
        ..AuthConfig::default()
    })
    .unwrap()
}

fn claims() -> Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({"tenant": "acme", "sub": "svc", "exp": now + 600, "iat": now,
           "iss": ISSUER, "aud": AUDIENCE})
}

fn token(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The log reason of a refused token, or a panic naming the case that passed.
fn refusal(v: &JwtVerifier, claims: &Value, case: &str) -> String {
    match v.verify(&token(claims)) {
        Err(AuthError::Unauthorized(why)) => why.into_owned(),
        other => panic!("{case}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_configured_issuer_and_audience_must_be_present() {
    let v = verifier(Some(ISSUER), Some(AUDIENCE));
    assert!(v.verify(&token(&claims())).is_ok());
    // Absent, null or not a string: each is refused, and the reason names the claim.
    for (claim, value) in [
        ("iss", None),
        ("iss", Some(Value::Null)),
        ("iss", Some(json!(5))),
        ("aud", None),
        ("aud", Some(Value::Null)),
        ("aud", Some(json!(5))),
    ] {
        let mut c = claims();
        match &value {
            Some(x) => c[claim] = x.clone(),
            None => {
                c.as_object_mut().unwrap().remove(claim);
            }
        }
        let why = refusal(&v, &c, &format!("{claim} = {value:?}"));
        assert!(why.contains(claim), "{claim} = {value:?}: {why}");
    }
    // Wrong ones and an empty audience list are refused as before.
    for (claim, value) in [
        ("iss", json!("https://other")),
        ("aud", json!("other-service")),
        ("aud", json!([])),
    ] {
        let mut c = claims();
        c[claim] = value.clone();
        let why = refusal(&v, &c, &format!("{claim} = {value}"));
        assert!(why.contains(claim), "{claim} = {value}: {why}");
    }
    // Both gone: refused too.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iss");
    c.as_object_mut().unwrap().remove("aud");
    refusal(&v, &c, "neither");
}

#[test]
fn without_a_configured_issuer_none_is_required() {
    let v = verifier(None, None);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iss");
    c.as_object_mut().unwrap().remove("aud");
    assert!(v.verify(&token(&c)).is_ok());
    // Nor checked: any issuer and audience are taken.
    c["iss"] = json!("https://anyone");
    c["aud"] = json!("someone");
    assert!(v.verify(&token(&c)).is_ok());
}

#[test]
fn near_misses_of_every_claim_strata_reads_are_refused_by_name() {
    let v = verifier(Some(ISSUER), Some(AUDIENCE));
    for name in [
        "userTokens",
        "user-tokens",
        "user_tokens ",
        "user_tokens\u{200b}",
        "user_token",
        "usertoken",
        "usertokens",
        "memory_user_tokens",
        "Domains",
        "domain",
        "domains ",
        " domains",
        "memory_domains",
        "memory_domain",
        "memory-domain",
        "domains\u{feff}",
        "d.o.m.a.i.n.s",
        "PERMISSIONS",
        "permission",
        "memory_permissions",
        "Tenant",
        "tenants",
        "Sub",
        "IAT",
    ] {
        let mut c = claims();
        c[name] = json!(["x"]);
        let why = refusal(&v, &c, &format!("{name:?}"));
        assert!(
            why.contains(&quoted(name)) && why.contains("spelled like one Strata reads"),
            "{name:?}: {why}"
        );
    }
}

#[test]
fn claims_of_other_meanings_still_pass() {
    let v = verifier(Some(ISSUER), Some(AUDIENCE));
    let mut c = claims();
    for (name, value) in [
        ("email", json!("a@example.com")),
        ("name", json!("Alice")),
        ("scope", json!("openid profile")),
        ("groups", json!(["admins"])),
        ("roles", json!(["reader"])),
        ("azp", json!("client-1")),
        ("tid", json!("9188040d")),
        ("tenant_id", json!("acme")),
        ("preferred_username", json!("alice")),
        ("memory_scope", json!("s")),
        ("nbf", json!(0)),
        ("jti", json!("j1")),
    ] {
        c[name] = value;
    }
    assert!(v.verify(&token(&c)).is_ok());
}

#[test]
fn a_refused_claim_name_is_quoted_escaped_and_cut() {
    assert_eq!(quoted("domains "), "\"domains \"");
    assert_eq!(quoted("user_tokens\u{200b}"), "\"user_tokens\\u{200b}\"");
    assert_eq!(quoted("a\nb"), "\"a\\nb\"");
    let long = "d".repeat(1000);
    assert_eq!(quoted(&long).len(), MAX_QUOTED_CLAIM + 2);
}

#[test]
fn near_miss_forms() {
    for (name, form) in [
        ("user_tokens", "usertoken"),
        ("User-Token", "usertoken"),
        ("memory_domains", "domain"),
        ("domains\u{200b} ", "domain"),
        ("permissions", "permission"),
        ("iat", "iat"),
        ("sub", "sub"),
        ("email", "email"),
    ] {
        assert_eq!(near_miss_form(name), form, "{name:?}");
    }
}

#[test]
fn a_null_optional_claim_is_refused_not_read_as_absent() {
    let v = verifier(Some(ISSUER), Some(AUDIENCE));
    // A null binding would otherwise leave the token unbound: every principal's records.
    for claim in ["user_tokens", "domains", "permissions"] {
        let mut c = claims();
        c[claim] = Value::Null;
        let why = refusal(&v, &c, claim);
        assert!(why.contains("null"), "{claim}: {why}");
    }
    // A null label grants nothing: issuers that write every unset field as null still work.
    let mut c = claims();
    c["sub"] = Value::Null;
    assert!(v.verify(&token(&c)).unwrap().sub.is_none());
    // Absent and empty lists still decode as before.
    let mut c = claims();
    c["user_tokens"] = json!([]);
    c["domains"] = json!([]);
    let got = v.verify(&token(&c)).unwrap();
    assert_eq!(got.user_tokens, Some(vec![]));
    assert_eq!(got.domains, Some(vec![]));
    let got = v.verify(&token(&claims())).unwrap();
    assert!(got.user_tokens.is_none() && got.domains.is_none() && got.permissions.is_none());
}

/// A hard-deleted tenant id waits out the leeway before it is created again, so the leeway is
/// bounded.
#[test]
fn the_leeway_is_at_most_five_minutes() {
    let with = |leeway| {
        JwtVerifier::new(&AuthConfig {
            jwt_hs256_secret: Some(SECRET.into()),
            jwt_leeway_secs: leeway,
            ..AuthConfig::default()
        })
    };
    assert!(with(300).is_ok());
    let Err(AuthError::Config(m)) = with(301) else {
        panic!("a leeway of 301 s is refused")
    };
    assert!(m.contains("jwt_leeway_secs: at most 300"), "{m}");
}
