//! JWT attacks against the real server: each forgery is `401 UNAUTHORIZED`, while properly
//! signed HS256 and EdDSA tokens work.

mod common;

use common::{ED_OTHER_PRIVATE, ED_PRIVATE, ED_PUBLIC, HS_SECRET, Server, code, into_next_second};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

fn claims(exp_offset: i64) -> Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({"tenant": "acme", "sub": "svc", "permissions": ["read", "write"], "exp": now + exp_offset, "iat": now})
}

fn hs(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn ed(claims: &Value, private_pem: &str) -> String {
    let key = EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap();
    encode(&Header::new(Algorithm::EdDSA), claims, &key).unwrap()
}

/// URL-safe base64 without padding, for hand-built tokens.
fn b64(bytes: &[u8]) -> String {
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

fn status(server: &Server, token: &str) -> (u16, String) {
    let (s, v) = server.get("/v1/memories/list", token);
    (s, code(&v).to_owned())
}

#[test]
fn base64_helper_is_right() {
    assert_eq!(b64(b"abc"), "YWJj");
    assert_eq!(b64(b"ab"), "YWI");
    assert_eq!(b64(b"a"), "YQ");
}

#[test]
fn signed_tokens_of_both_algorithms_are_accepted() {
    let server = Server::start();
    server.tenant("acme");
    // A token minted right after its tenant was created works.
    assert_eq!(
        status(&server, &hs(&claims(600), HS_SECRET.as_bytes())).0,
        200
    );
    assert_eq!(status(&server, &ed(&claims(600), ED_PRIVATE)).0, 200);
}

#[test]
fn forged_tokens_are_rejected() {
    let server = Server::start();
    server.tenant("acme");
    // A token minted right after its tenant was created works.
    let good = hs(&claims(600), HS_SECRET.as_bytes());
    let parts: Vec<&str> = good.split('.').collect();
    let payload = b64(claims(600).to_string().as_bytes());
    let mut escalated = claims(600);
    escalated["permissions"] = json!(["read", "write", "admin", "all_principals"]);
    escalated["tenant"] = json!("*");
    let mut no_exp = claims(600);
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_iat = claims(600);
    no_iat.as_object_mut().unwrap().remove("iat");
    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["urn:example:must-understand".into()]);
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none, empty signature",
            format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
        ),
        (
            "alg None",
            format!("{}.{payload}.", b64(br#"{"alg":"None"}"#)),
        ),
        (
            "alg none, old signature kept",
            format!("{}.{payload}.{}", b64(br#"{"alg":"none"}"#), parts[2]),
        ),
        (
            "HS256 signed with the EdDSA public key",
            hs(&claims(600), ED_PUBLIC.as_bytes()),
        ),
        (
            "EdDSA header over an HMAC signature",
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"EdDSA","typ":"JWT"}"#),
                parts[1],
                parts[2]
            ),
        ),
        (
            "HS512 not accepted",
            encode(
                &Header::new(Algorithm::HS512),
                &claims(600),
                &EncodingKey::from_secret(HS_SECRET.as_bytes()),
            )
            .unwrap(),
        ),
        (
            "wrong HMAC secret",
            hs(&claims(600), b"some-other-secret-of-at-least-32-bytes"),
        ),
        ("wrong Ed25519 key", ed(&claims(600), ED_OTHER_PRIVATE)),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(escalated.to_string().as_bytes()),
                parts[2]
            ),
        ),
        (
            "tampered signature",
            format!("{}.{}.{}x", parts[0], parts[1], parts[2]),
        ),
        ("expired", hs(&claims(-3600), HS_SECRET.as_bytes())),
        ("missing exp", hs(&no_exp, HS_SECRET.as_bytes())),
        (
            "tenant token without iat",
            hs(&no_iat, HS_SECRET.as_bytes()),
        ),
        (
            "validly signed, with an unknown crit extension (RFC 7515 4.1.11)",
            encode(
                &crit,
                &claims(600),
                &EncodingKey::from_secret(HS_SECRET.as_bytes()),
            )
            .unwrap(),
        ),
        (
            "unknown tenant",
            hs(
                &json!({"tenant": "ghost", "exp": claims(600)["exp"], "iat": claims(600)["iat"]}),
                HS_SECRET.as_bytes(),
            ),
        ),
    ];
    for (name, token) in cases {
        assert_eq!(
            status(&server, &token),
            (401, "UNAUTHORIZED".into()),
            "{name} was not rejected"
        );
    }
}

#[test]
fn a_token_of_the_second_a_tenant_was_recreated_in_does_not_reach_the_new_tenant() {
    let server = Server::start();
    server.tenant("acme");
    // Start at the top of a second so that the mint, the erasure and the re-creation most
    // likely share it (if they do not, the token is refused for predating the new tenant).
    into_next_second();
    let old = hs(&claims(600), HS_SECRET.as_bytes());
    assert_eq!(status(&server, &old).0, 200);
    let (s, v) = server.hard_delete("acme");
    assert_eq!(s, 200, "{v}");
    server.tenant("acme");
    assert_eq!(status(&server, &old), (401, "UNAUTHORIZED".into()));
    let (s, v) = server.post(
        "/v1/memories",
        &old,
        json!({"content": "into the new tenant"}),
    );
    assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"), "{v}");
    // The re-creation waited for a new second: a token minted now works at once.
    assert_eq!(
        status(&server, &hs(&claims(600), HS_SECRET.as_bytes())).0,
        200
    );
}

#[test]
fn a_subject_with_control_characters_or_too_long_is_refused() {
    let server = Server::start();
    server.tenant("acme");
    for sub in ["svc\nforged line".to_owned(), "s".repeat(40_000)] {
        let mut c = claims(600);
        c["sub"] = json!(sub);
        assert_eq!(
            status(&server, &hs(&c, HS_SECRET.as_bytes())),
            (401, "UNAUTHORIZED".into())
        );
    }
    let mut c = claims(600);
    c["sub"] = json!("s".repeat(256));
    assert_eq!(status(&server, &hs(&c, HS_SECRET.as_bytes())).0, 200);
}
