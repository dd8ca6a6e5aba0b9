//! The built-in embedder inside the engine: which records and queries it embeds, and the rule
//! that a collection never mixes models.
//!
//! A collection declares its model ([`Collection::embedder`]). The server's loaded embedder
//! embeds for it only when the two identities match exactly (model id and weights hash).
//! Embedding runs inside engine calls, which `strata-api` runs on the fair-queueing pool
//! charged to the calling tenant, and before a write's transaction opens, so neither the
//! tenant's write lock nor the storage write lock is ever held during a forward pass (a patch's
//! new content too: `Engine::patch` embeds it from a snapshot first). A write's texts are
//! embedded in steps of a bounded cost (`crate::put_steps`), each its own pool job.
//!
//! A forward pass takes no lock, so the job of a tenant over its share of the CPU computes it
//! at the background priority (`strata_sched::compute_aside`, [`forward_pass`]): a tenant
//! flooding text writes or text searches one at a time, never with a backlog, otherwise
//! embedded on the normal workers, and another tenant's search shared the core with it.

use std::sync::Arc;

use strata_auth::{Permission, TenantScope};
use strata_embed::{EmbedError, Embedder};
use strata_store::Reads;
use strata_types::{Collection, CollectionName, EmbedderRef, NewRecord};

use crate::{Engine, EngineError};

/// The identity stored with a collection that this embedder embeds.
pub(crate) fn identity(e: &Embedder) -> EmbedderRef {
    EmbedderRef {
        model_id: e.model_id().to_owned(),
        weights_hash: e.weights_hash().to_owned(),
    }
}

/// Whether text in `collection` is to be embedded by the server's `loaded` model.
///
/// `false` when the collection declares no model, or when the server runs without an embedder
/// (its text then stays text-only). A collection that declares another model than the loaded
/// one is refused: embedding with it would put two models' vectors in one space.
pub(crate) fn embeds(
    loaded: Option<&EmbedderRef>,
    collection: &Collection,
) -> Result<bool, EngineError> {
    match (loaded, &collection.embedder) {
        (Some(l), Some(c)) if l == c => Ok(true),
        (Some(l), Some(c)) => Err(EngineError::ModelMismatch {
            collection: collection.name.clone(),
            collection_model: describe(c),
            server_model: describe(l),
        }),
        _ => Ok(false),
    }
}

fn describe(r: &EmbedderRef) -> String {
    let short = r.weights_hash.get(..12).unwrap_or(&r.weights_hash);
    format!("{} (weights sha256 {short}…)", r.model_id)
}

/// Embeds `texts` in one call, mapping the embedder's errors to the engine's.
pub(crate) fn embed(e: &Arc<Embedder>, texts: &[&str]) -> Result<Vec<Vec<f32>>, EngineError> {
    forward_pass(e, texts).map_err(|err| embed_error(err, |i| i))
}

/// `e`'s forward pass over `texts`: on the calling thread, or, in a job of a tenant over its
/// share, on its worker's helper at the background priority (the texts copied for it: a copy
/// costs microseconds where the pass costs milliseconds).
pub(crate) fn forward_pass(e: &Arc<Embedder>, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
    forward_pass_allowed();
    if !strata_sched::sets_aside() {
        passed_on_this_thread();
        return e.embed(texts);
    }
    let (e, texts) = (
        Arc::clone(e),
        texts.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
    );
    strata_sched::compute_aside(move || {
        passed_on_this_thread();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        e.embed(&texts)
    })
}

/// The threads forward passes ran on, by name, in order (tests read it).
#[cfg(test)]
pub(crate) static PASSES_ON: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn passed_on_this_thread() {
    #[cfg(test)]
    if let Some(name) = std::thread::current().name() {
        crate::registry::lock(&PASSES_ON).push(name.to_owned());
    }
}

