//! A client thread: a seeded mix of record operations on ids of its own, so that it knows
//! exactly what each acknowledged operation left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value, json};

use crate::model::{
    COLLECTION, COMMON_WORD, DOMAINS, Failures, Rec, Rng, Shared, TOKEN_SETS, http, overloaded,
    send, send_with, tenant_id, tenant_refusal,
};

/// Ids per client: few enough that operations keep meeting records written before.
const IDS: usize = 30;
/// Hits asked of a search during the load: fewer than a tenant's records in a domain can be.
const SEARCH_K: usize = 20;

/// The one operation of a client whose answer never arrived: after the restart the records it
/// touched are either all as `before` or all as `after`.
pub struct Pending {
    pub what: String,
    pub before: Vec<(String, Option<Rec>)>,
    pub after: Vec<(String, Option<Rec>)>,
    /// How to send it again, for a write sent with an `Idempotency-Key`.
    pub retry: Option<Retry>,
}

/// A write as sent, to send again after the restart with the same `Idempotency-Key`, as a
/// client whose connection was cut does.
pub struct Retry {
    pub path: String,
    pub body: Value,
    pub key: String,
}

pub struct ClientModel {
    pub tenant: usize,
    pub client: usize,
    /// Every id of this client: the record its last acknowledged write left, or `None`.
    pub state: BTreeMap<String, Option<Rec>>,
    /// Links (source, target) acknowledged as made (`true`) or removed (`false`) whose ends
    /// have not been written since.
    pub links: BTreeMap<(String, String), bool>,
    pub pending: Option<Pending>,
    acknowledged: usize,
    /// What became of the last write (a link's state is remembered from it).
    last: Outcome,
    /// The `Idempotency-Key` of the next write, when it is a record write.
    idempotency_key: Option<String>,
    /// Writes sent so far, naming their idempotency keys and request ids.
    writes: u64,
    /// This round's acknowledged writes, by the `X-Request-Id` they were sent with, and the
    /// audit action each must have left a row of.
    pub audited: Vec<(String, &'static str)>,
}

/// What became of a write.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Acknowledged,
    /// Refused as the API documents (overload, a paused tenant): nothing was applied.
    Refused,
    /// No answer, or an answer that failed its check.
    Unknown,
}

/// What the loop does after an operation.
enum Next {
    Go,
    /// The connection was cut or a check failed: this client is done for the round.
    Stop,
}

impl ClientModel {
    pub fn new(tenant: usize, client: usize) -> ClientModel {
        let state = (0..IDS)
            .map(|i| (format!("{}-c{client}-{i}", tenant_id(tenant)), None))
            .collect();
        ClientModel {
            tenant,
            client,
            state,
            links: BTreeMap::new(),
            pending: None,
            acknowledged: 0,
            last: Outcome::Unknown,
            idempotency_key: None,
            writes: 0,
            audited: Vec::new(),
        }
    }

    pub fn acknowledged_this_round(&self) -> usize {
        self.acknowledged
    }

    fn owner(&self) -> String {
        format!("c{}", self.client)
    }

    pub fn run(
        &mut self,
        mut rng: Rng,
        url: &str,
        key: &str,
        shared: &Shared,
        stop: &AtomicBool,
        failures: &Failures,
    ) {
        self.acknowledged = 0;
        self.audited.clear();
        let mut ctx = Ctx {
            http: http(),
            url,
            key,
            shared,
            failures,
        };
        while !stop.load(Ordering::SeqCst) {
            let next = match rng.below(100) {
                0..=24 => self.put_one(&mut rng, &mut ctx),
                25..=34 => self.put_batch(&mut rng, &mut ctx),
                35..=46 => self.patch_content(&mut rng, &mut ctx),
                47..=53 => self.patch_scope(&mut rng, &mut ctx),
                54..=57 => self.patch_vector(&mut rng, &mut ctx),
                58..=62 => self.move_domain(&mut rng, &mut ctx),
                63..=71 => self.delete_one(&mut rng, &mut ctx),
                72..=74 => self.delete_where(&mut rng, &mut ctx),
                75..=77 => self.link(&mut rng, &mut ctx),
                78..=79 => self.unlink(&mut rng, &mut ctx),
                80..=83 => self.evidence(&mut rng, &mut ctx),
                84..=87 => self.get(&mut rng, &mut ctx),
                88..=90 => self.list_own(&mut rng, &mut ctx),
                _ => self.search(&mut rng, &mut ctx),
            };
            if let Next::Stop = next {
                return;
            }
        }
    }

