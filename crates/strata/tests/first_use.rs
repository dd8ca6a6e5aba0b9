//! What a new user meets building a chat assistant's memory over HTTP: a past or
//! seconds-for-milliseconds `expires_at` is refused, a batch's refusal names the record at fault,
//! filters on built-in fields refuse operands of the wrong type and read `null` as GET shows it,
//! `"metadata": null` clears a record's metadata, a dotted path reaches into arrays of objects
//! (in search, list and count alike, and after a restart), and a delete by filter must say
//! what it deletes.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

fn setup() -> (Server, String) {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key(
        "acme",
        json!({"permissions": ["read", "write", "all_principals"]}),
    );
    (server, key)
}

fn patch(server: &Server, key: &str, id: &str, body: Value) -> (u16, Value) {
    server.call(
        "PATCH",
        &format!("/v1/memories/{id}"),
        Some(key),
        &[],
        Some(&body),
    )
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

fn count(server: &Server, key: &str, filter: Value) -> u64 {
    let (s, v) = server.post("/v1/memories/count", key, json!({ "filter": filter }));
    assert_eq!(s, 200, "{v}");
    v["count"].as_u64().expect("count")
}

#[test]
fn a_past_or_seconds_expiry_is_refused_on_every_write() {
    let (server, key) = setup();
    let now = common::now_ms();
    let seconds = now / 1000 + 3600;
    for (at, hint) in [
        (seconds, Some("looks like seconds")),
        (now - 1, None),
        (-5, None),
        (0, None),
    ] {
        let (s, v) = server.post(
            "/v1/memories",
            &key,
            json!({"content": "x", "expires_at": at}),
        );
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{at}: {v}");
        let m = message(&v);
        assert!(m.starts_with("expires_at: "), "{m}");
        assert!(m.contains("milliseconds since the Unix epoch"), "{m}");
        assert_eq!(hint.is_some_and(|h| m.contains(h)), hint.is_some(), "{m}");
    }
    let mut batch: Vec<Value> = (0..6)
        .map(|i| json!({"content": format!("r{i}")}))
        .collect();
    batch[5]["expires_at"] = json!(seconds);
    let (s, v) = server.post("/v1/memories", &key, json!({ "records": batch }));
    assert_eq!(s, 400, "{v}");
    assert!(message(&v).starts_with("records[5].expires_at: "), "{v}");
    assert_eq!(
        count(&server, &key, json!({})),
        0,
        "a refused batch writes nothing"
    );

    let ahead = now + 3_600_000;
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "r", "content": "x", "expires_at": ahead}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = patch(&server, &key, "r", json!({"expires_at": seconds}));
    assert_eq!(s, 400, "{v}");
    assert!(message(&v).contains("looks like seconds"), "{v}");
    let (s, v) = patch(&server, &key, "r", json!({"expires_at": null}));
    assert_eq!((s, &v["expires_at"]), (200, &Value::Null), "{v}");
}

#[test]
fn an_import_keeps_records_that_expired_before_the_sweep() {
    let (server, key) = setup();
    let soon = common::expiring_soon();
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "gone", "content": "x", "expires_at": soon}),
    );
    assert_eq!(s, 201, "{v}");
    common::wait_past(soon);
    let (s, ndjson) = server.send_raw_with(
        "GET",
        "/v1/admin/tenants/acme/export",
        OPERATOR_KEY,
        &[],
        Vec::new(),
    );
    assert_eq!(s, 200, "{ndjson}");
    assert!(
        ndjson.contains("\"gone\""),
        "exported before the sweep: {ndjson}"
    );
    let (s, v) = server.send_raw(
        "POST",
        "/v1/admin/tenants/acme-copy/import",
        OPERATOR_KEY,
        "application/x-ndjson",
        ndjson.into_bytes(),
    );
    assert_eq!(s, 201, "{v}");
}

