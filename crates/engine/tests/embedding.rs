//! The built-in embedder inside the engine: text-only writes and patches get vectors from it,
//! a query alone searches hybrid, and a collection declared for another model refuses every
//! request that would need embedding, so a collection never mixes models. Needs the model files
//! in the repository's `models/all-MiniLM-L6-v2` (`scripts/fetch-model.sh`).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{full_grant, open_with_tenant};
use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{Embedder, Engine, EngineConfig, EngineError, ExportLine};
use strata_types::{
    Collection, CollectionName, EmbedderRef, Metric, NewRecord, RecordPatch, RequestScope,
    SearchMode, SearchRequest, TenantId,
};

fn embedder() -> Arc<Embedder> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
    Arc::new(Embedder::load(dir).expect("model files: run scripts/fetch-model.sh"))
}

fn text(content: &str) -> NewRecord {
    NewRecord {
        content: Some(content.into()),
        ..Default::default()
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn open_embedding(dir: &Path, tenant: &str) -> (Engine, TenantScope, Arc<Embedder>) {
    let e = embedder();
    let mut engine = Engine::open(dir, EngineConfig::default()).expect("open");
    engine.set_embedder(Arc::clone(&e)).expect("set embedder");
    let id = TenantId::parse(tenant).unwrap();
    engine
        .create_tenant(&OperatorScope::for_tests(), &id, None)
        .expect("create tenant");
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), full_grant());
    (engine, scope, e)
}

#[test]
fn text_only_writes_are_embedded_and_patches_re_embed() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, e) = open_embedding(dir.path(), "acme");
    let req = RequestScope::default();
    let out = engine
        .put(
            &scope,
            &req,
            vec![text("Alice takes oat milk"), text("Bob likes tea")],
        )
        .unwrap();
    let expected = e.embed(&["Alice takes oat milk", "Bob likes tea"]).unwrap();
    for (o, want) in out.iter().zip(&expected) {
        let got = engine
            .get(&scope, &req, &o.id)
            .unwrap()
            .vector
            .expect("vector");
        assert!(cosine(&got, want) > 0.9999);
    }

    let id = &out[0].id;
    let patch = |p: RecordPatch| engine.patch(&scope, &req, id, p).unwrap();
    let kept = patch(RecordPatch {
        kind: Some(Some(strata_types::Kind::parse("fact").unwrap())),
        ..Default::default()
    });
    assert!(cosine(kept.vector.as_ref().unwrap(), &expected[0]) > 0.9999);
    let changed = patch(RecordPatch {
        content: Some("Carol plays the violin".into()),
        ..Default::default()
    });
    let want = e.embed(&["Carol plays the violin"]).unwrap().remove(0);
    assert!(cosine(changed.vector.as_ref().unwrap(), &want) > 0.9999);

    let s = engine
        .search(
            &scope,
            &req,
            &SearchRequest {
                query: Some("musical instrument".into()),
                k: 1,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(s.mode, SearchMode::Hybrid);
    assert_eq!(&s.hits[0].id, id);

    // A credential that may write but not read patches content too (its new vector is
    // embedded before the transaction, from a snapshot read with the patch's permission).
    let write_only = TenantScope::for_tests(
        &engine.tenant_meta(scope.tenant()).unwrap(),
        strata_auth::Grant {
            permissions: strata_auth::Permissions::of(&[strata_auth::Permission::Write]),
            ..full_grant()
        },
    );
    let patched = engine
        .patch(
            &write_only,
            &req,
            &out[1].id,
            RecordPatch {
                content: Some("Bob now drinks coffee".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let want = e.embed(&["Bob now drinks coffee"]).unwrap().remove(0);
    assert!(cosine(patched.vector.as_ref().unwrap(), &want) > 0.9999);
}

#[test]
fn a_collection_of_another_model_refuses_embedding_work() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _, _) = open_embedding(dir.path(), "acme");
    let id = TenantId::parse("old").unwrap();
    let foreign = Collection {
        name: CollectionName::parse("text").unwrap(),
        dim: 384,
        metric: Metric::Cosine,
        created_at: 0,
        embedder: Some(EmbedderRef {
            model_id: "other/model".into(),
            weights_hash: "0".repeat(64),
        }),
        analyzer: Default::default(),
        memory: Default::default(),
    };
    engine
        .import_tenant(
            &OperatorScope::for_tests(),
            &id,
            vec![
                Ok(common::tenant_line("old")),
                Ok(ExportLine::Collection(foreign)),
            ],
        )
        .unwrap();
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), full_grant());
    let req = RequestScope::default();
    let err = engine
        .put(&scope, &req, vec![text("oat milk")])
        .unwrap_err();
    let EngineError::ModelMismatch { .. } = err else {
        panic!("{err:?}");
    };
    assert!(err.to_string().contains("other/model"), "{err}");
    let query = SearchRequest {
        query: Some("oat milk".into()),
        ..Default::default()
    };
    assert!(matches!(
        engine.search(&scope, &req, &query),
        Err(EngineError::ModelMismatch { .. })
    ));
    // A client vector needs no embedding, and words need no model.
    let client = NewRecord {
        vector: Some(common::vector(384, 1)),
        ..text("oat milk")
    };
    engine.put(&scope, &req, vec![client]).unwrap();
    let words = SearchRequest {
        mode: Some(SearchMode::Text),
        ..query
    };
    assert_eq!(engine.search(&scope, &req, &words).unwrap().hits.len(), 1);
}