    fn new_rec(&self, rng: &mut Rng, domain: &str) -> Rec {
        let mut metadata = Map::new();
        metadata.insert("owner".into(), json!(self.owner()));
        metadata.insert("tag".into(), json!(rng.below(4)));
        if rng.below(2) == 0 {
            metadata.insert("note".into(), json!(rng.words()));
        }
        // Drawn in this order, so that a seed keeps its mix.
        let (content, vector) = (rng.words(), rng.vector());
        Rec {
            tokens: rng
                .pick(&TOKEN_SETS)
                .iter()
                .map(|t| t.to_string())
                .collect(),
            run_id: (rng.below(2) == 0).then(|| format!("run{}", rng.below(3))),
            memory_scope: (rng.below(3) == 0).then(|| "scope-a".to_owned()),
            metadata,
            ..Rec::fresh(domain, content, vector)
        }
    }

    fn next_idempotency_key(&mut self) -> String {
        format!(
            "{}-c{}-w{}",
            tenant_id(self.tenant),
            self.client,
            self.writes + 1
        )
    }

    fn random_id(&self, rng: &mut Rng) -> String {
        let ids: Vec<&String> = self.state.keys().collect();
        rng.pick(&ids).to_string()
    }

    fn existing(&self, rng: &mut Rng) -> Option<(String, Rec)> {
        let live: Vec<(&String, &Rec)> = self
            .state
            .iter()
            .filter_map(|(id, r)| r.as_ref().map(|r| (id, r)))
            .collect();
        if live.is_empty() {
            return None;
        }
        let (id, r) = rng.pick(&live);
        Some((id.to_string(), (*r).clone()))
    }

    fn put_one(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        let id = self.random_id(rng);
        let current = self.state[&id].clone();
        let domain = current
            .as_ref()
            .map_or_else(|| rng.pick(&DOMAINS).to_string(), |r| r.domain.clone());
        let rec = self.new_rec(rng, &domain);
        let want = if current.is_none() { 201 } else { 200 };
        let body = rec.write_body(&id);
        let path = format!("/v1/memories?{}", scope(&domain));
        let expected_id = id.clone();
        self.idempotency_key = Some(self.next_idempotency_key());
        self.write(
            ctx,
            format!("put {id}"),
            "POST",
            &path,
            Some(body),
            vec![(id, Some(rec))],
            move |s, v| {
                if s != want || v["id"] != expected_id.as_str() {
                    return Err(format!("expected {want} naming the record, got {s}: {v}"));
                }
                Ok(())
            },
        )
    }

    fn put_batch(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        let domain = rng.pick(&DOMAINS).to_string();
        let mut eligible: Vec<String> = self
            .state
            .iter()
            .filter(|(_, r)| r.as_ref().is_none_or(|r| r.domain == domain))
            .map(|(id, _)| id.clone())
            .collect();
        let n = 2 + rng.below(4);
        if eligible.len() < n {
            return self.put_one(rng, ctx);
        }
        let mut chosen = Vec::new();
        for _ in 0..n {
            chosen.push(eligible.swap_remove(rng.below(eligible.len())));
        }
        let created: Vec<bool> = chosen.iter().map(|id| self.state[id].is_none()).collect();
        let changes: Vec<(String, Option<Rec>)> = chosen
            .iter()
            .map(|id| (id.clone(), Some(self.new_rec(rng, &domain))))
            .collect();
        let records: Vec<Value> = changes
            .iter()
            .map(|(id, r)| r.as_ref().expect("new record").write_body(id))
            .collect();
        let path = format!("/v1/memories?{}", scope(&domain));
        self.idempotency_key = Some(self.next_idempotency_key());
        self.write(
            ctx,
            format!("batch put {chosen:?}"),
            "POST",
            &path,
            Some(json!({ "records": records })),
            changes,
            move |_, v| {
                let results = v["results"].as_array().cloned().unwrap_or_default();
                let answered: Vec<(Value, Value)> = results
                    .iter()
                    .map(|r| (r["id"].clone(), r["created"].clone()))
                    .collect();
                let wanted: Vec<(Value, Value)> = chosen
                    .iter()
                    .zip(&created)
                    .map(|(id, c)| (json!(id), json!(c)))
                    .collect();
                if answered != wanted {
                    return Err(format!("expected (id, created) {wanted:?}, got {v}"));
                }
                Ok(())
            },
        )
    }