#[test]
fn every_refusal_of_a_batch_names_the_record() {
    let (server, key) = setup();
    let admin = server.key("acme", json!({"permissions": ["admin", "all_principals"]}));
    let (s, v) = server.post(
        "/v1/collections",
        &admin,
        json!({"name": "tiny", "dim": 3, "metric": "cosine"}),
    );
    assert_eq!(s, 201, "{v}");
    let cases = [
        (json!({"metadata": {"a": 1}}), "records[5]: a record needs"),
        (
            json!({"content": "x", "metadata": {"created_at": 1}}),
            "records[5].metadata: ",
        ),
        (
            json!({"content": "x", "confidence": {"value": 1.5}}),
            "records[5].confidence.value: ",
        ),
        (
            json!({"content": "x", "metadata": {"blob": "y".repeat(17_000)}}),
            "records[5].metadata: ",
        ),
        (
            json!({"content": "x", "metadata": {"$where": 1}}),
            "records[5].metadata: ",
        ),
        (
            json!({"content": "x".repeat(70_000)}),
            "records[5].content: ",
        ),
        (
            json!({"vector": [1.0, 0.0], "modality": "tiny"}),
            "records[5].vector: ",
        ),
        (
            json!({"vector": [1.0, f32::MAX, 0.0], "modality": "tiny"}),
            "records[5].vector",
        ),
        (json!({"content": "  "}), "records[5].content: "),
        (json!({"id": "a/b", "content": "x"}), "records[5].id: "),
    ];
    for (bad, prefix) in cases {
        let mut batch: Vec<Value> = (0..5)
            .map(|i| json!({"content": format!("fine {i}")}))
            .collect();
        batch.push(bad.clone());
        let (s, v) = server.post("/v1/memories", &key, json!({ "records": batch }));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{bad}: {v}");
        assert!(message(&v).starts_with(prefix), "{prefix}: {v}");
        // A batch of one names its record too; a single write names only the field.
        let (s, v) = server.post("/v1/memories", &key, json!({ "records": [bad.clone()] }));
        assert_eq!(s, 400, "{v}");
        assert!(message(&v).starts_with("records[0]"), "{v}");
        let (s, v) = server.post("/v1/memories", &key, bad.clone());
        assert_eq!(s, 400, "{v}");
        assert!(!message(&v).starts_with("records["), "{v}");
    }
    assert_eq!(count(&server, &key, json!({})), 0);
}

#[test]
fn filters_on_built_in_fields_check_their_operands_and_read_null_as_get_shows_it() {
    let (server, key) = setup();
    let ahead = common::now_ms() + 3_600_000;
    let records = json!([
        {"id": "plain", "content": "a note that stays", "metadata": {"note": null}},
        {"id": "ttl", "content": "a note that expires", "kind": "episodic", "expires_at": ahead},
    ]);
    let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
    assert_eq!(s, 201, "{v}");
    let (_, plain) = server.get("/v1/memories/plain", &key);
    assert_eq!(plain["expires_at"], Value::Null, "{plain}");
    for (filter, want) in [
        (json!({"expires_at": null}), 1),
        (json!({"expires_at": {"$eq": null}}), 1),
        (json!({"expires_at": {"$ne": null}}), 1),
        (json!({"expires_at": {"$in": [null, ahead]}}), 2),
        (json!({"kind": null}), 1),
        (json!({"run_id": null}), 2),
        // As in MongoDB: a metadata key stored as null and one that is missing both equal
        // null; `$exists` tells them apart.
        (json!({"note": null}), 2),
        (json!({"note": {"$ne": null}}), 0),
        (json!({"note": {"$exists": true}}), 1),
        (json!({"expires_at": {"$gt": 0}}), 1),
    ] {
        assert_eq!(count(&server, &key, filter.clone()), want, "{filter}");
        let (s, v) = server.post("/v1/memories/list", &key, json!({ "filter": filter }));
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["records"].as_array().map(Vec::len),
            Some(want as usize),
            "{filter}: {v}"
        );
        let (s, v) = server.post(
            "/v1/search",
            &key,
            json!({"query": "note", "k": 10, "mode": "text", "filter": filter}),
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["hits"].as_array().map(Vec::len),
            Some(want as usize),
            "{filter}: {v}"
        );
    }
    for (filter, names) in [
        (
            json!({"created_at": {"$gte": "2026-01-01"}}),
            "created_at: $gte takes a number (milliseconds since the Unix epoch)",
        ),
        (
            json!({"updated_at": {"$lt": "x"}}),
            "updated_at: $lt takes a number",
        ),
        (
            json!({"expires_at": "tomorrow"}),
            "expires_at: $eq takes a number",
        ),
        (
            json!({"confidence": {"$gt": "high"}}),
            "confidence: $gt takes a number",
        ),
        (json!({"kind": 1}), "kind: $eq takes a string"),
    ] {
        let (s, v) = server.post("/v1/memories/count", &key, json!({ "filter": filter }));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{filter}: {v}");
        assert!(message(&v).contains(names), "{names}: {v}");
    }
}

