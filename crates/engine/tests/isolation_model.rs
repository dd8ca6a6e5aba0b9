//! Random operations across tenants, principals and domains, checked against a simple model.
//!
//! Every operation's result (records, counts, errors) must equal the model's, so no operation
//! can return, count, modify or delete a record outside the caller's tenant and visibility.
//! Tenants are also deleted and created again under the same id: from then on, the old
//! incarnation's API key must not authenticate and a scope issued before the delete must
//! neither see nor change anything of the new tenant (docs/isolation.md, rule 8).
//! `STRATA_MODEL_SEED` replays a run; `STRATA_MODEL_OPS` sets its length (default 10,000).

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use strata_auth::{
    AuthConfig, AuthError, Authenticator, Grant, KeyTenant, NewKey, OperatorScope, Permission,
    Permissions, Principal, TenantScope,
};
use strata_engine::{Engine, EngineConfig, EngineError, NewShare, Page, TenantUpdate};
use strata_store::TenantMeta;
use strata_types::*;

const TENANTS: &[&str] = &["acme", "globex", "initech"];
const DOMAINS: &[&str] = &["default", "dialog", "support"];
const TOKENS: &[&str] = &["u:alice", "u:bob", "agent:planner"];
const RUNS: &[&str] = &["run-1", "run-2"];
const SCOPES: &[&str] = &["asset-1", "asset-2"];
const CONTENTS: &[&str] = &[
    "likes tea",
    "likes coffee",
    "lives in Oslo",
    "prefers email",
];
const CLIENT_IDS: &[&str] = &["c0", "c1", "c2", "c3", "c4", "c5"];
const WORDS: &[&str] = &[
    "tea", "coffee", "oslo", "email", "likes", "prefers", "absent",
];
const DIM: usize = 384;