    /// A patch of an existing record: `change` edits the expected record and the body.
    fn patch(
        &mut self,
        rng: &mut Rng,
        ctx: &mut Ctx,
        what: &str,
        change: impl FnOnce(&mut Rng, &mut Rec) -> Value,
    ) -> Next {
        self.change(rng, ctx, what, ("PATCH", ""), change)
    }

    /// A change of an existing record by `method` on its path plus `route`, answered with the
    /// record: `change` edits the expected record and makes the body.
    fn change(
        &mut self,
        rng: &mut Rng,
        ctx: &mut Ctx,
        what: &str,
        (method, route): (&str, &str),
        change: impl FnOnce(&mut Rng, &mut Rec) -> Value,
    ) -> Next {
        let Some((id, before)) = self.existing(rng) else {
            return self.put_one(rng, ctx);
        };
        let mut after = before.clone();
        let body = change(rng, &mut after);
        let path = format!(
            "/v1/memories/{id}{route}?{}",
            whole_record_scope(&before.domain)
        );
        let expected = after.clone();
        self.write(
            ctx,
            format!("{what} {id} with {body}"),
            method,
            &path,
            Some(body),
            vec![(id, Some(after))],
            move |_, v| match Rec::from_json(v) {
                Some(got) if got == expected => Ok(()),
                _ => Err(format!("expected {expected:?}, got {v}")),
            },
        )
    }

    fn patch_content(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        self.patch(rng, ctx, "patch content of", |rng, rec| {
            rec.content = rng.words();
            let tag = rng.below(4);
            rec.metadata.insert("tag".into(), json!(tag));
            let note = if rng.below(2) == 0 {
                rec.metadata.remove("note");
                Value::Null
            } else {
                let note = json!(rng.words());
                rec.metadata.insert("note".into(), note.clone());
                note
            };
            json!({"content": rec.content, "metadata": {"tag": tag, "note": note}})
        })
    }

    fn patch_scope(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        self.patch(rng, ctx, "patch scope of", |rng, rec| {
            rec.tokens = rng.pick(&TOKEN_SETS).iter().map(|t| t.to_string()).collect();
            rec.run_id = (rng.below(2) == 0).then(|| format!("run{}", rng.below(3)));
            rec.memory_scope = (rng.below(2) == 0).then(|| "scope-b".to_owned());
            json!({"user_tokens": rec.tokens, "run_id": rec.run_id, "memory_scope": rec.memory_scope})
        })
    }

    fn patch_vector(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        self.patch(rng, ctx, "patch vector of", |rng, rec| {
            rec.vector = rng.vector();
            json!({"vector": rec.vector})
        })
    }

    fn move_domain(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        self.patch(rng, ctx, "move", |_, rec| {
            let to = if rec.domain == DOMAINS[0] {
                DOMAINS[1]
            } else {
                DOMAINS[0]
            };
            rec.domain = to.to_owned();
            json!({ "move_to_domain": to })
        })
    }

    /// Evidence: a read-modify-write of the record's confidence, answered with the record.
    fn evidence(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        let route = ("POST", "/evidence");
        self.change(rng, ctx, "evidence on", route, |rng, rec| {
            let corroborate = rng.below(2) == 0;
            rec.add_evidence(corroborate);
            if corroborate {
                json!({"corroborate": true})
            } else {
                json!({"contradict": true})
            }
        })
    }

