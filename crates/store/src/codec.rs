//! Binary encoding of stored values: postcard, with JSON text for free-form metadata (postcard
//! cannot carry self-describing values) and a leading version byte so the layout can evolve.

use serde::{Deserialize, Serialize};
use strata_types::{
    CollectionName, Confidence, Domain, Kind, MemoryScope, Millis, Record, RecordId, RunId,
    UserToken,
};

use crate::StoreError;

const RECORD_V1: u8 = 1;

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    id: RecordId,
    modality: CollectionName,
    kind: Option<Kind>,
    content: Option<String>,
    vector: Option<Vec<f32>>,
    user_tokens: Vec<UserToken>,
    memory_domain: Domain,
    run_id: Option<RunId>,
    memory_scope: Option<MemoryScope>,
    metadata: String,
    created_at: Millis,
    updated_at: Millis,
    expires_at: Option<Millis>,
    confidence: (f64, u32, u32, u32),
}

pub(crate) fn encode_record(r: &Record) -> Result<Vec<u8>, StoreError> {
    let c = r.confidence;
    let stored = StoredRecord {
        id: r.id.clone(),
        modality: r.modality.clone(),
        kind: r.kind.clone(),
        content: r.content.clone(),
        vector: r.vector.clone(),
        user_tokens: r.user_tokens.clone(),
        memory_domain: r.memory_domain.clone(),
        run_id: r.run_id.clone(),
        memory_scope: r.memory_scope.clone(),
        metadata: serde_json::to_string(&r.metadata)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: r.created_at,
        updated_at: r.updated_at,
        expires_at: r.expires_at,
        confidence: (
            c.value,
            c.evidence_count,
            c.corroborations,
            c.contradictions,
        ),
    };
    let out = vec![RECORD_V1];
    postcard::to_extend(&stored, out).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn decode_record(bytes: &[u8]) -> Result<Record, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("record: {e}"));
    let (version, body) = bytes.split_first().ok_or_else(|| corrupt(&"empty value"))?;
    if *version != RECORD_V1 {
        return Err(corrupt(&format!("unknown version {version}")));
    }
    let s: StoredRecord = postcard::from_bytes(body).map_err(|e| corrupt(&e))?;
    let metadata = serde_json::from_str(&s.metadata).map_err(|e| corrupt(&e))?;
    let (value, evidence_count, corroborations, contradictions) = s.confidence;
    Ok(Record {
        id: s.id,
        modality: s.modality,
        kind: s.kind,
        content: s.content,
        vector: s.vector,
        user_tokens: s.user_tokens,
        memory_domain: s.memory_domain,
        run_id: s.run_id,
        memory_scope: s.memory_scope,
        metadata,
        created_at: s.created_at,
        updated_at: s.updated_at,
        expires_at: s.expires_at,
        confidence: Confidence {
            value,
            evidence_count,
            corroborations,
            contradictions,
        },
    })
}

/// Collections and tenant metadata are small and rarely written: JSON keeps them readable.
pub(crate) fn encode_json<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn decode_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn record_round_trips() {
        let r = Record {
            id: RecordId::parse("0190-abc").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: Some(Kind::parse("episodic").unwrap()),
            content: Some("hello".into()),
            vector: Some(vec![0.25, -1.5, 3.0]),
            user_tokens: vec![UserToken::parse("u:alice").unwrap()],
            memory_domain: Domain::parse("dialog").unwrap(),
            run_id: Some(RunId::parse("run-1").unwrap()),
            memory_scope: None,
            metadata: json!({"a": [1, {"b": null}]}).as_object().cloned().unwrap(),
            created_at: 1,
            updated_at: 2,
            expires_at: Some(3),
            confidence: Confidence {
                value: 0.7,
                evidence_count: 3,
                corroborations: 2,
                contradictions: 1,
            },
        };
        assert_eq!(decode_record(&encode_record(&r).unwrap()).unwrap(), r);
        assert!(decode_record(&[9, 1, 2]).is_err());
        assert!(decode_record(&[]).is_err());
    }
}