#[test]
fn tenants_created_without_an_embedder_stay_text_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (engine, scope) = open_with_tenant(dir.path(), "early", full_grant());
        let text_collection = engine.collections(&scope).unwrap();
        assert!(text_collection.iter().all(|c| c.embedder.is_none()));
        let out = engine
            .put(&scope, &RequestScope::default(), vec![text("oat milk")])
            .unwrap();
        let r = engine
            .get(&scope, &RequestScope::default(), &out[0].id)
            .unwrap();
        assert_eq!(r.vector, None);
    }
    let (engine, late, e) = open_embedding(dir.path(), "late");
    let text_of = |scope: &TenantScope| {
        engine
            .collections(scope)
            .unwrap()
            .into_iter()
            .find(|c| c.name.as_str() == "text")
            .unwrap()
    };
    let expected = EmbedderRef {
        model_id: e.model_id().into(),
        weights_hash: e.weights_hash().into(),
    };
    assert_eq!(text_of(&late).embedder, Some(expected));
    let early_id = TenantId::parse("early").unwrap();
    let early = TenantScope::for_tests(&engine.tenant_meta(&early_id).unwrap(), full_grant());
    assert_eq!(text_of(&early).embedder, None);
    let out = engine
        .put(&early, &RequestScope::default(), vec![text("tea")])
        .unwrap();
    let r = engine
        .get(&early, &RequestScope::default(), &out[0].id)
        .unwrap();
    assert_eq!(r.vector, None, "no model declared, so nothing is embedded");
}

#[test]
fn an_embed_collection_must_have_the_embedder_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::default();
    config.default_collections[0].dim = 128;
    let mut engine = Engine::open(dir.path(), config).unwrap();
    assert!(matches!(
        engine.set_embedder(embedder()),
        Err(EngineError::BadRequest(_))
    ));
}

/// A text-only write prepared before a re-embed's switch (its collection then had no model,
/// so its text was not embedded) and committed after it is refused, to be sent again: stored,
/// it would be the one text of the switched collection without a vector.
#[test]
fn a_text_only_write_across_a_reembeds_switch_is_refused_not_stored_without_a_vector() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, _) = open_embedding(dir.path(), "acme");
    let req = RequestScope::default();
    let notes = CollectionName::parse("notes").unwrap();
    engine
        .create_collection(&scope, &notes, 4, Metric::Cosine)
        .unwrap();
    let record = |id: &str, vector: Option<Vec<f32>>| NewRecord {
        id: Some(strata_types::RecordId::parse(id).unwrap()),
        modality: Some(notes.clone()),
        content: Some(format!("the note {id}")),
        vector,
        ..Default::default()
    };
    engine
        .put(
            &scope,
            &req,
            vec![record("n1", Some(vec![1.0, 0.0, 0.0, 0.0]))],
        )
        .unwrap();
    let before = engine
        .begin_put(&scope, &req, vec![record("late", None)])
        .unwrap();
    let job = engine.reembed_start(&scope, &notes).unwrap().job.unwrap();
    while engine.reembed_step(&scope, &notes, job).unwrap() {}
    let status = engine.reembed_finish(&scope, &notes, job).unwrap();
    assert_eq!(status.state, strata_engine::ReembedState::Done);
    let refused = engine.finish_put(&scope, &req, before);
    assert!(
        matches!(&refused, Err(EngineError::Reembed(m)) if m.contains("send it again")),
        "{refused:?}"
    );
    // Sent again, it is embedded like every text of the collection.
    engine
        .put(&scope, &req, vec![record("late", None)])
        .unwrap();
    let late = engine
        .get(
            &scope,
            &req,
            &strata_types::RecordId::parse("late").unwrap(),
        )
        .unwrap();
    assert_eq!(late.vector.map(|v| v.len()), Some(384));
}

