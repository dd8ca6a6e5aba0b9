//! The last re-embed of each collection, kept beside the tenant's data (a blob per collection,
//! `reembed:<name>`), so that its status tells the truth after a restart: a job that finished
//! shows its result, and one that was running when the server stopped shows as failed,
//! interrupted. Only the status is kept: the staged vectors stay in memory (`crate::reembed`),
//! so an interrupted job is never resumed; the collection is whole on its old model and the
//! operator starts it again.
//!
//! Written when a job starts, after each step (so an interrupted job reports the texts it had
//! embedded by its last step, not the zero of its start), in the switching transaction itself
//! when it is done (so the row and the collection's model can never disagree), and when it
//! fails. The row's job id is also the floor of the next job's (`Jobs::next_id`): the
//! in-memory counter starts again with each instance.

use serde::{Deserialize, Serialize};
use strata_store::codec::{decode_json, encode_json};
use strata_store::{Reads, StoreError, TenantKey, Writer};
use strata_types::{CollectionName, Millis};

use crate::reembed::{ReembedState, ReembedStatus};

pub(crate) const BLOB_PREFIX: &str = "reembed:";

/// What [`ReembedStatus::error`] says of a job the server stopped while it ran.
pub(crate) const INTERRUPTED: &str = "interrupted: the server stopped while it ran; the \
    collection is unchanged, on its old model: start it again";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Stored {
    /// The collection's creation time: the row of an earlier collection of the same name
    /// (deleted since) is not this one's.
    pub collection_created_at: Millis,
    /// The engine instance that ran the job (`Jobs::boot`): a row still `running` from
    /// another one was cut short by a restart.
    pub boot: String,
    pub status: ReembedStatus,
}

fn blob_name(collection: &CollectionName) -> String {
    format!("{BLOB_PREFIX}{collection}")
}

pub(crate) fn save(w: &mut Writer<'_>, key: TenantKey, row: &Stored) -> Result<(), StoreError> {
    w.put_blob(key, &blob_name(&row.status.collection), &encode_json(row)?)
}

/// The row, for reads: one that does not decode is `StoreError::Corrupt` naming the collection
/// (stored state decodes closed, never to a default).
pub(crate) fn load(
    r: &impl Reads,
    key: TenantKey,
    collection: &CollectionName,
) -> Result<Option<Stored>, StoreError> {
    r.blob(key, &blob_name(collection))?
        .map(|bytes| decode(collection, &bytes))
        .transpose()
}

/// The row, for a job about to write its own: one that does not decode reads as absent, with a
/// warning, so that the next write replaces it. The row is only a report of a past job, not
/// data: refusing here would block every re-embed of the collection, with no repair but
/// deleting it. Storage errors still fail.
pub(crate) fn load_replaceable(
    r: &impl Reads,
    key: TenantKey,
    collection: &CollectionName,
) -> Result<Option<Stored>, StoreError> {
    let Some(bytes) = r.blob(key, &blob_name(collection))? else {
        return Ok(None);
    };
    match decode(collection, &bytes) {
        Ok(row) => Ok(Some(row)),
        Err(e) => {
            tracing::warn!(%collection, error = %e, "replacing a re-embed status that does not decode");
            Ok(None)
        }
    }
}

fn decode(collection: &CollectionName, bytes: &[u8]) -> Result<Stored, StoreError> {
    decode_json(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "re-embed status of collection {collection}: {e}; a new re-embed of it replaces it"
        ))
    })
}

/// Removed with its collection.
pub(crate) fn delete(
    w: &mut Writer<'_>,
    key: TenantKey,
    collection: &CollectionName,
) -> Result<(), StoreError> {
    w.delete_blob(key, &blob_name(collection))
}

/// For `verify`: the row decodes.
pub(crate) fn check(bytes: &[u8]) -> Result<(), StoreError> {
    decode_json::<Stored>(bytes).map(|_| ())
}

impl Stored {
    /// The status as this engine instance (`boot`) tells it: a job still `running` in a row of
    /// another instance ended with that instance.
    pub(crate) fn status_seen_by(self, boot: &str) -> ReembedStatus {
        let mut status = self.status;
        if status.state == ReembedState::Running && self.boot != boot {
            status.state = ReembedState::Failed;
            status.error = Some(INTERRUPTED.into());
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_types::EmbedderRef;

    fn row(state: ReembedState, boot: &str) -> Stored {
        Stored {
            collection_created_at: 7,
            boot: boot.into(),
            status: ReembedStatus {
                collection: CollectionName::parse("notes").unwrap(),
                state,
                model: None,
                target_model: Some(EmbedderRef {
                    model_id: "m".into(),
                    weights_hash: "00".into(),
                }),
                records_total: 3,
                records_embedded: 1,
                started_at: Some(1),
                finished_at: None,
                error: None,
                job: Some(2),
            },
        }
    }

    #[test]
    fn a_running_row_of_another_instance_reads_as_interrupted() {
        let mine = row(ReembedState::Running, "b").status_seen_by("b");
        assert_eq!((mine.state, mine.error), (ReembedState::Running, None));
        let theirs = row(ReembedState::Running, "a").status_seen_by("b");
        assert_eq!(theirs.state, ReembedState::Failed);
        assert_eq!(theirs.error.as_deref(), Some(INTERRUPTED));
        // Its figures stay as they were when it stopped.
        assert_eq!((theirs.records_embedded, theirs.job), (1, Some(2)));
        for state in [ReembedState::Done, ReembedState::Failed] {
            assert_eq!(row(state, "a").status_seen_by("b").state, state);
        }
    }

    #[test]
    fn the_stored_form_round_trips_and_refuses_unknown_fields() {
        let r = row(ReembedState::Done, "a");
        let bytes = encode_json(&r).unwrap();
        assert_eq!(decode_json::<Stored>(&bytes).unwrap(), r);
        check(&bytes).unwrap();
        let mut v = serde_json::to_value(&r).unwrap();
        v["colour"] = 1.into();
        assert!(check(&encode_json(&v).unwrap()).is_err());
    }
}