/// A deterministic pseudo-random vector of the text collection's dimension.
fn vec_of(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn has_word(content: &str, word: &str) -> bool {
    content
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .any(|t| t == word)
}

// ---------- the model ----------

#[derive(Debug, Clone, PartialEq)]
struct MRec {
    id: String,
    tokens: BTreeSet<String>,
    domain: String,
    run: Option<String>,
    scope: Option<String>,
    content: String,
    n: i64,
    vector: Option<u64>,
}

#[derive(Debug, Clone)]
struct Cred {
    read: bool,
    write: bool,
    all_principals: bool,
    tokens: Option<BTreeSet<String>>,
    domains: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
enum ReqTokens {
    Star,
    List(BTreeSet<String>),
}

#[derive(Debug, Clone)]
struct Req {
    tokens: Option<ReqTokens>,
    match_all: bool,
    domain: Option<String>,
    run: Option<String>,
    scope: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Permission,
    Scope,
    NotFound,
    Conflict,
}

/// What a resolved request sees, computed straight from the rules in docs/isolation.md.
struct MVis {
    domain: String,
    run: Option<String>,
    scope: Option<String>,
    everyone: bool,
    tokens: BTreeSet<String>,
    match_all: bool,
    bound: Option<BTreeSet<String>>,
}

fn resolve(c: &Cred, q: &Req, write: bool) -> Result<MVis, Fail> {
    if (write && !c.write) || (!write && !c.read) {
        return Err(Fail::Permission);
    }
    let domain = match (&q.domain, &c.domains) {
        (Some(d), _) => d.clone(),
        (None, Some(ds)) if ds.len() == 1 => ds[0].clone(),
        _ => "default".to_string(),
    };
    if c.domains.as_ref().is_some_and(|ds| !ds.contains(&domain)) {
        return Err(Fail::Scope);
    }
    let (everyone, tokens) = match &q.tokens {
        None => (false, c.tokens.clone().unwrap_or_default()),
        Some(ReqTokens::List(l)) => {
            if c.tokens.as_ref().is_some_and(|b| !l.is_subset(b)) {
                return Err(Fail::Scope);
            }
            (false, l.clone())
        }
        Some(ReqTokens::Star) => {
            if c.tokens.is_some() || !c.all_principals {
                return Err(Fail::Scope);
            }
            (true, BTreeSet::new())
        }
    };
    Ok(MVis {
        domain,
        run: q.run.clone(),
        scope: q.scope.clone(),
        everyone,
        tokens,
        match_all: q.match_all,
        bound: c.tokens.clone(),
    })
}

impl MVis {
    fn sees(&self, r: &MRec) -> bool {
        let tokens_ok = r.tokens.is_empty()
            || self.everyone
            || if self.match_all {
                r.tokens.is_subset(&self.tokens)
            } else {
                !r.tokens.is_disjoint(&self.tokens)
            };
        r.domain == self.domain
            && self.run.as_ref().is_none_or(|x| r.run.as_ref() == Some(x))
            && self
                .scope
                .as_ref()
                .is_none_or(|x| r.scope.as_ref() == Some(x))
            && tokens_ok
    }

    fn write_tokens(&self, asked: Option<&BTreeSet<String>>) -> Result<BTreeSet<String>, Fail> {
        let t = asked.cloned().unwrap_or_else(|| self.tokens.clone());
        if let Some(b) = &self.bound
            && (t.is_empty() || !t.is_subset(b))
        {
            return Err(Fail::Scope);
        }
        Ok(t)
    }

    /// Whether the request may change `r` (docs/isolation.md, "What a bound credential may
    /// change"): a credential bound to tokens only a record whose tokens are a non-empty subset
    /// of its own.
    fn may_write(&self, r: &MRec) -> bool {
        self.bound
            .as_ref()
            .is_none_or(|b| !r.tokens.is_empty() && r.tokens.is_subset(b))
    }
}

type DedupKey = (String, String, Option<String>, BTreeSet<String>, String);

#[derive(Default, Clone)]
struct TenantModel {
    records: BTreeMap<String, MRec>,
    dedup: BTreeMap<DedupKey, String>,
}

fn dedup_key(r: &MRec) -> Option<DedupKey> {
    let run = r.run.clone()?;
    Some((
        r.domain.clone(),
        run,
        r.scope.clone(),
        r.tokens.clone(),
        r.content.clone(),
    ))
}

impl TenantModel {
    fn remove(&mut self, id: &str) {
        if let Some(old) = self.records.remove(id)
            && let Some(k) = dedup_key(&old)
            && self.dedup.get(&k).map(String::as_str) == Some(id)
        {
            self.dedup.remove(&k);
        }
    }

    fn put(&mut self, r: MRec) {
        self.remove(&r.id);
        if let Some(k) = dedup_key(&r) {
            self.dedup.insert(k, r.id.clone());
        }
        self.records.insert(r.id.clone(), r);
    }
}

// ---------- random generation ----------

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn maybe(rng: &mut StdRng, from: &[&str], p: f64) -> Option<String> {
    rng.random_bool(p).then(|| pick(rng, from).to_string())
}

fn subset(rng: &mut StdRng, from: &[&str]) -> BTreeSet<String> {
    from.iter()
        .filter(|_| rng.random_bool(0.4))
        .map(|s| s.to_string())
        .collect()
}

fn random_cred(rng: &mut StdRng) -> Cred {
    Cred {
        read: rng.random_bool(0.9),
        write: rng.random_bool(0.85),
        all_principals: rng.random_bool(0.3),
        tokens: rng.random_bool(0.25).then(|| subset(rng, TOKENS)),
        domains: rng.random_bool(0.2).then(|| {
            let mut d: Vec<String> = subset(rng, DOMAINS).into_iter().collect();
            if d.is_empty() {
                d.push(pick(rng, DOMAINS).to_string());
            }
            d
        }),
    }
}

fn random_req(rng: &mut StdRng) -> Req {
    Req {
        tokens: match rng.random_range(0..10) {
            0..=3 => None,
            4 => Some(ReqTokens::Star),
            _ => Some(ReqTokens::List(subset(rng, TOKENS))),
        },
        match_all: rng.random_bool(0.3),
        domain: maybe(rng, DOMAINS, 0.7),
        run: maybe(rng, RUNS, 0.2),
        scope: maybe(rng, SCOPES, 0.15),
    }
}

// ---------- translation to the engine ----------

fn grant_of(c: &Cred) -> Grant {
    let mut p = Vec::new();
    if c.read {
        p.push(Permission::Read);
    }
    if c.write {
        p.push(Permission::Write);
    }
    if c.all_principals {
        p.push(Permission::AllPrincipals);
    }
    Grant {
        permissions: Permissions::of(&p),
        user_tokens: c.tokens.as_ref().map(|t| {
            t.iter()
                .map(|s| UserToken::parse(s.as_str()).unwrap())
                .collect()
        }),
        domains: c.domains.as_ref().map(|d| {
            d.iter()
                .map(|s| Domain::parse(s.as_str()).unwrap())
                .collect()
        }),
    }
}

fn scope_of(q: &Req) -> RequestScope {
    RequestScope {
        user_tokens: q.tokens.as_ref().map(|t| match t {
            ReqTokens::Star => TokenSelector::AllPrincipals,
            ReqTokens::List(l) => TokenSelector::Tokens(
                l.iter()
                    .map(|s| UserToken::parse(s.as_str()).unwrap())
                    .collect(),
            ),
        }),
        user_match: if q.match_all {
            UserMatch::All
        } else {
            UserMatch::Any
        },
        memory_domain: q
            .domain
            .as_ref()
            .map(|d| Domain::parse(d.as_str()).unwrap()),
        run_id: q.run.as_ref().map(|r| RunId::parse(r.as_str()).unwrap()),
        memory_scope: q
            .scope
            .as_ref()
            .map(|s| MemoryScope::parse(s.as_str()).unwrap()),
    }
}

fn fail_of(e: EngineError) -> Fail {
    match e {
        EngineError::PermissionDenied(_) => Fail::Permission,
        EngineError::ScopeForbidden(_) => Fail::Scope,
        EngineError::NotFound => Fail::NotFound,
        EngineError::IdConflict(_) => Fail::Conflict,
        other => panic!("unexpected engine error: {other}"),
    }
}

fn mrec_of(r: &Record) -> MRec {
    MRec {
        id: r.id.to_string(),
        tokens: r.user_tokens.iter().map(|t| t.to_string()).collect(),
        domain: r.memory_domain.to_string(),
        run: r.run_id.as_ref().map(|x| x.to_string()),
        scope: r.memory_scope.as_ref().map(|x| x.to_string()),
        content: r.content.clone().unwrap_or_default(),
        n: r.metadata
            .get("n")
            .and_then(|v| v.as_i64())
            .unwrap_or(i64::MIN),
        vector: r.metadata.get("v").and_then(|v| v.as_u64()),
    }
}

fn n_filter(below: i64) -> Filter {
    Filter::parse(&json!({"n": {"$lt": below}})).unwrap()
}

// ---------- search ----------

/// Runs a random vector, text or hybrid search and checks it against the model: every hit is
/// visible and matches the filter, exactly min(k, eligible) hits come back, and an exact
/// vector plan returns the true top k.
#[allow(clippy::too_many_arguments)]
fn check_search(
    rng: &mut StdRng,
    engine: &Engine,
    scope: &TenantScope,
    rs: &RequestScope,
    cred: &Cred,
    req: &Req,
    model: &TenantModel,
    ctx: &str,
) -> bool {
    let k = rng.random_range(1..8);
    let below = rng.random_bool(0.4).then(|| rng.random_range(0..100));
    let qv = rng
        .random_bool(0.7)
        .then(|| vec_of(rng.random::<u32>() as u64));
    let word = (qv.is_none() || rng.random_bool(0.4)).then(|| pick(rng, WORDS).to_string());
    // Half the searches ask for ids and scores only (`include: []`), which names hits from the
    // index without reading their records: the same rules must hold.
    let ids_only = rng.random_bool(0.5);
    let search = SearchRequest {
        vector: qv.clone(),
        query: word.clone(),
        k,
        filter: below.map(n_filter),
        explain: true,
        include: ids_only.then(Vec::new),
        ..Default::default()
    };
    let actual = engine.search(scope, rs, &search).map_err(fail_of);
    let vis = match resolve(cred, req, false) {
        Err(e) => {
            assert_eq!(Err(e), actual.map(|_| ()), "{ctx}: search");
            return false;
        }
        Ok(vis) => vis,
    };
    let resp = actual.unwrap_or_else(|e| panic!("{ctx}: search failed with {e:?}"));
    let visible: Vec<&MRec> = model
        .records
        .values()
        .filter(|r| vis.sees(r) && below.is_none_or(|b| r.n < b))
        .collect();
    let by_vector: Vec<&MRec> = if qv.is_some() {
        visible
            .iter()
            .copied()
            .filter(|r| r.vector.is_some())
            .collect()
    } else {
        vec![]
    };
    let by_text: Vec<&MRec> = match &word {
        Some(w) => visible
            .iter()
            .copied()
            .filter(|r| has_word(&r.content, w))
            .collect(),
        None => vec![],
    };
    let eligible: BTreeSet<&str> = by_vector
        .iter()
        .chain(&by_text)
        .map(|r| r.id.as_str())
        .collect();
    let got: Vec<&str> = resp.hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(
        got.len(),
        k.min(eligible.len()),
        "{ctx}: search returned {got:?}, eligible {eligible:?}"
    );
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>().len(),
        got.len(),
        "{ctx}: duplicate hits"
    );
    for id in &got {
        assert!(
            eligible.contains(id),
            "{ctx}: search returned {id}, which is not visible or not matching"
        );
    }
    if let (Some(q), None) = (&qv, &word)
        && resp.exact
    {
        // The true top k by cosine, allowing for float rounding between equal-looking scores.
        let mut scores: Vec<f64> = by_vector
            .iter()
            .map(|r| cosine(q, &vec_of(r.vector.unwrap())))
            .collect();
        scores.sort_by(|a, b| b.total_cmp(a));
        for (h, want) in resp.hits.iter().zip(&scores) {
            let model_score = cosine(q, &vec_of(model.records[h.id.as_str()].vector.unwrap()));
            assert!(
                (f64::from(h.score) - model_score).abs() < 1e-4,
                "{ctx}: score of {}",
                h.id
            );
            assert!(
                (f64::from(h.score) - want).abs() < 1e-4,
                "{ctx}: exact top-k differs at {}",
                h.id
            );
        }
    }
    !got.is_empty()
}

// ---------- the test ----------

#[test]
fn random_operations_never_cross_the_visibility_boundary() {
    let seed: u64 = std::env::var("STRATA_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let ops: usize = std::env::var("STRATA_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    println!(
        "isolation model: seed {seed} (replay with STRATA_MODEL_SEED={seed}), {ops} operations"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let auth = Authenticator::new(&AuthConfig::default(), None).unwrap();
    let mut metas: Vec<TenantMeta> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for t in TENANTS {
        let id = TenantId::parse(*t).unwrap();
        engine.create_tenant(&op, &id, None).unwrap();
        metas.push(engine.tenant_meta(&id).unwrap());
        keys.push(mint_key(&engine, &auth, &id));
    }
    // Earlier incarnations: their metadata (as a scope issued before the delete holds it) and
    // their API key.
    let mut dead: Vec<(TenantMeta, String)> = Vec::new();
    let mut recreations = 0;
    let mut model: Vec<TenantModel> = vec![TenantModel::default(); TENANTS.len()];
    let mut links: Vec<LinkModel> = vec![LinkModel::new(); TENANTS.len()];
    let mut seen_ids: Vec<String> = CLIENT_IDS.iter().map(|s| s.to_string()).collect();
    let mut stats = BTreeMap::<&str, (usize, usize)>::new();

    for step in 0..ops {
        for (l, m) in links.iter_mut().zip(&model) {
            prune_links(l, m);
        }
        let t = rng.random_range(0..TENANTS.len());
        if rng.random_bool(0.004) {
            // Hard delete and create again under the same id; the model forgets the records.
            let id = metas[t].id.clone();
            engine.purge_tenant(&op, &id).unwrap();
            engine.create_tenant(&op, &id, None).unwrap();
            let old = std::mem::replace(&mut metas[t], engine.tenant_meta(&id).unwrap());
            let old_key = std::mem::replace(&mut keys[t], mint_key(&engine, &auth, &id));
            dead.push((old, old_key));
            model[t] = TenantModel::default();
            recreations += 1;
            continue;
        }
        if !dead.is_empty() && rng.random_bool(0.05) {
            let (old, old_key) = &dead[rng.random_range(0..dead.len())];
            let cred = random_cred(&mut rng);
            let req = random_req(&mut rng);
            check_dead_incarnation(&engine, &auth, old, old_key, &cred, &req, step, seed);
            continue;
        }
        if rng.random_bool(0.01) {
            // The live key authenticates to the live incarnation.
            match auth.authenticate(engine.credentials(), &keys[t]) {
                Ok(Principal::Tenant(s)) => assert_eq!(s.key(), metas[t].key, "step {step}"),
                other => panic!("step {step}: live key refused: {other:?}"),
            }
        }
        let cred = random_cred(&mut rng);
        let mut req = random_req(&mut rng);
        // Aim reads and writes by id at the tenant's own records most of the time, in their
        // domain, so that success and every kind of refusal all occur often.
        let target_id = if rng.random_bool(0.7) && !model[t].records.is_empty() {
            let i = rng.random_range(0..model[t].records.len());
            let r = model[t].records.values().nth(i).unwrap();
            if rng.random_bool(0.8) {
                req.domain = Some(r.domain.clone());
            }
            r.id.clone()
        } else {
            seen_ids[rng.random_range(0..seen_ids.len())].clone()
        };
        let scope = TenantScope::for_tests(&metas[t], grant_of(&cred));
        let rs = scope_of(&req);
        let ctx = format!(
            "step {step}, seed {seed}, tenant {}, cred {cred:?}, req {req:?}",
            TENANTS[t]
        );
        if rng.random_bool(0.1) {
            // Links and recall (their own block, below).
            // The other end: mostly a record of the same domain, so links often succeed.
            let domain = model[t].records.get(&target_id).map(|r| r.domain.clone());
            let same: Vec<&String> = model[t]
                .records
                .values()
                .filter(|r| rng.random_bool(0.2) || Some(&r.domain) == domain.as_ref())
                .map(|r| &r.id)
                .collect();
            let other = match same.len() {
                0 => pick(&mut rng, CLIENT_IDS).to_string(),
                n => same[rng.random_range(0..n)].clone(),
            };
            let (name, ok) = link_step(
                &mut rng,
                &engine,
                &scope,
                &rs,
                &cred,
                &req,
                &model[t],
                &mut links[t],
                &target_id,
                &other,
                &ctx,
            );
            let s = stats.entry(name).or_default();
            s.0 += 1;
            s.1 += ok as usize;
            continue;
        }
        let kind = rng.random_range(0..100);
        let name = match kind {
            0..=34 => "put",
            35..=49 => "get",
            50..=59 => "patch",
            60..=69 => "delete",
            70..=74 => "delete_where",
            75..=84 => "scan",
            85..=89 => "count",
            _ => "search",
        };
        let ok = match name {
            "put" => {
                let n_records = rng.random_range(1..=3);
                let mut news = Vec::new();
                let mut named = Vec::new();
                for _ in 0..n_records {
                    // A batch names an id once (a repeat is refused as a whole).
                    let id = rng
                        .random_bool(0.3)
                        .then(|| pick(&mut rng, CLIENT_IDS).to_string())
                        .filter(|id| !named.contains(id));
                    named.extend(id.clone());
                    let tokens = rng.random_bool(0.3).then(|| subset(&mut rng, TOKENS));
                    let run = maybe(&mut rng, RUNS, 0.5);
                    let sc = maybe(&mut rng, SCOPES, 0.3);
                    let content = pick(&mut rng, CONTENTS).to_string();
                    let n = rng.random_range(0..100);
                    let vector = rng.random_bool(0.6).then(|| rng.random::<u32>() as u64);
                    news.push((id, tokens, run, sc, content, n, vector));
                }
                // Model first.
                let expected: Result<Vec<(Option<String>, bool, bool)>, Fail> = (|| {
                    let vis = resolve(&cred, &req, true)?;
                    let mut tm = model[t].clone();
                    let mut out = Vec::new();
                    for (id, tokens, run, sc, content, n, vector) in &news {
                        let toks = vis.write_tokens(tokens.as_ref())?;
                        let mut r = MRec {
                            id: id.clone().unwrap_or_default(),
                            tokens: toks,
                            domain: vis.domain.clone(),
                            run: run.clone().or(req.run.clone()),
                            scope: sc.clone().or(req.scope.clone()),
                            content: content.clone(),
                            n: *n,
                            vector: *vector,
                        };
                        if id.is_some() {
                            match tm.records.get(&r.id) {
                                Some(existing) if !vis.sees(existing) => {
                                    return Err(Fail::Conflict);
                                }
                                Some(existing) if !vis.may_write(existing) => {
                                    return Err(Fail::Scope);
                                }
                                Some(_) => {
                                    tm.put(r.clone());
                                    out.push((Some(r.id), false, false));
                                }
                                None => {
                                    tm.put(r.clone());
                                    out.push((Some(r.id), true, false));
                                }
                            }
                        } else if let Some(existing) = dedup_key(&r).and_then(|k| tm.dedup.get(&k))
                        {
                            out.push((Some(existing.clone()), false, true));
                        } else {
                            // Server id: a placeholder until the engine's answer names it.
                            r.id = format!("\u{0}pending{}", out.len());
                            out.push((None, true, false));
                            tm.put(r);
                        }
                    }
                    Ok(out)
                })(
                );
                let records: Vec<NewRecord> = news
                    .iter()
                    .map(|(id, tokens, run, sc, content, n, vector)| NewRecord {
                        id: id.as_ref().map(|s| RecordId::parse(s.as_str()).unwrap()),
                        content: Some(content.clone()),
                        user_tokens: tokens.as_ref().map(|t| {
                            t.iter()
                                .map(|s| UserToken::parse(s.as_str()).unwrap())
                                .collect()
                        }),
                        run_id: run.as_ref().map(|s| RunId::parse(s.as_str()).unwrap()),
                        memory_scope: sc.as_ref().map(|s| MemoryScope::parse(s.as_str()).unwrap()),
                        vector: vector.map(vec_of),
                        metadata: match vector {
                            Some(v) => json!({"n": n, "v": v}),
                            None => json!({"n": n}),
                        }
                        .as_object()
                        .unwrap()
                        .clone(),
                        ..Default::default()
                    })
                    .collect();
                let actual = engine.put(&scope, &rs, records).map_err(fail_of);
                match (&expected, &actual) {
                    (Err(e), Err(a)) => assert_eq!(e, a, "{ctx}"),
                    (Ok(exp), Ok(act)) => {
                        assert_eq!(exp.len(), act.len(), "{ctx}");
                        // Replay into the real model now that server ids are known.
                        let vis = resolve(&cred, &req, true).unwrap();
                        for ((e, (id, tokens, run, sc, content, n, vector)), a) in
                            exp.iter().zip(&news).zip(act)
                        {
                            assert_eq!((e.1, e.2), (a.created, a.deduplicated), "{ctx}");
                            if let Some(eid) = &e.0 {
                                let eid = match eid.strip_prefix("\u{0}pending") {
                                    Some(i) => act[i.parse::<usize>().unwrap()].id.as_str(),
                                    None => eid.as_str(),
                                };
                                assert_eq!(eid, a.id.as_str(), "{ctx}");
                            }
                            if a.deduplicated {
                                continue;
                            }
                            let r = MRec {
                                id: a.id.to_string(),
                                tokens: vis.write_tokens(tokens.as_ref()).unwrap(),
                                domain: vis.domain.clone(),
                                run: run.clone().or(req.run.clone()),
                                scope: sc.clone().or(req.scope.clone()),
                                content: content.clone(),
                                n: *n,
                                vector: *vector,
                            };
                            if id.is_none() {
                                // A server id in one batch may dedup a later record of the same batch.
                                assert!(!model[t].records.contains_key(&r.id), "{ctx}: id reused");
                                seen_ids.push(r.id.clone());
                            }
                            model[t].put(r);
                        }
                    }
                    _ => panic!("{ctx}: model {expected:?}, engine {actual:?}"),
                }
                actual.is_ok()
            }
            "get" => {
                let id = target_id.clone();
                let expected = resolve(&cred, &req, false).and_then(|vis| {
                    model[t]
                        .records
                        .get(&id)
                        .filter(|r| vis.sees(r))
                        .cloned()
                        .ok_or(Fail::NotFound)
                });
                let actual = engine
                    .get(&scope, &rs, &RecordId::parse(id.as_str()).unwrap())
                    .map_err(fail_of);
                assert_eq!(
                    expected,
                    actual.as_ref().map(mrec_of).map_err(|e| *e),
                    "{ctx}: get {id}"
                );
                actual.is_ok()
            }
            "patch" => {
                let id = target_id.clone();
                let new_n = rng.random_range(0..100);
                let new_tokens = rng.random_bool(0.3).then(|| subset(&mut rng, TOKENS));
                let expected = resolve(&cred, &req, true).and_then(|vis| {
                    let mut r = model[t]
                        .records
                        .get(&id)
                        .filter(|r| vis.sees(r))
                        .cloned()
                        .ok_or(Fail::NotFound)?;
                    if !vis.may_write(&r) {
                        return Err(Fail::Scope);
                    }
                    if let Some(nt) = &new_tokens {
                        r.tokens = vis.write_tokens(Some(nt))?;
                    }
                    r.n = new_n;
                    Ok(r)
                });
                let patch = RecordPatch {
                    metadata: Some(Some(json!({"n": new_n}).as_object().unwrap().clone())),
                    user_tokens: new_tokens.as_ref().map(|t| {
                        t.iter()
                            .map(|s| UserToken::parse(s.as_str()).unwrap())
                            .collect()
                    }),
                    ..Default::default()
                };
                let actual = engine
                    .patch(&scope, &rs, &RecordId::parse(id.as_str()).unwrap(), patch)
                    .map_err(fail_of);
                assert_eq!(
                    expected,
                    actual.as_ref().map(mrec_of).map_err(|e| *e),
                    "{ctx}: patch {id}"
                );
                if let Ok(r) = expected {
                    model[t].put(r);
                }
                actual.is_ok()
            }
            "delete" => {
                let id = target_id.clone();
                let expected = resolve(&cred, &req, true).and_then(|vis| {
                    let r = model[t]
                        .records
                        .get(&id)
                        .filter(|r| vis.sees(r))
                        .ok_or(Fail::NotFound)?;
                    if vis.may_write(r) {
                        Ok(())
                    } else {
                        Err(Fail::Scope)
                    }
                });
                let actual = engine
                    .delete(&scope, &rs, &RecordId::parse(id.as_str()).unwrap())
                    .map_err(fail_of);
                assert_eq!(expected, actual, "{ctx}: delete {id}");
                if actual.is_ok() {
                    model[t].remove(&id);
                }
                actual.is_ok()
            }
            "delete_where" => {
                let below = rng.random_range(0..30);
                let expected = resolve(&cred, &req, true).map(|vis| {
                    let doomed: Vec<String> = model[t]
                        .records
                        .values()
                        .filter(|r| vis.sees(r) && vis.may_write(r) && r.n < below)
                        .map(|r| r.id.clone())
                        .collect();
                    doomed
                });
                let actual = engine
                    .delete_where(&scope, &rs, &n_filter(below))
                    .map_err(fail_of);
                assert_eq!(
                    expected.as_ref().map(|d| d.len() as u64).map_err(|e| *e),
                    actual,
                    "{ctx}: delete_where"
                );
                if let Ok(doomed) = expected {
                    for id in doomed {
                        model[t].remove(&id);
                    }
                }
                actual.is_ok()
            }
            "scan" => {
                let below = rng.random_bool(0.5).then(|| rng.random_range(0..100));
                let filter = below.map(n_filter);
                let limit = rng.random_range(1..6);
                let expected = resolve(&cred, &req, false).map(|vis| {
                    model[t]
                        .records
                        .values()
                        .filter(|r| vis.sees(r) && below.is_none_or(|b| r.n < b))
                        .cloned()
                        .collect::<Vec<_>>()
                });
                let mut actual: Result<Vec<MRec>, Fail> = Ok(Vec::new());
                let mut after = None;
                loop {
                    match engine.scan(
                        &scope,
                        &rs,
                        filter.as_ref(),
                        Page {
                            after: after.clone(),
                            limit,
                        },
                    ) {
                        Err(e) => {
                            actual = Err(fail_of(e));
                            break;
                        }
                        Ok(page) => {
                            assert!(page.records.len() <= limit, "{ctx}");
                            if let Ok(all) = &mut actual {
                                all.extend(page.records.iter().map(mrec_of));
                            }
                            match page.next {
                                Some(n) => after = Some(n),
                                None => break,
                            }
                        }
                    }
                }
                assert_eq!(
                    expected, actual,
                    "{ctx}: scan limit {limit} below {below:?}"
                );
                actual.is_ok()
            }
            "search" => check_search(&mut rng, &engine, &scope, &rs, &cred, &req, &model[t], &ctx),
            _ => {
                let expected = resolve(&cred, &req, false)
                    .map(|vis| model[t].records.values().filter(|r| vis.sees(r)).count() as u64);
                let actual = engine.count(&scope, &rs, None).map_err(fail_of);
                assert_eq!(expected, actual, "{ctx}: count");
                actual.is_ok()
            }
        };
        let s = stats.entry(name).or_default();
        s.0 += 1;
        s.1 += ok as usize;
    }

    // Finally, each tenant's full contents (seen by an all-principals credential in every
    // domain) equal the model's: nothing was written into or deleted from the wrong tenant.
    for (t, meta) in metas.iter().enumerate() {
        let cred = Grant {
            permissions: Permissions::of(&[Permission::Read, Permission::AllPrincipals]),
            user_tokens: None,
            domains: None,
        };
        let scope = TenantScope::for_tests(meta, cred);
        let mut all = Vec::new();
        for d in DOMAINS {
            let rs = RequestScope {
                user_tokens: Some(TokenSelector::AllPrincipals),
                memory_domain: Some(Domain::parse(*d).unwrap()),
                ..Default::default()
            };
            let page = engine
                .scan(
                    &scope,
                    &rs,
                    None,
                    Page {
                        after: None,
                        limit: 1000,
                    },
                )
                .unwrap();
            all.extend(page.records.iter().map(mrec_of));
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let expected: Vec<MRec> = model[t].records.values().cloned().collect();
        assert_eq!(all, expected, "final contents of tenant {}", TENANTS[t]);
    }
    println!("operations (total, succeeded): {stats:?}; {recreations} re-creations");
    assert!(
        ops < 2000 || recreations > 0,
        "tenants should be re-created in a long run"
    );
    for (name, (total, okc)) in &stats {
        assert!(
            *okc > 0 && okc < total,
            "{name}: both outcomes should occur ({okc} of {total} succeeded)"
        );
    }
}

/// Mints an API key for the current incarnation of `tenant`.
fn mint_key(engine: &Engine, auth: &Authenticator, tenant: &TenantId) -> String {
    let new = NewKey {
        tenant: KeyTenant::Tenant(tenant.clone()),
        name: None,
        permissions: Permissions::of(&[Permission::Read, Permission::Write]),
        user_tokens: None,
        domains: None,
        expires_at: None,
    };
    let op = OperatorScope::for_tests();
    auth.create_key(engine.credentials(), &op, new, &engine.key_audit(&op))
        .unwrap()
        .secret
}

/// An earlier incarnation's credentials act on nothing: its key does not authenticate, and a
/// scope issued before the delete (a request in flight across it) is refused on every
/// operation, whatever its grant and request, without changing anything (the final contents
/// check catches a write that slipped through).
#[allow(clippy::too_many_arguments)]
fn check_dead_incarnation(
    engine: &Engine,
    auth: &Authenticator,
    old: &TenantMeta,
    old_key: &str,
    cred: &Cred,
    req: &Req,
    step: usize,
    seed: u64,
) {
    let ctx = format!("step {step}, seed {seed}: dead incarnation of {}", old.id);
    assert!(
        matches!(
            auth.authenticate(engine.credentials(), old_key),
            Err(AuthError::Unauthorized(_))
        ),
        "{ctx}: its key still authenticates"
    );
    let scope = TenantScope::for_tests(old, grant_of(cred));
    let rs = scope_of(req);
    let refused = |r: Result<(), EngineError>, what: &str| {
        assert!(
            matches!(
                r,
                Err(EngineError::TenantNotFound(_)
                    | EngineError::PermissionDenied(_)
                    | EngineError::ScopeForbidden(_))
            ),
            "{ctx}: {what} answered {r:?}"
        );
    };
    let id = RecordId::parse("c0").unwrap();
    let rec = NewRecord {
        id: Some(id.clone()),
        content: Some("intruder".into()),
        ..Default::default()
    };
    refused(engine.put(&scope, &rs, vec![rec]).map(|_| ()), "put");
    refused(engine.get(&scope, &rs, &id).map(|_| ()), "get");
    refused(engine.delete(&scope, &rs, &id).map(|_| ()), "delete");
    refused(engine.count(&scope, &rs, None).map(|_| ()), "count");
    let page = Page {
        after: None,
        limit: 10,
    };
    refused(engine.scan(&scope, &rs, None, page).map(|_| ()), "scan");
    let search = SearchRequest {
        query: Some("tea".into()),
        ..Default::default()
    };
    refused(engine.search(&scope, &rs, &search).map(|_| ()), "search");
    refused(engine.collections(&scope).map(|_| ()), "collections");
    refused(engine.index_stats(&scope).map(|_| ()), "index_stats");
}

// ---------- links and recall ----------
//
// Links live in their own model beside the records: `(source, target, relation)` per tenant.
// Deleting a record deletes its links (the engine does it in the delete's transaction; the
// model prunes before every step). Checked: creating a link succeeds exactly when both ends
// are the tenant's records visible to the request; listing a record's links gives exactly the
// model's links whose other end is visible; and a recall (threshold 0, so every positive
// activation counts) returns exactly the seeds plus the records reachable from them through
// visible records within the depth, every path step being a link of this tenant between
// visible records. So no recall path returns or passes through an invisible record, and no
// link crosses tenants.

const RELATIONS: &[&str] = &["next", "causes"];

type LinkModel = BTreeSet<(String, String, String)>;

/// Drops the model's links of records the model no longer has.
fn prune_links(links: &mut LinkModel, model: &TenantModel) {
    links.retain(|(s, t, _)| model.records.contains_key(s) && model.records.contains_key(t));
}

/// One link, list or recall step; returns its name and whether it succeeded.
#[allow(clippy::too_many_arguments)]
fn link_step(
    rng: &mut StdRng,
    engine: &Engine,
    scope: &TenantScope,
    rs: &RequestScope,
    cred: &Cred,
    req: &Req,
    model: &TenantModel,
    links: &mut LinkModel,
    target_id: &str,
    other_id: &str,
    ctx: &str,
) -> (&'static str, bool) {
    match rng.random_range(0..3) {
        0 if target_id != other_id => {
            let relation = pick(rng, RELATIONS).to_string();
            let expected = resolve(cred, req, true).and_then(|vis| {
                let mut writable = false;
                for id in [target_id, other_id] {
                    let r = model
                        .records
                        .get(id)
                        .filter(|r| vis.sees(r))
                        .ok_or(Fail::NotFound)?;
                    writable |= vis.may_write(r);
                }
                if writable { Ok(()) } else { Err(Fail::Scope) }
            });
            let new = NewLink {
                source: RecordId::parse(target_id).unwrap(),
                target: RecordId::parse(other_id).unwrap(),
                relation: Relation::parse(relation.as_str()).unwrap(),
                weight: rng.random_range(0.1f32..=1.0),
            };
            let actual = engine.link(scope, rs, new).map(|_| ()).map_err(fail_of);
            assert_eq!(expected, actual, "{ctx}: link {target_id} -> {other_id}");
            if actual.is_ok() {
                links.insert((target_id.to_string(), other_id.to_string(), relation));
            }
            ("link", actual.is_ok())
        }
        0 | 1 => {
            let expected = resolve(cred, req, false).and_then(|vis| {
                model
                    .records
                    .get(target_id)
                    .filter(|r| vis.sees(r))
                    .ok_or(Fail::NotFound)?;
                let sees = |id: &str| model.records.get(id).is_some_and(|r| vis.sees(r));
                let out: BTreeSet<(String, String, String)> = links
                    .iter()
                    .filter(|(s, t, _)| s == target_id && sees(t))
                    .cloned()
                    .collect();
                let inc: BTreeSet<(String, String, String)> = links
                    .iter()
                    .filter(|(s, t, _)| t == target_id && sees(s))
                    .cloned()
                    .collect();
                Ok((out, inc))
            });
            let actual = engine
                .record_links(scope, rs, &RecordId::parse(target_id).unwrap())
                .map(|l| {
                    let set = |v: &[Link]| -> BTreeSet<(String, String, String)> {
                        v.iter()
                            .map(|l| {
                                (
                                    l.source.to_string(),
                                    l.target.to_string(),
                                    l.relation.to_string(),
                                )
                            })
                            .collect()
                    };
                    (set(&l.outgoing), set(&l.incoming))
                })
                .map_err(fail_of);
            assert_eq!(expected, actual, "{ctx}: links of {target_id}");
            ("links_of", actual.is_ok())
        }
        _ => check_recall(rng, engine, scope, rs, cred, req, model, links, ctx),
    }
}

#[allow(clippy::too_many_arguments)]
fn check_recall(
    rng: &mut StdRng,
    engine: &Engine,
    scope: &TenantScope,
    rs: &RequestScope,
    cred: &Cred,
    req: &Req,
    model: &TenantModel,
    links: &LinkModel,
    ctx: &str,
) -> (&'static str, bool) {
    let search = SearchRequest {
        query: Some(pick(rng, WORDS).to_string()),
        k: MAX_K,
        ..Default::default()
    };
    let asked = rng.random_bool(0.8).then(|| rng.random_range(0..5));
    let params = RecallParams {
        depth: asked,
        seeds: Some(rng.random_range(1..4)),
        threshold: 0.0,
        max_fanout: 100,
        ..Default::default()
    };
    let actual = engine.recall(scope, rs, &search, &params).map_err(fail_of);
    let vis = match resolve(cred, req, false) {
        Err(e) => {
            assert_eq!(Err(e), actual.map(|_| ()), "{ctx}: recall");
            return ("recall", false);
        }
        Ok(vis) => vis,
    };
    let resp = actual.unwrap_or_else(|e| panic!("{ctx}: recall failed with {e:?}"));
    let depth = asked
        .unwrap_or(DEFAULT_MAX_SPREADING_DEPTH)
        .min(DEFAULT_MAX_SPREADING_DEPTH);
    assert_eq!(resp.depth, depth, "{ctx}: recall depth");
    let sees = |id: &str| model.records.get(id).is_some_and(|r| vis.sees(r));
    let mut seeds = BTreeSet::new();
    for h in &resp.hits {
        let id = h.record.id.as_str();
        assert!(
            sees(id),
            "{ctx}: recall returned {id}, which the request cannot see"
        );
        match &h.via {
            Via::Seed(_) => {
                seeds.insert(id.to_string());
            }
            Via::Path(steps) => {
                assert!(
                    !steps.is_empty() && steps.len() <= depth as usize,
                    "{ctx}: {steps:?}"
                );
                assert_eq!(steps.last().unwrap().to.as_str(), id, "{ctx}");
                for s in steps {
                    let (from, to) = (s.from.as_str(), s.to.as_str());
                    assert!(
                        sees(from) && sees(to),
                        "{ctx}: recall passed through {from} -> {to}"
                    );
                    let (src, dst) = if s.reverse { (to, from) } else { (from, to) };
                    let link = (src.to_string(), dst.to_string(), s.relation.to_string());
                    assert!(
                        links.contains(&link),
                        "{ctx}: no such link in this tenant: {link:?}"
                    );
                }
            }
        }
    }
    // Exactly the records reachable from the seeds through visible records within the depth.
    let mut reached = seeds.clone();
    let mut frontier = seeds;
    for _ in 0..depth {
        let mut next = BTreeSet::new();
        for u in &frontier {
            for (s, t, _) in links {
                let other = if s == u {
                    t
                } else if t == u {
                    s
                } else {
                    continue;
                };
                if sees(other) && !reached.contains(other) {
                    next.insert(other.clone());
                }
            }
        }
        reached.extend(next.iter().cloned());
        frontier = next;
    }
    let got: BTreeSet<String> = resp.hits.iter().map(|h| h.record.id.to_string()).collect();
    assert_eq!(got, reached, "{ctx}: recall reached");
    ("recall", !got.is_empty())
}

// ---------- shared knowledge: grants, revocations, hierarchy changes (issue 14) ----------
//
// A separate random walk over four tenants: records in every domain, shares published and
// revoked, parents set and cleared, owners suspended, deleted and restored, and searches with
// `include_shared`. Every search must return exactly (own visible matching records) ∪
// (matching tenant-shared records of the selected, currently granted domains of live owners),
// each shared hit naming its source; writes by id through a grant find nothing; and at the end
// every tenant holds exactly what it wrote itself. `STRATA_MODEL_SEED` replays a run.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MStatus {
    Active,
    Suspended,
    Deleted,
}

#[derive(Debug, Clone)]
struct MShare {
    id: String,
    owner: usize,
    domain: String,
    /// Named grantees holding the offer (not declined).
    named: BTreeSet<usize>,
    /// Those of `named` that accepted it.
    accepted: BTreeSet<usize>,
    children: bool,
}

const SHARE_TENANTS: &[&str] = &["org", "team-a", "team-b", "partner"];

/// A record of the shares model: its domain, tokens and content.
type SharedRec = (String, BTreeSet<String>, String);

struct ShareModel {
    status: Vec<MStatus>,
    parent: Vec<Option<usize>>,
    shares: Vec<MShare>,
    /// Per tenant: id → (domain, tokens, content).
    records: Vec<BTreeMap<String, SharedRec>>,
}

impl ShareModel {
    /// Whether `g` may read share `s` right now: accepted by name, or held as a child.
    fn grants(&self, s: &MShare, g: usize) -> bool {
        s.owner != g
            && self.status[s.owner] == MStatus::Active
            && (s.accepted.contains(&g) || (s.children && self.parent[g] == Some(s.owner)))
    }

    /// Whether `g` lists share `s` among its incoming ones: a grant, or an offer by name.
    fn lists(&self, s: &MShare, g: usize) -> bool {
        self.grants(s, g)
            || (s.owner != g && self.status[s.owner] == MStatus::Active && s.named.contains(&g))
    }

    /// Whether `parent` may become `child`'s parent.
    fn parent_ok(&self, child: usize, parent: usize) -> bool {
        if parent == child || self.status[parent] == MStatus::Deleted {
            return false;
        }
        let mut at = Some(parent);
        while let Some(p) = at {
            if p == child {
                return false;
            }
            at = self.parent[p];
        }
        true
    }
}

fn share_scope(engine: &Engine, t: usize) -> TenantScope {
    let grant = Grant {
        permissions: Permissions::of(&[Permission::Read, Permission::Write, Permission::Admin]),
        user_tokens: None,
        domains: None,
    };
    let meta = engine
        .tenant_meta(&TenantId::parse(SHARE_TENANTS[t]).unwrap())
        .unwrap();
    TenantScope::for_tests(&meta, grant)
}

#[test]
fn random_shares_never_cross_the_grant_boundary() {
    let seed: u64 = std::env::var("STRATA_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let ops: usize = std::env::var("STRATA_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(3_000, |n: usize| n.min(3_000));
    println!("shares model: seed {seed} (replay with STRATA_MODEL_SEED={seed}), {ops} operations");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let n = SHARE_TENANTS.len();
    for t in SHARE_TENANTS {
        engine
            .create_tenant(&op, &TenantId::parse(*t).unwrap(), None)
            .unwrap();
    }
    let mut m = ShareModel {
        status: vec![MStatus::Active; n],
        parent: vec![None; n],
        shares: Vec::new(),
        records: vec![BTreeMap::new(); n],
    };
    let mut revoked: Vec<String> = Vec::new();
    let (mut shared_hits, mut searches, mut next_id) = (0usize, 0usize, 0usize);
    for step in 0..ops {
        let t = rng.random_range(0..n);
        let ctx = format!("step {step}, seed {seed}, tenant {}", SHARE_TENANTS[t]);
        let tid = TenantId::parse(SHARE_TENANTS[t]).unwrap();
        match rng.random_range(0..100) {
            0..=29 => {
                // A record of t's own, in a random domain, tenant-shared or bound to tokens.
                let id = format!("{}-{next_id}", SHARE_TENANTS[t]);
                next_id += 1;
                let domain = pick(&mut rng, DOMAINS).to_string();
                let tokens = if rng.random_bool(0.3) {
                    subset(&mut rng, TOKENS)
                } else {
                    BTreeSet::new()
                };
                let content = pick(&mut rng, CONTENTS).to_string();
                let rs = RequestScope {
                    memory_domain: Some(Domain::parse(domain.as_str()).unwrap()),
                    ..Default::default()
                };
                let record = NewRecord {
                    id: Some(RecordId::parse(id.as_str()).unwrap()),
                    content: Some(content.clone()),
                    user_tokens: Some(
                        tokens
                            .iter()
                            .map(|s| UserToken::parse(s.as_str()).unwrap())
                            .collect(),
                    ),
                    ..Default::default()
                };
                let put = engine.put(&share_scope(&engine, t), &rs, vec![record]);
                assert_eq!(
                    put.is_ok(),
                    m.status[t] == MStatus::Active,
                    "{ctx}: put {put:?}"
                );
                if put.is_ok() {
                    m.records[t].insert(id, (domain, tokens, content));
                }
            }
            30..=35 => {
                let domain = pick(&mut rng, DOMAINS).to_string();
                let named: BTreeSet<usize> = (0..n).filter(|_| rng.random_bool(0.3)).collect();
                let children = rng.random_bool(0.5);
                let new = NewShare {
                    domain: Domain::parse(domain.as_str()).unwrap(),
                    tenants: named
                        .iter()
                        .map(|g| TenantId::parse(SHARE_TENANTS[*g]).unwrap())
                        .collect(),
                    children,
                };
                // A deleted grantee is answered like a live one, and offered nothing.
                let expected = m.status[t] == MStatus::Active
                    && (children || !named.is_empty())
                    && !named.contains(&t);
                let offered: BTreeSet<usize> = named
                    .iter()
                    .copied()
                    .filter(|g| m.status[*g] != MStatus::Deleted)
                    .collect();
                let got = engine.create_share(&share_scope(&engine, t), &new);
                assert_eq!(
                    got.is_ok(),
                    expected,
                    "{ctx}: create share {new:?}: {got:?}"
                );
                if let Ok(s) = got {
                    m.shares.push(MShare {
                        id: s.id,
                        owner: t,
                        domain,
                        named: offered,
                        accepted: BTreeSet::new(),
                        children,
                    });
                }
            }
            36..=39 => {
                // t accepts or declines a share, offered to it by name or not.
                let Some(pos) = (!m.shares.is_empty()).then(|| rng.random_range(0..m.shares.len()))
                else {
                    continue;
                };
                let s = &m.shares[pos];
                let accept = rng.random_bool(0.7);
                // Accepting needs a live offer of an active owner; declining only the offer:
                // consent is withdrawn whatever state the owner is in.
                let offered = m.status[t] == MStatus::Active && s.named.contains(&t);
                let expected = offered && (!accept || m.lists(s, t));
                let scope = share_scope(&engine, t);
                let got = if accept {
                    engine.accept_share(&scope, &s.id).map(|_| ())
                } else {
                    engine.decline_share(&scope, &s.id).map(|_| ())
                };
                assert_eq!(
                    got.is_ok(),
                    expected,
                    "{ctx}: accept {accept} {s:?}: {got:?}"
                );
                if got.is_ok() {
                    let s = &mut m.shares[pos];
                    if accept {
                        s.accepted.insert(t);
                    } else {
                        s.named.remove(&t);
                        s.accepted.remove(&t);
                    }
                }
            }
            40..=45 => {
                // Revoke one of t's shares, or try someone else's, or a revoked one.
                let pick_id = match rng.random_range(0..3) {
                    0 if !revoked.is_empty() => revoked[rng.random_range(0..revoked.len())].clone(),
                    _ if !m.shares.is_empty() => {
                        m.shares[rng.random_range(0..m.shares.len())].id.clone()
                    }
                    _ => "sh-none".to_string(),
                };
                let pos = m
                    .shares
                    .iter()
                    .position(|s| s.id == pick_id && s.owner == t);
                let expected = pos.is_some() && m.status[t] == MStatus::Active;
                let got = engine.revoke_share(&share_scope(&engine, t), &pick_id);
                assert_eq!(got.is_ok(), expected, "{ctx}: revoke {pick_id}: {got:?}");
                if got.is_ok() {
                    m.shares.remove(pos.unwrap());
                    revoked.push(pick_id);
                }
            }
            46..=53 => {
                // The operator moves t in the hierarchy.
                let parent = rng.random_bool(0.7).then(|| rng.random_range(0..n));
                let expected = parent.is_none_or(|p| m.parent_ok(t, p));
                let update = TenantUpdate {
                    parent: Some(parent.map(|p| TenantId::parse(SHARE_TENANTS[p]).unwrap())),
                    ..Default::default()
                };
                let got = engine.update_tenant(&op, &tid, update);
                assert_eq!(got.is_ok(), expected, "{ctx}: parent {parent:?}: {got:?}");
                if got.is_ok() {
                    m.parent[t] = parent;
                }
            }
            54..=59 => {
                // The operator changes t's lifecycle.
                let (got, next) = match (m.status[t], rng.random_range(0..2)) {
                    (MStatus::Active, 0) => (engine.suspend_tenant(&op, &tid), MStatus::Suspended),
                    (MStatus::Active, _) => (engine.delete_tenant(&op, &tid), MStatus::Deleted),
                    (MStatus::Suspended, _) => (engine.resume_tenant(&op, &tid), MStatus::Active),
                    (MStatus::Deleted, _) => (engine.restore_tenant(&op, &tid), MStatus::Active),
                };
                assert!(got.is_ok(), "{ctx}: lifecycle {got:?}");
                m.status[t] = next;
            }
            60..=64 => {
                // A write by id through a grant: a shared record's id is not the grantee's.
                let Some(s) = m.shares.iter().find(|s| m.grants(s, t)) else {
                    continue;
                };
                let Some((id, (domain, _, _))) = m.records[s.owner].iter().next() else {
                    continue;
                };
                let rs = RequestScope {
                    memory_domain: Some(Domain::parse(domain.as_str()).unwrap()),
                    ..Default::default()
                };
                let rid = RecordId::parse(id.as_str()).unwrap();
                let scope = share_scope(&engine, t);
                assert!(
                    engine.delete(&scope, &rs, &rid).is_err(),
                    "{ctx}: delete through a grant"
                );
                assert!(
                    engine.get(&scope, &rs, &rid).is_err(),
                    "{ctx}: get through a grant"
                );
            }
            _ => {
                searches += 1;
                shared_hits += check_shared_search(&mut rng, &engine, &m, t, &revoked, &ctx);
            }
        }
    }
    // Nothing was written through a grant: each tenant holds exactly its own records.
    #[allow(clippy::needless_range_loop)] // `t` indexes the model's vectors too.
    for t in 0..n {
        if m.status[t] != MStatus::Active {
            let tid = TenantId::parse(SHARE_TENANTS[t]).unwrap();
            match m.status[t] {
                MStatus::Suspended => engine.resume_tenant(&op, &tid).unwrap(),
                _ => engine.restore_tenant(&op, &tid).unwrap(),
            };
        }
        let scope = share_scope(&engine, t);
        let mut held = BTreeSet::new();
        for d in DOMAINS {
            let rs = RequestScope {
                user_tokens: Some(TokenSelector::AllPrincipals),
                memory_domain: Some(Domain::parse(*d).unwrap()),
                ..Default::default()
            };
            let all = Grant {
                permissions: Permissions::of(&[Permission::Read, Permission::AllPrincipals]),
                user_tokens: None,
                domains: None,
            };
            let scope = TenantScope::for_tests(&engine.tenant_meta(scope.tenant()).unwrap(), all);
            let page = engine
                .scan(
                    &scope,
                    &rs,
                    None,
                    Page {
                        after: None,
                        limit: 1000,
                    },
                )
                .unwrap();
            held.extend(page.records.into_iter().map(|r| r.id.to_string()));
        }
        let expected: BTreeSet<String> = m.records[t].keys().cloned().collect();
        assert_eq!(held, expected, "final contents of {}", SHARE_TENANTS[t]);
    }
    println!("shares model: {searches} searches, {shared_hits} shared hits");
    assert!(
        ops < 1000 || shared_hits > 0,
        "no search ever crossed a grant"
    );
}

/// One search by `t` with a random `include_shared`, checked against the model exactly;
/// also checks `incoming_shares`. Returns how many hits came from shared domains.
fn check_shared_search(
    rng: &mut StdRng,
    engine: &Engine,
    m: &ShareModel,
    t: usize,
    revoked: &[String],
    ctx: &str,
) -> usize {
    let scope = share_scope(engine, t);
    let domain = pick(rng, DOMAINS).to_string();
    let tokens = subset(rng, TOKENS);
    let word = pick(rng, WORDS).to_string();
    let selector = match rng.random_range(0..4) {
        0 => None,
        1 => Some(SharedSelector::All),
        _ => {
            let mut refs = Vec::new();
            for s in &m.shares {
                if rng.random_bool(0.4) {
                    refs.push(if rng.random_bool(0.5) {
                        SharedRef::Id(s.id.clone())
                    } else {
                        SharedRef::OwnerDomain(
                            TenantId::parse(SHARE_TENANTS[s.owner]).unwrap(),
                            Domain::parse(s.domain.as_str()).unwrap(),
                        )
                    });
                }
            }
            if let Some(r) = revoked.first() {
                refs.push(SharedRef::Id(r.clone()));
            }
            Some(SharedSelector::Some(refs))
        }
    };
    let rs = RequestScope {
        memory_domain: Some(Domain::parse(domain.as_str()).unwrap()),
        user_tokens: Some(TokenSelector::Tokens(
            tokens
                .iter()
                .map(|s| UserToken::parse(s.as_str()).unwrap())
                .collect(),
        )),
        ..Default::default()
    };
    let search = SearchRequest {
        query: Some(word.clone()),
        k: MAX_K,
        include_shared: selector.clone(),
        ..Default::default()
    };
    let got = engine.search(&scope, &rs, &search);
    let incoming = engine.incoming_shares(&scope);
    if m.status[t] != MStatus::Active {
        assert!(
            got.is_err() && incoming.is_err(),
            "{ctx}: a tenant that is not live searched"
        );
        return 0;
    }
    let got = got.unwrap_or_else(|e| panic!("{ctx}: search failed: {e}"));
    // Own: visible in the request's domain with its tokens; shared: tenant-shared records of
    // each selected live grant's domain.
    let mut expected: BTreeSet<(String, Option<(String, String)>)> = m.records[t]
        .iter()
        .filter(|(_, (d, toks, c))| {
            *d == domain && (toks.is_empty() || !toks.is_disjoint(&tokens)) && has_word(c, &word)
        })
        .map(|(id, _)| (id.clone(), None))
        .collect();
    let mut live: Vec<(String, String, String)> = Vec::new();
    for s in m.shares.iter().filter(|s| m.lists(s, t)) {
        let owner = TenantId::parse(SHARE_TENANTS[s.owner]).unwrap();
        let d = Domain::parse(s.domain.as_str()).unwrap();
        live.push((s.id.clone(), owner.to_string(), s.domain.clone()));
        if !m.grants(s, t)
            || !selector
                .as_ref()
                .is_some_and(|sel| sel.selects(&s.id, &owner, &d))
        {
            continue;
        }
        for (id, (rd, toks, c)) in &m.records[s.owner] {
            if *rd == s.domain && toks.is_empty() && has_word(c, &word) {
                expected.insert((id.clone(), Some((owner.to_string(), s.domain.clone()))));
            }
        }
    }
    let actual: BTreeSet<(String, Option<(String, String)>)> = got
        .hits
        .iter()
        .map(|h| {
            let src = h
                .source
                .as_ref()
                .map(|s| (s.tenant.to_string(), s.domain.to_string()));
            (h.id.to_string(), src)
        })
        .collect();
    assert_eq!(actual.len(), got.hits.len(), "{ctx}: duplicate hits");
    // Two grants of one domain return its records once per grant: compare without the share.
    assert_eq!(actual, expected, "{ctx}: search with {selector:?}");
    let mut held: Vec<(String, String, String)> = incoming
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.owner.to_string(), s.domain.to_string()))
        .collect();
    held.sort();
    live.sort();
    assert_eq!(held, live, "{ctx}: incoming shares");
    got.hits.iter().filter(|h| h.source.is_some()).count()
}