/// A record patched after its vector was staged, one written during the job and one deleted
/// during it: the switch embeds each as it is at the switch, and drops nothing else.
#[test]
fn a_reembed_catches_up_writes_made_while_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, e) = open_embedding(dir.path(), "acme");
    let req = RequestScope::default();
    let notes = CollectionName::parse("notes").unwrap();
    engine
        .create_collection(&scope, &notes, 4, Metric::Cosine)
        .unwrap();
    let in_notes = |id: &str, content: &str| NewRecord {
        id: Some(strata_types::RecordId::parse(id).unwrap()),
        modality: Some(notes.clone()),
        content: Some(content.into()),
        vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
        ..Default::default()
    };
    let records: Vec<NewRecord> = (0..70)
        .map(|i| in_notes(&format!("n{i:02}"), &format!("note number {i}")))
        .collect();
    engine.put(&scope, &req, records).unwrap();

    let plan = engine.reembed_plan(&scope, &notes).unwrap();
    assert_eq!((plan.records, plan.from_dim, plan.to_dim), (70, 4, 384));
    let job = engine.reembed_start(&scope, &notes).unwrap().job.unwrap();
    // Stage the first step only, then change the collection under the job.
    assert!(engine.reembed_step(&scope, &notes, job).unwrap());
    let id = |s: &str| strata_types::RecordId::parse(s).unwrap();
    engine
        .patch(
            &scope,
            &req,
            &id("n00"),
            RecordPatch {
                content: Some("Alice takes oat milk".into()),
                ..Default::default()
            },
        )
        .unwrap();
    engine.delete(&scope, &req, &id("n01")).unwrap();
    engine
        .put(&scope, &req, vec![in_notes("zz", "Bob likes green tea")])
        .unwrap();
    // Mid-job, the collection is still whole on the old model.
    assert_eq!(
        engine
            .get(&scope, &req, &id("n05"))
            .unwrap()
            .vector
            .map(|v| v.len()),
        Some(4)
    );
    while engine.reembed_step(&scope, &notes, job).unwrap() {}
    let status = engine.reembed_finish(&scope, &notes, job).unwrap();
    assert_eq!(status.state, strata_engine::ReembedState::Done);

    let c = engine
        .collections(&scope)
        .unwrap()
        .into_iter()
        .find(|c| c.name == notes)
        .unwrap();
    assert_eq!(
        (c.dim, c.embedder.map(|m| m.model_id)),
        (384, Some(e.model_id().to_owned()))
    );
    let vector_of = |s: &str| engine.get(&scope, &req, &id(s)).unwrap().vector.unwrap();
    for (rid, content) in [
        ("n00", "Alice takes oat milk"),
        ("zz", "Bob likes green tea"),
        ("n69", "note number 69"),
    ] {
        let want = e.embed(&[content]).unwrap().remove(0);
        assert!(cosine(&vector_of(rid), &want) > 0.9999, "{rid}");
    }
    assert!(matches!(
        engine.get(&scope, &req, &id("n01")),
        Err(EngineError::NotFound)
    ));
    // The switched collection searches by meaning on the new vectors.
    let hits = engine
        .search(
            &scope,
            &req,
            &SearchRequest {
                query: Some("what does Alice drink?".into()),
                modality: Some(notes.clone()),
                k: 1,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(hits.hits[0].id, id("n00"));
    // And a step of a job that is over is refused, not silently re-run.
    assert!(matches!(
        engine.reembed_step(&scope, &notes, job),
        Err(EngineError::Reembed(_))
    ));
}

/// A collection deleted and re-created under a running re-embed: the new collection's own
/// re-embed starts (a new job), and the old job's steps and abandonment cannot touch it.
#[test]
fn a_stale_reembed_job_never_acts_on_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, _) = open_embedding(dir.path(), "acme");
    let req = RequestScope::default();
    let notes = CollectionName::parse("notes").unwrap();
    let fill = |n: usize| {
        engine
            .create_collection(&scope, &notes, 4, Metric::Cosine)
            .unwrap();
        let records = (0..n)
            .map(|i| NewRecord {
                modality: Some(notes.clone()),
                content: Some(format!("note {i}")),
                vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
                ..Default::default()
            })
            .collect();
        engine.put(&scope, &req, records).unwrap();
    };
    fill(40);
    let old = engine.reembed_start(&scope, &notes).unwrap().job.unwrap();
    assert!(engine.reembed_step(&scope, &notes, old).unwrap());
    engine.delete_collection(&scope, &notes).unwrap();
    // Collection timestamps are in milliseconds: make the new one's differ.
    std::thread::sleep(std::time::Duration::from_millis(5));
    fill(10);

    let new = engine.reembed_start(&scope, &notes).unwrap().job.unwrap();
    assert_ne!(old, new);
    assert!(matches!(
        engine.reembed_step(&scope, &notes, old),
        Err(EngineError::Reembed(_))
    ));
    engine.reembed_abandon(&scope, &notes, old, "the old driver gave up");
    let status = engine.reembed_status(&scope, &notes).unwrap();
    assert_eq!(
        (status.state, status.job),
        (strata_engine::ReembedState::Running, Some(new))
    );
    while engine.reembed_step(&scope, &notes, new).unwrap() {}
    let done = engine.reembed_finish(&scope, &notes, new).unwrap();
    assert_eq!(
        (done.state, done.records_embedded),
        (strata_engine::ReembedState::Done, 10)
    );
}