/// The `id`s of a list of records or hits, sorted.
fn sorted_ids(items: &Value) -> Vec<&str> {
    let mut ids: Vec<&str> = items
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| item["id"].as_str().expect("an id"))
        .collect();
    ids.sort();
    ids
}

/// An agent's memory with the entities it mentions, as a list of objects: filtered by an
/// entity's fields, the same in every channel, from the index after a restart too.
#[test]
fn a_dotted_path_reaches_into_arrays_of_objects() {
    let (mut server, key) = setup();
    let records = json!([
        {"id": "m1", "content": "note: lunch with Bob and Ada",
         "metadata": {"entities": [{"type": "person", "name": "Bob"}, {"type": "person", "name": "Ada", "age": 36}]}},
        {"id": "m2", "content": "note: the Paris office",
         "metadata": {"entities": [{"type": "place", "name": "Paris"}]}},
        {"id": "m3", "content": "note: nothing named", "metadata": {"entities": []}},
    ]);
    let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
    assert_eq!(s, 201, "{v}");
    let cases = [
        (json!({"entities.name": "Ada"}), vec!["m1"]),
        (
            json!({"entities.type": {"$in": ["place", "thing"]}}),
            vec!["m2"],
        ),
        (json!({"entities.age": {"$gte": 30}}), vec!["m1"]),
        (
            json!({"entities.type": {"$ne": "person"}}),
            vec!["m2", "m3"],
        ),
        (json!({"entities.name": {"$exists": false}}), vec!["m3"]),
    ];
    for round in ["written", "restarted"] {
        for (filter, want) in &cases {
            assert_eq!(
                count(&server, &key, filter.clone()),
                want.len() as u64,
                "{round} {filter}"
            );
            let (s, v) = server.post("/v1/memories/list", &key, json!({ "filter": filter }));
            assert_eq!(s, 200, "{v}");
            assert_eq!(&sorted_ids(&v["records"]), want, "{round} {filter}: {v}");
            let (s, v) = server.post(
                "/v1/search",
                &key,
                json!({"query": "note", "k": 10, "mode": "text", "filter": filter}),
            );
            assert_eq!(s, 200, "{v}");
            assert_eq!(&sorted_ids(&v["hits"]), want, "{round} {filter}: {v}");
        }
        server.restart();
    }
}

#[test]
fn a_null_metadata_patch_clears_it() {
    let (server, key) = setup();
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "m", "content": "x", "metadata": {"a": 1, "b": {"c": 2}}}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = patch(&server, &key, "m", json!({"metadata": {"a": null}}));
    assert_eq!((s, &v["metadata"]), (200, &json!({"b": {"c": 2}})), "{v}");
    let (s, v) = patch(&server, &key, "m", json!({"metadata": null}));
    assert_eq!((s, &v["metadata"]), (200, &json!({})), "{v}");
    let (_, v) = server.get("/v1/memories/m", &key);
    assert_eq!(v["metadata"], json!({}), "{v}");
    let (s, v) = patch(&server, &key, "m", json!({"content": "y"}));
    assert_eq!((s, &v["metadata"]), (200, &json!({})), "{v}");
}