/// A forward pass takes milliseconds: inside a write transaction it would hold the storage
/// write lock, and every other tenant's writes with it. Checked in debug builds (the tests).
pub(crate) fn forward_pass_allowed() {
    debug_assert!(
        !strata_store::in_write_path(),
        "a forward pass inside a storage write transaction"
    );
}

/// The engine's error for an embedder's, naming a refused text by `record(index of the text
/// in the call)`.
pub(crate) fn embed_error(err: EmbedError, record: impl Fn(usize) -> usize) -> EngineError {
    match err {
        EmbedError::Input { index, message } => {
            EngineError::BadRequest(format!("content of record {}: {message}", record(index)))
        }
        other => EngineError::Embedding(other.to_string()),
    }
}

pub(crate) fn text_collection() -> CollectionName {
    CollectionName::parse("text").expect("invariant: literal name is valid")
}

impl Engine {
    /// The server's embedder and its identity, when one is loaded.
    pub(crate) fn loaded_embedder(&self) -> Option<(&Arc<Embedder>, EmbedderRef)> {
        self.embedder.as_ref().map(|e| (e, identity(e)))
    }

    /// Which records of a write the loaded model is to embed: those with content, no vector,
    /// and a collection that declares the loaded model. Embeds nothing itself: the write's
    /// steps do (`crate::put_steps`), so the write can also check at commit that those
    /// collections did not change in between.
    pub(crate) fn records_to_embed(
        &self,
        scope: &TenantScope,
        records: &[NewRecord],
    ) -> Result<Vec<bool>, EngineError> {
        let mut embedded = vec![false; records.len()];
        let Some((_, loaded)) = self.loaded_embedder() else {
            return Ok(embedded);
        };
        if !records
            .iter()
            .any(|r| r.vector.is_none() && r.content.is_some())
        {
            return Ok(embedded);
        }
        let collections =
            self.read_tenant(
                scope,
                Permission::Write,
                |r| Ok(r.collections(scope.key())?),
            )?;
        for (i, r) in records.iter().enumerate() {
            let (None, Some(_)) = (&r.vector, &r.content) else {
                continue;
            };
            let name = r.modality.clone().unwrap_or_else(text_collection);
            // A missing collection is reported by the write itself.
            let Some(c) = collections.iter().find(|c| c.name == name) else {
                continue;
            };
            embedded[i] = embeds(Some(&loaded), c)?;
        }
        Ok(embedded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_types::Metric;

    fn model(id: &str, hash: &str) -> EmbedderRef {
        EmbedderRef {
            model_id: id.into(),
            weights_hash: hash.into(),
        }
    }

    fn collection(embedder: Option<EmbedderRef>) -> Collection {
        Collection {
            name: text_collection(),
            dim: 384,
            metric: Metric::Cosine,
            created_at: 0,
            embedder,
            analyzer: Default::default(),
            memory: Default::default(),
        }
    }

    #[test]
    fn only_the_declared_model_embeds() {
        let mini = model("mini", "aaaa");
        assert!(embeds(Some(&mini), &collection(Some(mini.clone()))).unwrap());
        // No model declared, or none loaded: text stays text-only, nothing is refused.
        assert!(!embeds(Some(&mini), &collection(None)).unwrap());
        assert!(!embeds(None, &collection(Some(mini.clone()))).unwrap());
    }

    #[test]
    fn another_model_or_other_weights_are_refused_naming_both() {
        let declared = collection(Some(model("mini", "aaaaaaaaaaaaaaaa")));
        for loaded in [
            model("other", "aaaaaaaaaaaaaaaa"),
            model("mini", "bbbbbbbbbbbbbbbb"),
        ] {
            let err = embeds(Some(&loaded), &declared).unwrap_err();
            let EngineError::ModelMismatch { .. } = &err else {
                panic!("{err:?}");
            };
            let msg = err.to_string();
            assert!(msg.contains("text") && msg.contains("mini"), "{msg}");
            assert!(msg.contains(&loaded.model_id), "{msg}");
        }
    }
}