/// A paragraph near the model's 256 word pieces, different for each `i`.
fn paragraph(i: usize) -> String {
    (0..40)
        .map(|w| format!("note{i} word{w} about topic{}", (i * 7 + w) % 13))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_batch_is_embedded_in_steps_of_bounded_cost_with_the_vectors_of_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, e) = open_embedding(dir.path(), "acme");
    let req = RequestScope::default();
    let texts: Vec<String> = (0..5).map(paragraph).collect();
    let mut records: Vec<NewRecord> = texts.iter().map(|t| text(t)).collect();
    // A record with its own vector is written as sent, between embedded ones.
    let own = common::vector(384, 3);
    records.insert(
        2,
        NewRecord {
            vector: Some(own.clone()),
            ..text("brings its own vector")
        },
    );
    let mut pending = engine.begin_put(&scope, &req, records).unwrap();
    let mut steps = 0;
    while !pending.is_embedded() {
        engine.embed_put_step(&mut pending).unwrap();
        steps += 1;
    }
    // Each long paragraph is a step of its own: no step embeds the whole batch.
    assert_eq!(steps, 5);
    let out = engine.finish_put(&scope, &req, pending).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut want = e.embed(&refs).unwrap();
    want.insert(2, own);
    for (o, want) in out.iter().zip(&want) {
        let got = engine.get(&scope, &req, &o.id).unwrap().vector.unwrap();
        assert!(cosine(&got, want) > 0.9999);
    }
    // Short texts share a step.
    let short: Vec<NewRecord> = (0..20).map(|i| text(&format!("short {i}"))).collect();
    let mut pending = engine.begin_put(&scope, &req, short).unwrap();
    engine.embed_put_step(&mut pending).unwrap();
    assert!(pending.is_embedded());
}

/// Opens the engine at `dir` again with the embedder, as a restart does, and `tenant`'s scope.
fn reopen(dir: &Path, tenant: &str) -> (Engine, TenantScope) {
    let mut engine = Engine::open(dir, EngineConfig::default()).expect("reopen");
    engine.set_embedder(embedder()).expect("set embedder");
    let id = TenantId::parse(tenant).unwrap();
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), full_grant());
    (engine, scope)
}