    fn delete_one(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        let id = self.random_id(rng);
        let Some(current) = self.state[&id].clone() else {
            // Deleted or never written: the server must not find it.
            let domain = rng.pick(&DOMAINS).to_string();
            let path = format!("/v1/memories/{id}?{}", scope(&domain));
            return self.read(ctx, "DELETE", &path, None, |s, v| {
                (s == 404)
                    .then_some(())
                    .ok_or(format!("delete of absent {id}: expected 404, got {s}: {v}"))
            });
        };
        let path = format!("/v1/memories/{id}?{}", scope(&current.domain));
        self.write(
            ctx,
            format!("delete {id}"),
            "DELETE",
            &path,
            None,
            vec![(id, None)],
            |_, v| {
                (v["deleted"] == 1)
                    .then_some(())
                    .ok_or(format!("expected deleted 1, got {v}"))
            },
        )
    }

    fn delete_where(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        let domain = rng.pick(&DOMAINS).to_string();
        let tag = rng.below(4);
        let owner = self.owner();
        let changes: Vec<(String, Option<Rec>)> = self
            .state
            .iter()
            .filter(|(_, r)| {
                r.as_ref()
                    .is_some_and(|r| r.domain == domain && r.metadata["tag"] == tag)
            })
            .map(|(id, _)| (id.clone(), None))
            .collect();
        let n = changes.len();
        let path = format!("/v1/memories/delete?{}", scope(&domain));
        self.write(
            ctx,
            format!("delete where owner {owner} tag {tag} in {domain}"),
            "POST",
            &path,
            Some(json!({"filter": {"owner": owner, "tag": tag}})),
            changes,
            move |_, v| {
                (v["deleted"] == n)
                    .then_some(())
                    .ok_or(format!("expected deleted {n}, got {v}"))
            },
        )
    }

    fn link(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        let (Some((source, s)), Some((target, t))) = (self.existing(rng), self.existing(rng))
        else {
            return self.put_one(rng, ctx);
        };
        if source == target || s.domain != t.domain {
            return self.get(rng, ctx);
        }
        let path = format!("/v1/links?{}", scope(&s.domain));
        let body =
            json!({"source": source, "target": target, "relation": "related", "weight": 0.5});
        let (source_id, target_id) = (source.clone(), target.clone());
        let next = self.write(
            ctx,
            format!("link {source} -> {target}"),
            "POST",
            &path,
            Some(body),
            Vec::new(),
            move |s, v| {
                let right = s == 201
                    && v["source"] == source_id.as_str()
                    && v["target"] == target_id.as_str()
                    && v["relation"] == "related"
                    && v["weight"] == 0.5;
                right
                    .then_some(())
                    .ok_or(format!("expected 201 naming the link, got {s}: {v}"))
            },
        );
        self.remember_link((source, target), true);
        next
    }

    fn unlink(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        let made: Vec<&(String, String)> = self
            .links
            .iter()
            .filter_map(|(l, made)| made.then_some(l))
            .collect();
        if made.is_empty() {
            return self.link(rng, ctx);
        }
        let (source, target) = rng.pick(&made).to_owned().clone();
        let Some(Some(rec)) = self.state.get(&source) else {
            return self.get(rng, ctx);
        };
        let path = format!("/v1/links/delete?{}", scope(&rec.domain));
        let body = json!({"source": source, "target": target, "relation": "related"});
        let next = self.write(
            ctx,
            format!("unlink {source} -> {target}"),
            "POST",
            &path,
            Some(body),
            Vec::new(),
            // The link was acknowledged and neither end written since: exactly one removed.
            |s, v| {
                (s == 200 && *v == json!({"deleted": 1}))
                    .then_some(())
                    .ok_or(format!("expected 200 {{\"deleted\": 1}}, got {s}: {v}"))
            },
        );
        self.remember_link((source, target), false);
        next
    }

    /// After a link or unlink: what it was acknowledged to do, what held before a refusal,
    /// or nothing known.
    fn remember_link(&mut self, link: (String, String), made: bool) {
        match self.last {
            Outcome::Acknowledged => {
                self.links.insert(link, made);
            }
            Outcome::Refused => {}
            Outcome::Unknown => {
                self.links.remove(&link);
            }
        }
    }

