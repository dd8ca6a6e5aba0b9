//! Reading one line of an import closed: a field no line of its kind has is refused, naming
//! it, as the API refuses unknown fields of a request and the tenant line refuses its own.
//!
//! The tenant, pheromone, narrative and end lines are refused by their derive already. The
//! collection, record, link and audit lines hold types the store also decodes (where a
//! derive cannot refuse unknown fields: a collection's memory defaults are flattened into
//! it), so they are checked here instead: a key the decoded line does not write back is
//! either a field left at its default (kept out of the export) or one the line does not
//! have, and only the first refuses a value of the wrong type.
//!
//! Whether a kind of line has a field does not depend on the line, so an import remembers the
//! fields it has found known ([`KnownFields`]): a line whose every key is known already is only
//! decoded, not also encoded back to find its keys. An import's lines share their keys, so
//! that is every line after the first few of each kind.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::ExportLine;

/// Fields found known, by kind of line, over the lines of one import (at most
/// [`KnownFields::MAX`]: each a field some kind of line has, so a cap only a flattened map
/// could reach).
#[derive(Debug, Default)]
pub struct KnownFields {
    by_kind: HashMap<String, HashSet<String>>,
    len: usize,
}

impl KnownFields {
    const MAX: usize = 1024;

    fn contains(&self, kind: &str, key: &str) -> bool {
        self.by_kind
            .get(kind)
            .is_some_and(|keys| keys.contains(key))
    }

    fn insert(&mut self, kind: &str, key: &str) {
        if self.len < Self::MAX
            && self
                .by_kind
                .entry(kind.to_owned())
                .or_default()
                .insert(key.to_owned())
        {
            self.len += 1;
        }
    }
}

impl ExportLine {
    /// Parses one line of an import, refusing a field its kind of line does not have.
    pub fn from_value_closed(value: Value) -> Result<ExportLine, String> {
        Self::from_value_closed_with(&mut KnownFields::default(), value)
    }