/// A re-embed's status survives a restart: one that finished shows its result, one that was
/// running shows as failed, interrupted, on the old model, and can be started again; one
/// that failed keeps its error; a collection never re-embedded reads `none`.
#[test]
fn a_reembed_status_tells_the_truth_after_a_restart() {
    use strata_engine::ReembedState;
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, _) = open_embedding(dir.path(), "acme");
    let req = RequestScope::default();
    let names = ["done", "cut", "failed", "never"].map(|n| CollectionName::parse(n).unwrap());
    for name in &names {
        engine
            .create_collection(&scope, name, 4, Metric::Cosine)
            .unwrap();
        // More than one step's texts, so a job can be cut between two steps.
        let records = (0..40)
            .map(|i| NewRecord {
                modality: Some(name.clone()),
                content: Some(format!("{name} note {i}")),
                vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
                ..Default::default()
            })
            .collect();
        engine.put(&scope, &req, records).unwrap();
    }
    let [done, cut, failed, never] = &names;
    let job = engine.reembed_start(&scope, done).unwrap().job.unwrap();
    while engine.reembed_step(&scope, done, job).unwrap() {}
    let finished = engine.reembed_finish(&scope, done, job).unwrap();
    assert_eq!(finished.state, ReembedState::Done);
    let running = engine.reembed_start(&scope, cut).unwrap().job.unwrap();
    assert!(engine.reembed_step(&scope, cut, running).unwrap());
    let before_cut = engine.reembed_status(&scope, cut).unwrap();
    let job = engine.reembed_start(&scope, failed).unwrap().job.unwrap();
    engine.reembed_abandon(&scope, failed, job, "stopped: the pool shut down");
    let failure = engine.reembed_status(&scope, failed).unwrap();
    assert_eq!(failure.state, ReembedState::Failed);
    drop(engine);

    let (engine, scope) = reopen(dir.path(), "acme");
    assert_eq!(engine.reembed_status(&scope, done).unwrap(), finished);
    assert_eq!(engine.reembed_status(&scope, failed).unwrap(), failure);
    let status = engine.reembed_status(&scope, cut).unwrap();
    assert_eq!(status.state, ReembedState::Failed, "{status:?}");
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("interrupted")),
        "{status:?}"
    );
    // The job as it stood when it was cut (its stored row follows each step: one step of
    // texts embedded), on the collection's old model (none: client vectors).
    assert!(before_cut.records_embedded > 0, "{before_cut:?}");
    assert_eq!(
        (
            status.job,
            status.records_total,
            status.records_embedded,
            status.started_at,
            &status.model
        ),
        (
            before_cut.job,
            before_cut.records_total,
            before_cut.records_embedded,
            before_cut.started_at,
            &None
        )
    );
    assert_eq!(
        engine.reembed_status(&scope, never).unwrap().state,
        ReembedState::None
    );
    // Started again, it runs to its end, under a new id: ids start again with each engine
    // instance, but never at or below the collection's last stored one.
    let job = engine.reembed_start(&scope, cut).unwrap().job.unwrap();
    assert!(job > before_cut.job.unwrap(), "{job} reuses an earlier id");
    while engine.reembed_step(&scope, cut, job).unwrap() {}
    let again = engine.reembed_finish(&scope, cut, job).unwrap();
    assert_eq!((again.state, again.records_total), (ReembedState::Done, 40));
    // A deleted collection's status goes with it: one created again under its name has none.
    engine.delete_collection(&scope, done).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    engine
        .create_collection(&scope, done, 4, Metric::Cosine)
        .unwrap();
    drop(engine);
    let (engine, scope) = reopen(dir.path(), "acme");
    assert_eq!(
        engine.reembed_status(&scope, done).unwrap().state,
        ReembedState::None
    );
    assert_eq!(
        engine.reembed_status(&scope, cut).unwrap().state,
        ReembedState::Done
    );
}

/// A stored re-embed status that does not decode is an error for every read of it (the status
/// names the collection, `verify` reports it), but it is only a report of a past job: a new
/// re-embed replaces it rather than being blocked by it.
#[test]
fn a_reembed_replaces_a_stored_status_that_does_not_decode() {
    use strata_engine::ReembedState;
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, _) = open_embedding(dir.path(), "acme");
    let notes = CollectionName::parse("notes").unwrap();
    engine
        .create_collection(&scope, &notes, 4, Metric::Cosine)
        .unwrap();
    let records = (0..5)
        .map(|i| NewRecord {
            modality: Some(notes.clone()),
            content: Some(format!("note {i}")),
            vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
            ..Default::default()
        })
        .collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    drop(engine);
    let store = strata_store::Store::open(&dir.path().join(strata_engine::DB_FILE)).unwrap();
    store
        .write(|w| {
            let key = strata_store::Reads::tenant(w, scope.tenant())?.unwrap().key;
            w.put_blob(key, "reembed:notes", b"\x01{\"not\": \"a status\"}")
        })
        .unwrap();
    drop(store);

    let (engine, scope) = reopen(dir.path(), "acme");
    match engine.reembed_status(&scope, &notes) {
        Err(EngineError::Store(strata_store::StoreError::Corrupt(why))) => {
            assert!(why.contains("collection notes"), "{why}")
        }
        other => panic!("a status that does not decode read as {other:?}"),
    }
    let op = OperatorScope::for_tests();
    let report = engine.verify_tenant(&op, scope.tenant()).unwrap();
    assert!(!report.ok, "{report:?}");
    assert!(
        format!("{report:?}").contains("re-embed status of notes"),
        "{report:?}"
    );
    // A new re-embed is not blocked: it replaces the row, and runs to its end.
    let job = engine.reembed_start(&scope, &notes).unwrap().job.unwrap();
    while engine.reembed_step(&scope, &notes, job).unwrap() {}
    let done = engine.reembed_finish(&scope, &notes, job).unwrap();
    assert_eq!((done.state, done.records_embedded), (ReembedState::Done, 5));
    drop(engine);
    let (engine, scope) = reopen(dir.path(), "acme");
    assert_eq!(engine.reembed_status(&scope, &notes).unwrap(), done);
    assert!(engine.verify_tenant(&op, scope.tenant()).unwrap().ok);
}