    fn get(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        let id = self.random_id(rng);
        let current = self.state[&id].clone();
        let domain = current
            .as_ref()
            .map_or_else(|| rng.pick(&DOMAINS).to_string(), |r| r.domain.clone());
        let path = format!("/v1/memories/{id}?{}", whole_record_scope(&domain));
        self.read(ctx, "GET", &path, None, move |s, v| match &current {
            Some(rec) if s == 200 && Rec::from_json(v).as_ref() == Some(rec) => Ok(()),
            None if s == 404 => Ok(()),
            _ => Err(format!("GET {id}: expected {current:?}, got {s}: {v}")),
        })
    }

    /// Lists or counts this client's own records in a domain: exactly the records its
    /// acknowledged writes left there (no other thread writes them), each as it left it.
    fn list_own(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        let domain = rng.pick(&DOMAINS).to_string();
        let filter = json!({"owner": self.owner()});
        let expected: BTreeMap<String, Rec> = self
            .state
            .iter()
            .filter_map(|(id, r)| Some((id.clone(), r.clone()?)))
            .filter(|(_, r)| r.domain == domain)
            .collect();
        if rng.below(2) == 0 {
            let path = format!("/v1/memories/count?{}", scope(&domain));
            let n = expected.len();
            let body = json!({ "filter": filter });
            return self.read(ctx, "POST", &path, Some(body), move |s, v| {
                (s == 200 && v["count"] == n).then_some(()).ok_or(format!(
                    "count of own in {domain}: expected {n}, got {s}: {v}"
                ))
            });
        }
        let path = format!("/v1/memories/list?{}", scope(&domain));
        let body = json!({"filter": filter, "limit": 1000, "include": ["record", "vector"]});
        self.read(ctx, "POST", &path, Some(body), move |s, v| {
            let listed: Option<BTreeMap<String, Rec>> = v["records"].as_array().and_then(|l| {
                l.iter()
                    .map(|r| Some((r["id"].as_str()?.to_owned(), Rec::from_json(r)?)))
                    .collect()
            });
            if s == 200 && v["next"].is_null() && listed.as_ref() == Some(&expected) {
                return Ok(());
            }
            Err(format!(
                "list of own in {domain}: expected {:?}, got {s}: {v}",
                expected.keys().collect::<Vec<_>>()
            ))
        })
    }