    /// [`ExportLine::from_value_closed`] for one line of many: `known` carries the fields
    /// found known on the lines before, and those of this one are added.
    pub fn from_value_closed_with(
        known: &mut KnownFields,
        value: Value,
    ) -> Result<ExportLine, String> {
        // The keys not known yet (the kind as the line names it: its serde tag).
        let given: Vec<String> = match &value {
            Value::Object(m) => {
                let kind = m.get("type").and_then(Value::as_str).unwrap_or_default();
                m.keys()
                    .filter(|k| !known.contains(kind, k))
                    .cloned()
                    .collect()
            }
            _ => Vec::new(),
        };
        let line: ExportLine = serde_json::from_value(value).map_err(|e| e.to_string())?;
        if given.is_empty() {
            return Ok(line);
        }
        // The tenant, pheromone, narrative and end lines refuse unknown fields by their own
        // derive; probing them would misjudge a free-JSON field given as `null` (the tenant
        // line's `integrity_policy`), which decodes to nothing and is not written back.
        if !matches!(
            line,
            ExportLine::Collection(_)
                | ExportLine::Record(_)
                | ExportLine::Link(_)
                | ExportLine::Audit(_)
        ) {
            return Ok(line);
        }
        let Ok(Value::Object(written)) = serde_json::to_value(&line) else {
            return Ok(line);
        };
        let kind = written
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("export");
        for key in &given {
            if written.contains_key(key) {
                known.insert(kind, key);
                continue;
            }
            // Every known field left out of `written` (an absent option, a default analyzer)
            // refuses `true` or `""` (none of them is free JSON); a field the line does not
            // have takes both.
            let takes = |probe: Value| {
                let mut line = written.clone();
                line.insert(key.clone(), probe);
                serde_json::from_value::<ExportLine>(Value::Object(line)).is_ok()
            };
            if takes(Value::Bool(true)) && takes(Value::String(String::new())) {
                return Err(format!("{kind} line: unknown field `{key}`"));
            }
            known.insert(kind, key);
        }
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::ExportLine;

    fn parse(v: Value) -> Result<ExportLine, String> {
        ExportLine::from_value_closed(v)
    }

    fn collection() -> Value {
        json!({"type": "collection", "name": "notes", "dim": 3, "metric": "cosine",
               "created_at": 1})
    }

    fn record() -> Value {
        json!({"type": "record", "id": "r1", "modality": "notes", "kind": null,
               "content": "hello", "vector": null, "user_tokens": [], "memory_domain": "default",
               "run_id": null, "memory_scope": null, "metadata": {}, "created_at": 1,
               "updated_at": 1, "expires_at": null,
               "confidence": {"value": 0.5, "evidence_count": 0, "corroborations": 0,
                              "contradictions": 0}})
    }

    fn link() -> Value {
        json!({"type": "link", "source": "r1", "target": "r2", "relation": "supports",
               "weight": 0.5, "created_at": 1})
    }

    fn audit() -> Value {
        json!({"type": "audit", "seq": 1, "at": 1, "tenant": "acme", "actor": "key:k",
               "action": "memory.put", "outcome": "ok", "client": null, "request_id": null,
               "detail": {}})
    }

    fn with(mut v: Value, key: &str, value: Value) -> Value {
        v[key] = value;
        v
    }

    #[test]
    fn an_unknown_field_is_refused_on_every_kind_of_line_naming_it() {
        for (kind, line) in [
            ("collection", collection()),
            ("record", record()),
            ("link", link()),
            ("audit", audit()),
        ] {
            assert!(parse(line.clone()).is_ok(), "{kind}");
            for value in [json!("english"), json!(true), json!(null), json!({"a": 1})] {
                let got = parse(with(line.clone(), "colour", value.clone()));
                assert_eq!(
                    got,
                    Err(format!("{kind} line: unknown field `colour`")),
                    "{kind} {value}"
                );
            }
        }
        // The struct kinds refuse theirs by their derive.
        let end = json!({"type": "end", "collections": 0, "records": 0, "pheromones": 0,
                         "narratives": 0, "links": 0, "audit": 0, "colour": 1});
        let got = parse(end).unwrap_err();
        assert!(got.contains("unknown field `colour`"), "{got}");
    }

    /// Lines read one after another, sharing what they found known, are refused exactly as
    /// each read alone: a field known on one line does not let an unknown one through on the
    /// next, of its kind or another.
    #[test]
    fn a_shared_memory_of_known_fields_refuses_what_a_fresh_one_does() {
        let mut lines = Vec::new();
        for line in [collection(), record(), link(), audit()] {
            lines.push(line.clone());
            lines.push(with(line.clone(), "colour", json!(true)));
            lines.push(line);
        }
        lines.push(with(
            with(collection(), "analyzer", json!("standard")),
            "kind",
            json!(""),
        ));
        lines.push(with(record(), "analyzer", json!("english")));
        let mut known = crate::KnownFields::default();
        for line in lines {
            let fresh = parse(line.clone());
            assert_eq!(
                ExportLine::from_value_closed_with(&mut known, line.clone()),
                fresh,
                "{line}"
            );
        }
    }

    /// A field the export leaves out when it holds its default may still be given, with that
    /// default or any other value of its type: it is known.
    #[test]
    fn every_field_a_line_may_leave_out_is_known() {
        let collection = with(
            with(
                with(collection(), "analyzer", json!("standard")),
                "embedder",
                json!({"model_id": "m", "weights_hash": "00"}),
            ),
            "initial_confidence",
            json!(0.7),
        );
        let collection = with(collection, "recency_half_life_secs", json!(null));
        let collection = with(collection, "link_runs", json!(null));
        assert!(parse(collection).is_ok());
        assert!(parse(with(audit(), "imported", json!(null))).is_ok());
        let imported = json!({"tenant": "other", "actor": "key:k"});
        assert!(parse(with(audit(), "imported", imported)).is_ok());
        // A free-JSON field given as `null` (how PATCH removes a policy) is no unknown field.
        let tenant = json!({"type": "tenant", "id": "acme", "display_name": null,
                            "created_at": 1, "limits": {}, "weight": 1,
                            "integrity_policy": null});
        let got = parse(tenant);
        assert!(got.is_ok(), "{got:?}");
    }
}