#[test]
fn a_delete_by_filter_says_what_it_deletes() {
    let (server, key) = setup();
    let records: Vec<Value> = (0..3)
        .map(|i| json!({"content": format!("r{i}"), "metadata": {"i": i}}))
        .collect();
    let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
    assert_eq!(s, 201, "{v}");
    for body in [
        json!({}),
        json!({"filter": {}}),
        json!({"filter": null}),
        json!({"filter": {"$and": []}}),
        json!({"filter": {"$and": [{}]}}),
        json!({"filter": {"$or": [{"i": 0}, {"$and": [{}]}]}}),
        json!({"all": false}),
    ] {
        let (s, v) = server.post("/v1/memories/delete", &key, body.clone());
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{body}: {v}");
        assert!(message(&v).contains("\"all\": true"), "{v}");
    }
    let (s, v) = server.post(
        "/v1/memories/delete",
        &key,
        json!({"filter": {"i": 0}, "all": true}),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        count(&server, &key, json!({})),
        3,
        "a refused delete deletes nothing"
    );
    let (s, v) = server.post("/v1/memories/delete", &key, json!({"filter": {"i": 0}}));
    assert_eq!((s, &v["deleted"]), (200, &json!(1)), "{v}");
    let (s, v) = server.post("/v1/memories/delete", &key, json!({"all": true}));
    assert_eq!((s, &v["deleted"]), (200, &json!(2)), "{v}");
}

#[test]
fn forgetting_one_end_user() {
    let (server, key) = setup();
    let writes = [
        ("dave", json!(["u:dave"])),
        ("dave-2", json!(["u:dave"])),
        ("erin", json!(["u:erin"])),
        ("both", json!(["u:dave", "u:erin"])),
        ("shared", json!([])),
    ];
    for (id, tokens) in writes {
        let (s, v) = server.post(
            "/v1/memories",
            &key,
            json!({"id": id, "content": id, "user_tokens": tokens}),
        );
        assert_eq!(s, 201, "{v}");
    }
    let left = |server: &Server| -> Vec<String> {
        let (s, v) = server.post("/v1/memories/list", &key, json!({"user_tokens": ["*"]}));
        assert_eq!(s, 200, "{v}");
        let mut ids: Vec<String> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    // What the filter reaches depends on whom the request speaks for: nobody sees no private
    // record; `any` (the default) and `*` reach co-owned records too; `all` only Dave's own.
    for (scope, reached) in [
        (json!({}), 0),
        (json!({"user_tokens": ["u:dave"]}), 3),
        (json!({"user_tokens": ["*"]}), 3),
        (json!({"user_tokens": ["u:dave"], "user_match": "all"}), 2),
    ] {
        let mut body = scope.clone();
        body["filter"] = json!({"user_tokens": "u:dave"});
        let (s, v) = server.post("/v1/memories/count", &key, body);
        assert_eq!((s, &v["count"]), (200, &json!(reached)), "{scope}: {v}");
    }
    // Dave's own records only, co-owned ones kept.
    let (s, v) = server.post(
        "/v1/memories/delete",
        &key,
        json!({"filter": {"user_tokens": "u:dave"}, "user_tokens": ["u:dave"], "user_match": "all"}),
    );
    assert_eq!((s, &v["deleted"]), (200, &json!(2)), "{v}");
    assert_eq!(left(&server), ["both", "erin", "shared"]);
    // The README's recipe: every record that names u:dave, over every principal.
    let (s, v) = server.post(
        "/v1/memories/delete",
        &key,
        json!({"filter": {"user_tokens": "u:dave"}, "user_tokens": ["*"]}),
    );
    assert_eq!((s, &v["deleted"]), (200, &json!(1)), "{v}");
    assert_eq!(left(&server), ["erin", "shared"]);
}