    fn search(&mut self, rng: &mut Rng, ctx: &mut Ctx) -> Next {
        let domain = rng.pick(&DOMAINS).to_string();
        let mut body = match rng.below(3) {
            0 => json!({"vector": rng.vector(), "mode": "vector"}),
            1 => json!({"query": format!("{COMMON_WORD} river"), "mode": "text"}),
            _ => json!({"vector": rng.vector(), "query": "cloud tide", "mode": "hybrid"}),
        };
        body["modality"] = json!(COLLECTION);
        body["k"] = json!(SEARCH_K);
        let own = rng.below(2) == 0;
        if own {
            body["filter"] = json!({"owner": self.owner()});
        }
        // Ids and scores only: the path that may answer from the index's resident part alone.
        let ids_only = rng.below(3) == 0;
        if ids_only {
            body["include"] = json!([]);
        }
        let prefix = format!("{}-", tenant_id(self.tenant));
        let mine = format!("{}-c{}-", tenant_id(self.tenant), self.client);
        let path = format!("/v1/search?{}", scope(&domain));
        let state = self.state.clone();
        // This client's records in the domain are settled (its one request in flight is this
        // search), every one matches (all carry the common word, all have vectors, the request
        // sees every principal), and other clients' records only add to them: so at least
        // this many hits, and exactly this many when the filter names this client. (Without
        // the filter the engine's guarantee has one documented exception: writes committing
        // just before its last try that hide more candidates than it ranks beyond k; other
        // clients' writes could in principle do that, with a delete by filter of many of
        // their records in that instant. A failure names the search and its hits.)
        let settled = state
            .values()
            .filter(|r| r.as_ref().is_some_and(|r| r.domain == domain))
            .count();
        let at_least = settled.min(SEARCH_K);
        self.read(ctx, "POST", &path, Some(body.clone()), move |s, v| {
            let Some(hits) = v["hits"].as_array().filter(|_| s == 200) else {
                return Err(format!("search {body}: expected hits, got {s}: {v}"));
            };
            let ids: BTreeSet<&str> = hits.iter().filter_map(|h| h["id"].as_str()).collect();
            let scores: Vec<f64> = hits.iter().filter_map(|h| h["score"].as_f64()).collect();
            if scores.len() != hits.len() || scores.windows(2).any(|w| w[0] < w[1]) {
                return Err(format!(
                    "search {body} in {domain}: hits not best first by score: {v}"
                ));
            }
            if ids.len() != hits.len()
                || hits.len() < at_least
                || hits.len() > SEARCH_K
                || (own && hits.len() != at_least)
            {
                return Err(format!(
                    "search {body} in {domain}: {} hits ({} distinct), expected {} \
                     ({settled} records of this client match): {v}",
                    hits.len(),
                    ids.len(),
                    if own {
                        format!("exactly {at_least}")
                    } else {
                        format!("{at_least} to {SEARCH_K}")
                    },
                ));
            }
            for hit in hits {
                let id = hit["id"].as_str().unwrap_or("");
                if !id.starts_with(&prefix) {
                    return Err(format!(
                        "search {body}: hit {id} is not of this tenant: {v}"
                    ));
                }
                // This client's own records are exactly known: an acknowledged write is
                // searchable at once, a deleted or moved record is not found here.
                let known = state.get(id).map(|r| r.as_ref().map(|r| r.domain.as_str()));
                if own && (!id.starts_with(&mine) || known != Some(Some(domain.as_str()))) {
                    return Err(format!(
                        "search {body} in {domain}: hit {id} is not a live record of this \
                         client in the domain ({known:?}): {v}"
                    ));
                }
                // A record of this client is answered as its last acknowledged write left it.
                if let Some(Some(rec)) = state.get(id).filter(|_| !ids_only)
                    && (rec.domain != domain
                        || hit["content"] != rec.content.as_str()
                        || hit["metadata"].as_object() != Some(&rec.metadata))
                {
                    return Err(format!(
                        "search {body} in {domain}: hit {hit} differs from {rec:?}"
                    ));
                }
            }
            Ok(())
        })
    }

    /// Sends a write; on `2xx` checks the answer with `check` and records `changes`.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        ctx: &mut Ctx,
        what: String,
        method: &str,
        path: &str,
        body: Option<Value>,
        changes: Vec<(String, Option<Rec>)>,
        check: impl FnOnce(u16, &Value) -> Result<(), String>,
    ) -> Next {
        self.last = Outcome::Unknown;
        let before: Vec<(String, Option<Rec>)> = changes
            .iter()
            .map(|(id, _)| (id.clone(), self.state[id].clone()))
            .collect();
        let mark = ctx.shared.mark(self.tenant);
        let url = format!("{}{path}", ctx.url);
        let tenant = tenant_id(self.tenant);
        let idempotency_key = self.idempotency_key.take();
        self.writes += 1;
        let request_id = format!("{tenant}-c{}-w{}", self.client, self.writes);
        let mut headers = vec![("x-request-id", request_id.as_str())];
        if let Some(k) = &idempotency_key {
            headers.push(("idempotency-key", k.as_str()));
        }
        let answer = send_with(&ctx.http, method, &url, ctx.key, body.as_ref(), &headers)
            .map(|(s, v, _)| (s, v));
        let paused = ctx.shared.may_refuse(self.tenant, mark);
        if !matches!(&answer, Ok((s, v)) if refused(*s, v, &tenant, paused)) {
            // A write of either end may drop or hide a link: only untouched links are checked.
            self.links
                .retain(|(s, t), _| !changes.iter().any(|(id, _)| id == s || id == t));
        }
        match answer {
            Err(_) => {
                let retry = idempotency_key.zip(body).map(|(key, body)| Retry {
                    path: path.to_owned(),
                    body,
                    key,
                });
                self.pending = Some(Pending {
                    what,
                    before,
                    after: changes,
                    retry,
                });
                Next::Stop
            }
            Ok((s, v)) if (200..300).contains(&s) => {
                if let Err(e) = check(s, &v) {
                    ctx.failures.push(format!("tenant {tenant}: {what}: {e}"));
                    return Next::Stop;
                }
                self.state.extend(changes);
                self.audited.push((request_id, audit_action(method, path)));
                self.acknowledged += 1;
                self.last = Outcome::Acknowledged;
                Next::Go
            }
            Ok((s, v)) if refused(s, &v, &tenant, paused) => {
                self.last = Outcome::Refused;
                Next::Go
            }
            Ok((s, v)) => {
                ctx.failures
                    .push(format!("tenant {tenant}: {what}: answered {s}: {v}"));
                Next::Stop
            }
        }
    }

    /// Sends a request that changes nothing and checks its answer.
    fn read(
        &mut self,
        ctx: &mut Ctx,
        method: &str,
        path: &str,
        body: Option<Value>,
        check: impl FnOnce(u16, &Value) -> Result<(), String>,
    ) -> Next {
        let mark = ctx.shared.mark(self.tenant);
        let url = format!("{}{path}", ctx.url);
        match send(&ctx.http, method, &url, ctx.key, body.as_ref()) {
            Err(_) => Next::Stop,
            Ok((s, v))
                if refused(
                    s,
                    &v,
                    &tenant_id(self.tenant),
                    ctx.shared.may_refuse(self.tenant, mark),
                ) =>
            {
                Next::Go
            }
            Ok((s, v)) => match check(s, &v) {
                Ok(()) => Next::Go,
                Err(e) => {
                    ctx.failures
                        .push(format!("tenant {}: {e}", tenant_id(self.tenant)));
                    Next::Stop
                }
            },
        }
    }
}

