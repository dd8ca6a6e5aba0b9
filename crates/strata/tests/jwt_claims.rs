//! JWT claims against the real server: with an issuer and an audience configured, a token
//! must carry both; a claim spelled nearly like one Strata reads refuses the token rather
//! than leaving it unbound; a token bound to more user tokens than `max_user_tokens` is
//! refused. Each refusal is `401 UNAUTHORIZED`, and the log names the claim at fault.

mod common;

use common::{HS_SECRET, OPERATOR_KEY, Server, code};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "strata";

fn start() -> Server {
    let server = Server::start_with(&[
        ("STRATA__AUTH__JWT_ISSUER", ISSUER),
        ("STRATA__AUTH__JWT_AUDIENCE", AUDIENCE),
    ]);
    server.tenant("acme");
    server
}

fn claims() -> Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({"tenant": "acme", "sub": "svc", "permissions": ["read", "write"],
           "exp": now + 600, "iat": now, "iss": ISSUER, "aud": AUDIENCE})
}

fn hs(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

/// The status and code of a count by the token.
fn count(server: &Server, claims: &Value) -> (u16, String) {
    let (s, v) = server.post("/v1/memories/count", &hs(claims), json!({}));
    (s, code(&v).to_owned())
}

fn refused() -> (u16, String) {
    (401, "UNAUTHORIZED".to_owned())
}

#[test]
fn a_configured_issuer_and_audience_are_required() {
    let server = start();
    assert_eq!(count(&server, &claims()).0, 200);
    let without = |names: &[&str]| {
        let mut c = claims();
        for n in names {
            c.as_object_mut().unwrap().remove(*n);
        }
        c
    };
    let with = |name: &str, value: Value| {
        let mut c = claims();
        c[name] = value;
        c
    };
    for (case, c) in [
        ("no iss", without(&["iss"])),
        ("no aud", without(&["aud"])),
        ("neither", without(&["iss", "aud"])),
        ("iss null", with("iss", Value::Null)),
        ("aud null", with("aud", Value::Null)),
        ("iss a number", with("iss", json!(7))),
        ("aud []", with("aud", json!([]))),
        ("wrong iss", with("iss", json!("https://other"))),
        ("wrong aud", with("aud", json!("other-service"))),
    ] {
        assert_eq!(count(&server, &c), refused(), "{case}");
    }
    let log = server.log();
    assert!(
        log.contains("jwt lacks the configured issuer (claim iss"),
        "{log}"
    );
    assert!(
        log.contains("jwt lacks the configured audience (claim aud"),
        "{log}"
    );
}

#[test]
fn near_miss_binding_claims_refuse_the_token_instead_of_unbinding_it() {
    let server = start();
    // Alice's record, visible to an unbound token: what a near miss used to reveal.
    let key = server.key(
        "acme",
        json!({"permissions": ["read", "write", "all_principals"]}),
    );
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"records": [{"id": "pa", "content": "coffee", "user_tokens": ["u:alice"]}]}),
    );
    assert_eq!(s, 201, "{v}");
    for name in [
        "userTokens",
        "user_tokens ",
        "user_tokens\u{200b}",
        "user_token",
        "usertokens",
        "Domains",
        "domain",
        "domains ",
        " domains",
        "memory_domains",
        "permission",
    ] {
        let mut c = claims();
        c[name] = json!(["u:bob"]);
        let (s, v) = server.post(
            "/v1/memories/count",
            &hs(&c),
            json!({"user_tokens": ["u:alice"]}),
        );
        assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"), "{name:?}: {v}");
    }
    let log = server.log();
    for shown in [
        "memory_domains",
        "user_token",
        "usertokens",
        "user_tokens\\\\u{200b}",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("spelled like one Strata reads") && l.contains(shown)),
            "{shown} not named in the log:\n{log}"
        );
    }
    // Claims identity providers add with other meanings still pass.
    let mut c = claims();
    for (name, value) in [
        ("email", json!("alice@example.com")),
        ("name", json!("Alice")),
        ("scope", json!("openid profile")),
        ("groups", json!(["staff"])),
    ] {
        c[name] = value;
    }
    assert_eq!(count(&server, &c).0, 200);
}

#[test]
fn a_token_bound_to_more_than_max_user_tokens_is_refused() {
    let server = start();
    let bound = |n: usize| {
        let mut c = claims();
        c["user_tokens"] = json!((0..n).map(|i| format!("u:{i}")).collect::<Vec<_>>());
        c
    };
    assert_eq!(count(&server, &bound(32)).0, 200);
    for n in [33, 2000] {
        assert_eq!(count(&server, &bound(n)), refused(), "{n}");
    }
    assert!(
        server
            .log()
            .contains("jwt user_tokens: 2000 tokens, at most 32 (engine.limits.max_user_tokens)")
    );
    // The same limit for a key, refused when it is minted.
    let tokens: Vec<String> = (0..1000).map(|i| format!("u:{i}")).collect();
    let (s, v) = server.post(
        "/v1/admin/keys",
        OPERATOR_KEY,
        json!({"tenant": "acme", "user_tokens": tokens}),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("user_tokens: 1000 tokens, at most 32"),
        "{v}"
    );
}
