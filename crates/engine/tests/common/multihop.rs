//! A synthetic multi-hop memory set, shared by the recall CI test and the recall benchmark.
//!
//! `sessions` conversations of `turns` turns each; every turn has its own random unit vector
//! (nothing about a turn's vector says which session it is in), consecutive turns are joined
//! by a `next` link (weight 1), and every turn also gets `noise` `related` links (weight 0.2) to
//! random turns anywhere. A question is the vector of one turn plus a little noise, and its
//! answer is the turn `hops` later in the same session: reachable only through the chain of
//! `next` links, never by similarity.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::Engine;
use strata_types::{
    CollectionName, Metric, NewLink, NewRecord, RecordId, Relation, RequestScope, TenantId,
};

pub struct MultiHop {
    pub scope: TenantScope,
    pub collection: CollectionName,
    /// `(query vector, answer id, hops)`.
    pub questions: Vec<(Vec<f32>, RecordId, u32)>,
}

fn unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.into_iter().map(|x| x / norm).collect()
}

fn turn_id(s: usize, t: usize) -> RecordId {
    RecordId::parse(format!("s{s}-t{t}")).expect("valid id")
}

/// Builds the set in a new tenant `tenant` of `engine` and returns it with `per_hop`
/// questions for each of 1, 2 and 3 hops.
#[allow(clippy::too_many_arguments)]
pub fn build(
    engine: &Engine,
    tenant: &str,
    sessions: usize,
    turns: usize,
    noise: usize,
    dim: usize,
    per_hop: usize,
    seed: u64,
) -> MultiHop {
    let mut rng = StdRng::seed_from_u64(seed);
    let id = TenantId::parse(tenant).expect("tenant id");
    engine
        .create_tenant(&OperatorScope::for_tests(), &id, None)
        .expect("tenant");
    let grant = Grant {
        permissions: Permissions::of(&[Permission::Read, Permission::Write, Permission::Admin]),
        user_tokens: None,
        domains: None,
    };
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).expect("meta"), grant);
    let collection = CollectionName::parse("turns").expect("name");
    engine
        .create_collection(&scope, &collection, dim as u32, Metric::Cosine)
        .expect("collection");
    let req = RequestScope::default();
    let mut vectors = Vec::with_capacity(sessions * turns);
    let mut batch = Vec::new();
    for s in 0..sessions {
        for t in 0..turns {
            let v = unit(&mut rng, dim);
            vectors.push(v.clone());
            batch.push(NewRecord {
                id: Some(turn_id(s, t)),
                modality: Some(collection.clone()),
                vector: Some(v),
                ..Default::default()
            });
            if batch.len() == 1000 {
                engine
                    .put(&scope, &req, std::mem::take(&mut batch))
                    .expect("put");
            }
        }
    }
    if !batch.is_empty() {
        engine.put(&scope, &req, batch).expect("put");
    }
    let next = Relation::parse("next").expect("relation");
    let related = Relation::parse("related").expect("relation");
    let mut links = Vec::new();
    for s in 0..sessions {
        for t in 0..turns {
            if t + 1 < turns {
                links.push(NewLink {
                    source: turn_id(s, t),
                    target: turn_id(s, t + 1),
                    relation: next.clone(),
                    weight: 1.0,
                });
            }
            for _ in 0..noise {
                let (os, ot) = (rng.random_range(0..sessions), rng.random_range(0..turns));
                if (os, ot) != (s, t) {
                    links.push(NewLink {
                        source: turn_id(s, t),
                        target: turn_id(os, ot),
                        relation: related.clone(),
                        weight: 0.2,
                    });
                }
            }
            if links.len() >= 900 {
                engine
                    .link_batch(&scope, &req, std::mem::take(&mut links))
                    .expect("links");
            }
        }
    }
    if !links.is_empty() {
        engine.link_batch(&scope, &req, links).expect("links");
    }
    let mut questions = Vec::new();
    for hops in 1..=3u32 {
        for _ in 0..per_hop {
            let s = rng.random_range(0..sessions);
            let t = rng.random_range(0..turns - hops as usize);
            let mut q: Vec<f32> = vectors[s * turns + t].clone();
            let noise = unit(&mut rng, dim);
            for (x, n) in q.iter_mut().zip(noise) {
                *x += 0.2 * n;
            }
            questions.push((q, turn_id(s, t + hops as usize), hops));
        }
    }
    MultiHop {
        scope,
        collection,
        questions,
    }
}