/// What every request of a client round needs.
struct Ctx<'a> {
    http: reqwest::blocking::Client,
    url: &'a str,
    key: &'a str,
    shared: &'a Shared,
    failures: &'a Failures,
}

/// The query string of a request in `domain` that sees every principal's records.
pub fn scope(domain: &str) -> String {
    format!("memory_domain={domain}&user_tokens=*")
}

/// [`scope`] for a route that answers a record, asking for all of it: without `include`, a
/// record is answered without its vector.
pub fn whole_record_scope(domain: &str) -> String {
    format!("{}&include=record,vector", scope(domain))
}

/// The audit action an acknowledged write of `method` on `path` leaves a row of.
fn audit_action(method: &str, path: &str) -> &'static str {
    let route = path.split('?').next().unwrap_or(path);
    match (method, route) {
        ("POST", "/v1/memories") => "memory.put",
        ("POST", "/v1/memories/delete") => "memory.delete_where",
        ("POST", "/v1/links") => "link.put",
        ("POST", "/v1/links/delete") => "link.delete",
        ("POST", r) if r.ends_with("/evidence") => "memory.evidence",
        ("PATCH", _) => "memory.patch",
        ("DELETE", _) => "memory.delete",
        _ => "unknown",
    }
}

/// Whether an answer is a refusal that applied nothing: an overload, or the refusal of a
/// paused tenant while the operator may have paused it (`paused`).
fn refused(status: u16, v: &Value, tenant: &str, paused: bool) -> bool {
    overloaded(status) || (paused && tenant_refusal(status, v, tenant))
}

#[test]
fn each_write_route_names_its_audit_action() {
    let q = "?memory_domain=default&user_tokens=*";
    for (method, path, action) in [
        ("POST", "/v1/memories", "memory.put"),
        ("POST", "/v1/memories/delete", "memory.delete_where"),
        ("POST", "/v1/links", "link.put"),
        ("POST", "/v1/links/delete", "link.delete"),
        (
            "POST",
            "/v1/memories/chaos0-c0-1/evidence",
            "memory.evidence",
        ),
        ("PATCH", "/v1/memories/chaos0-c0-1", "memory.patch"),
        ("DELETE", "/v1/memories/chaos0-c0-1", "memory.delete"),
    ] {
        assert_eq!(audit_action(method, &format!("{path}{q}")), action);
    }
}
