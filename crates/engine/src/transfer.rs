//! Per-tenant export and import as JSON lines.
//!
//! An export is a header line with the tenant's profile, one line per collection, one line per
//! record (with its vector, timestamps and confidence), one line per link, the adaptive
//! reranking state of each (tenant, domain) namespace (pheromones and narrative vectors), then
//! the tenant's audit rows, oldest first, and an end line counting the lines of each kind. That is every piece of per-tenant state that is not derived: indexes, snapshots and
//! usage are rebuilt from it.
//! Credentials are deliberately not exported: a key of the old tenant must never open the new
//! one.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use strata_auth::OperatorScope;
use strata_store::codec::{MetadataJson, StoredNarrative, StoredPheromone};
use strata_store::{
    AdaptiveItem, AdaptiveReads, DeletingReads, LinkReads, NarrativePrincipal, Reads,
};

use strata_types::{
    Collection, CollectionName, Domain, Link, Millis, NewLink, Record, RecordId, TenantId,
    TokenSelector, check_vector, check_vector_values, now_millis,
};

use crate::adaptive::{NarrativesOf, newest_within_cap};
use crate::isolation::{IndexParams, IsolationLevel, MigrateRequest};
use crate::lifecycle::{TenantLimits, TenantProfile, TenantStatus, account};
use crate::tenant_index::Change;
use crate::{Engine, EngineError, TenantInfo, snapshot};

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportLine {
    Tenant {
        id: TenantId,
        display_name: Option<String>,
        #[schema(value_type = i64)]
        created_at: Millis,
        limits: TenantLimits,
        weight: u32,
        /// The tenant's isolation level: an import ends at the same level (after loading its
        /// lines at `shared`, it migrates). Absent in exports of earlier versions: `shared`.
        #[serde(default, skip_serializing_if = "IsolationLevel::is_shared")]
        isolation: IsolationLevel,
        /// The tenant's own graph parameters, if it has any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index_params: Option<IndexParams>,
        /// The operator's metadata of the tenant, if it has any. Absent in exports of
        /// earlier versions: none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Object>)]
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
        /// The tenant's own integrity thresholds, if it has any, in their stored form: every
        /// field written, so an import decodes it closed (every field required, none unknown)
        /// as the server decodes its own copy, and never fills a gap with a default. Absent
        /// in exports of earlier versions: none (the importing server's configuration applies).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<crate::StoredIntegrityPolicy>)]
        integrity_policy: Option<serde_json::Value>,
        /// `true` when the export ends with an `end` line (every export since it was
        /// introduced): an import then refuses the file without it, as cut short. Absent in
        /// exports of earlier versions, which have none and import as before.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        end_line: bool,
    },
    Collection(Collection),
    /// A link between two records of the export (after every record).
    Link(Link),
    Record(Box<Record>),
    /// A row of the tenant's audit log, kept as history by the importing tenant: as its own
    /// row, marked `imported`, with the source's tenant and actor moved into that mark and no
    /// client address or request id (`AuditRow::imported_into`).
    Audit(Box<crate::AuditRow>),
    /// A record's pheromone in one (tenant, domain) namespace (adaptive reranking).
    Pheromone {
        memory_domain: Domain,
        id: RecordId,
        strength: f64,
        #[schema(value_type = i64)]
        updated_at: Millis,
        reinforcements: u64,
        exposures: u64,
    },
    /// A collection's narrative vector of one principal in one (tenant, domain) namespace.
    Narrative {
        memory_domain: Domain,
        /// The principal whose feedback moves it and whose searches read it: its exact user
        /// tokens, `["*"]` for callers with `user_tokens: ["*"]`, absent (or empty) for callers
        /// without user tokens. Absent in exports of earlier versions, whose narratives were
        /// one per namespace: that namespace-wide one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Vec<String>>)]
        user_tokens: Option<TokenSelector>,
        collection: CollectionName,
        vector: Vec<f32>,
        updates: u64,
        #[schema(value_type = i64)]
        updated_at: Millis,
    },
    /// The last line: how many lines of each kind came before it, so that an import tells a
    /// complete export from one cut after a complete line (disk full, an interrupted copy).
    End(LineCounts),
}

/// The number of lines of each kind in an export, besides its tenant line and end line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineCounts {
    pub collections: u64,
    pub records: u64,
    pub pheromones: u64,
    pub narratives: u64,
    pub links: u64,
    pub audit: u64,
}

impl LineCounts {
    /// Counts `line`.
    fn add(&mut self, line: &ExportLine) {
        match line {
            ExportLine::Collection(_) => self.collections += 1,
            ExportLine::Record(_) => self.records += 1,
            ExportLine::Pheromone { .. } => self.pheromones += 1,
            ExportLine::Narrative { .. } => self.narratives += 1,
            ExportLine::Link(_) => self.links += 1,
            ExportLine::Audit(_) => self.audit += 1,
            ExportLine::Tenant { .. } | ExportLine::End(_) => {}
        }
    }

    /// The kinds whose counts differ between `self` (read) and `said` (the end line's), as
    /// "records: the end line says 200, the file has 99".
    fn differences(&self, said: &LineCounts) -> Vec<String> {
        let pairs = [
            ("collections", self.collections, said.collections),
            ("records", self.records, said.records),
            ("pheromones", self.pheromones, said.pheromones),
            ("narratives", self.narratives, said.narratives),
            ("links", self.links, said.links),
            ("audit", self.audit, said.audit),
        ];
        pairs
            .into_iter()
            .filter(|(_, read, said)| read != said)
            .map(|(kind, read, said)| {
                format!("{kind}: the end line says {said}, the file has {read}")
            })
            .collect()
    }
}

impl ExportLine {
    fn adaptive(domain: Domain, item: AdaptiveItem) -> ExportLine {
        match item {
            AdaptiveItem::Pheromone(id, p, _) => ExportLine::Pheromone {
                memory_domain: domain,
                id,
                strength: p.strength,
                updated_at: p.updated_at,
                reinforcements: p.reinforcements,
                exposures: p.exposures,
            },
            AdaptiveItem::Narrative(principal, collection, n) => ExportLine::Narrative {
                memory_domain: domain,
                user_tokens: match principal {
                    NarrativePrincipal::Shared => None,
                    NarrativePrincipal::AllPrincipals => Some(TokenSelector::AllPrincipals),
                    NarrativePrincipal::Tokens(t) => {
                        Some(TokenSelector::Tokens(t.as_slice().to_vec()))
                    }
                },
                collection,
                vector: n.vector,
                updates: n.updates,
                updated_at: n.updated_at,
            },
        }
    }
}

/// The ids of the records of the tenant's collections being deleted (none, reading nothing
/// more, while no delete is unfinished).
fn hidden_records(
    r: &impl Reads,
    key: strata_store::TenantKey,
) -> Result<HashSet<RecordId>, EngineError> {
    let deleting: Vec<CollectionName> = r
        .collections_deleting(key)?
        .into_iter()
        .map(|c| c.name)
        .collect();
    let mut hidden = HashSet::new();
    if deleting.is_empty() {
        return Ok(hidden);
    }
    for record in r.stored_records_without_vector(key, None)? {
        let record = record?;
        if deleting.contains(&record.modality) {
            hidden.insert(record.id);
        }
    }
    Ok(hidden)
}

/// Records are imported in transactions of this many.
const IMPORT_BATCH: usize = 1000;

/// How long an import whose tenant must move to its exported level waits for a free data-move
/// slot (`engine.isolation.max_concurrent_moves`) once its records are loaded, before it gives
/// up (and its tenant is purged): another tenant's move running then would otherwise throw
/// away everything loaded.
const IMPORT_MOVE_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Text-only imported records are embedded this many per call: batched for throughput, small
/// enough that one call's activations stay a few megabytes.
const IMPORT_EMBED_BATCH: usize = 128;

impl Engine {
    /// Streams the tenant's export to `sink`, line by line, from one consistent snapshot.
    /// Returns the number of lines.
    pub fn export_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        mut sink: impl FnMut(&ExportLine) -> Result<(), EngineError>,
    ) -> Result<u64, EngineError> {
        let exportable = |r: &strata_store::Reader| -> Result<_, EngineError> {
            let meta = r
                .tenant(id)?
                .ok_or_else(|| EngineError::TenantNotFound(id.clone()))?;
            let p = TenantProfile::of(&meta)?;
            // Half its lines may not be written yet: such an export would be a valid-looking
            // file short of records (its end line counts what it holds, not what the import
            // will).
            if p.importing {
                return Err(EngineError::IdConflict(format!(
                    "tenant {id} is being imported; export it when the import completes"
                )));
            }
            Ok((meta, p))
        };
        // Checked before its row is written: a refused export (an unknown id, a tenant being
        // imported) is not recorded as one taken. The row is in the export it records.
        exportable(&self.store.read()?)?;
        self.record_audit(crate::audit::operator_event(op, id, "tenant.export"))?;
        let r = self.store.read()?;
        let (meta, p) = exportable(&r)?;
        // Decoded closed: an unreadable policy fails the export (naming the repair) rather
        // than being carried to another server.
        let integrity_policy = p
            .own_integrity_policy(id)?
            .as_ref()
            .map(crate::integrity::encode_stored);
        // Every line is counted as it is sent, for the end line.
        let counts = std::cell::Cell::new(LineCounts::default());
        let mut sink = |line: &ExportLine| {
            let mut c = counts.get();
            c.add(line);
            counts.set(c);
            sink(line)
        };
        sink(&ExportLine::Tenant {
            id: meta.id.clone(),
            display_name: p.display_name,
            created_at: meta.created_at,
            limits: p.limits,
            weight: p.weight,
            isolation: p.isolation,
            index_params: p.index_params,
            metadata: Some(strata_store::tenant_metadata(&r, meta.key)?).filter(|m| !m.is_empty()),
            integrity_policy,
            end_line: true,
        })?;
        let mut lines = 1;
        for c in r.collections(meta.key)? {
            sink(&ExportLine::Collection(c))?;
            lines += 1;
        }
        for record in r.records(meta.key, None)? {
            sink(&ExportLine::Record(Box::new(record?)))?;
            lines += 1;
        }
        // The records of a collection being deleted are not exported (the store hides them),
        // so neither is what names them: their pheromones and links.
        let hidden = hidden_records(&r, meta.key)?;
        for row in r.adaptive_rows(meta.key, None)? {
            if matches!(&row.item, AdaptiveItem::Pheromone(id, ..) if hidden.contains(id)) {
                continue;
            }
            sink(&ExportLine::adaptive(row.domain, row.item))?;
            lines += 1;
        }
        for link in strata_store::LinkReads::all_links(&r, meta.key)? {
            let link = link?;
            if hidden.contains(&link.source) || hidden.contains(&link.target) {
                continue;
            }
            sink(&ExportLine::Link(link))?;
            lines += 1;
        }
        // A page at a time: a log kept for years does not have to fit in memory.
        crate::audit::each_row(&r, meta.key, |row| {
            sink(&ExportLine::Audit(Box::new(row)))?;
            lines += 1;
            Ok(())
        })?;
        sink(&ExportLine::End(counts.get()))?;
        Ok(lines + 1)
    }

    /// Creates tenant `id` from an export (of any tenant). The export's own tenant id is only
    /// informational. If any line is invalid, the new tenant is purged again and the error
    /// returned, so an import is all or nothing.
    pub fn import_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        lines: impl IntoIterator<Item = Result<ExportLine, EngineError>>,
    ) -> Result<TenantInfo, EngineError> {
        // A JWT minted for an incarnation purged just before must not match this one.
        self.recent_purges.wait_to_create(id)?;
        let now = now_millis();
        let key = self.store.write(|w| {
            if w.tenant(id)?.is_some() {
                return Err(EngineError::TenantExists(id.clone()));
            }
            // Created suspended: nobody can use it until the import is complete; marked, so
            // that a start after a crash discards what an import cut short left.
            let profile = TenantProfile {
                status: TenantStatus::Suspended,
                importing: true,
                ..TenantProfile::default()
            };
            let key = w.create_tenant(id, now, profile.to_map_at(now))?.key;
            crate::lifecycle::init_usage(w, key)?;
            Ok(key)
        })?;
        match self
            .import_lines(id, key, lines)
            .and_then(|(profile, metadata)| {
                self.import_level(op, id, key, profile)
                    .map(|p| (p, metadata))
            }) {
            Ok((profile, metadata)) => {
                // The tenant as exported, profile and metadata, lands in this one
                // transaction: a change an operator made while the import ran (the tenant
                // exists, suspended) is superseded whole, never half kept; one made after it
                // applies to the imported tenant.
                let activated = self.store.write(|w| {
                    let mut meta = w
                        .tenant(id)?
                        .ok_or_else(|| EngineError::TenantNotFound(id.clone()))?;
                    // Only the incarnation this import created: one purged and re-created
                    // meanwhile is someone else's tenant, never overwritten.
                    if meta.key != key {
                        return Err(replaced_during_import(id));
                    }
                    let stored = TenantProfile::of(&meta)?;
                    // A delete made during the import wins: the import fails (and its tenant
                    // is purged below) rather than bringing a deleted tenant back.
                    if stored.status == TenantStatus::Deleted {
                        return Err(EngineError::TenantNotFound(id.clone()));
                    }
                    // The level and graph parameters are the ones stored now (set by the
                    // migration above), whatever else happened to the tenant meanwhile.
                    meta.profile = TenantProfile {
                        isolation: stored.isolation,
                        index_params: stored.index_params,
                        ..profile
                    }
                    .to_map_at(now_millis());
                    w.put_tenant(&meta)?;
                    w.put_tenant_metadata(meta.key, &metadata)?;
                    crate::audit::append(
                        w,
                        meta.key,
                        crate::audit::operator_event(op, id, "tenant.import"),
                    )?;
                    Ok::<_, EngineError>(())
                });
                if let Err(e) = activated {
                    self.discard_import(op, id, key);
                    return Err(e);
                }
                // Its records were written behind the expiry plan's notes: the next pass of
                // the expiry sweep visits it.
                self.indexes.expiring.note(key, id, 0);
                self.admissions.invalidate(key);
                self.tenant(op, id)
            }
            Err(e) => {
                self.discard_import(op, id, key);
                Err(e)
            }
        }
    }

    /// Leaves nothing of a failed import behind: purges the tenant it created (`key`), and
    /// only that one, never a tenant of the same id created while it ran. When the id no
    /// longer names the import's incarnation (purged, perhaps created again, while the import
    /// ran), that purge erased only what the import had written by then (the import's writes
    /// stop at the purge; see `still_importing`): whatever is still under the import's own
    /// storage key is erased by that key, so that no byte of a purged tenant stays behind.
    fn discard_import(&self, op: &OperatorScope, id: &TenantId, key: strata_store::TenantKey) {
        let Err(e) = self.purge_incarnation(op, id, key) else {
            return;
        };
        // Still the import's tenant: the purge was refused (a migration of it runs) or failed.
        if self.tenant_meta(id).is_ok_and(|m| m.key == key) {
            tracing::warn!(tenant = %id, error = %e,
                "failed import: its suspended tenant could not be purged; purge it by hand");
            return;
        }
        tracing::debug!(tenant = %id, error = %e,
            "failed import: its tenant was purged meanwhile; erasing its rows by storage key");
        if let Err(e) = self.erase_abandoned(key) {
            tracing::warn!(tenant = %id, error = %e,
                "failed import: its rows could not be erased after its tenant was purged");
            return;
        }
        // The erase has committed; the vacuum only rewrites the file without its bytes.
        if let Err(e) = self.vacuum() {
            tracing::warn!(tenant = %id, error = %e,
                "failed import: its rows were erased, but rewriting the data file failed; \
                 their bytes may stay in it until the next vacuum");
        }
    }

    /// Erases what is left under storage key `key` after its tenant was purged, and the
    /// in-memory state kept for it; never a registered tenant's (`erase_unregistered`).
    fn erase_abandoned(&self, key: strata_store::TenantKey) -> Result<(), EngineError> {
        self.store.write(|w| {
            w.erase_unregistered(key)?;
            // As a purge's: vacuumed after this commit, or at the next start.
            Ok::<_, EngineError>(w.set_compaction_owed(true)?)
        })?;
        self.forget_erased(key);
        Ok(())
    }

    /// Moves a freshly imported tenant (still suspended, loaded at `shared`) to the level its
    /// export names, through the same online migration an operator would run. Returns the
    /// profile to activate it with. Only the incarnation stored under `key`, the import's own,
    /// is moved: one that replaced it while the import ran is refused by the migration itself.
    pub(crate) fn import_level(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        key: strata_store::TenantKey,
        profile: TenantProfile,
    ) -> Result<TenantProfile, EngineError> {
        if profile.isolation.is_shared() {
            return Ok(profile);
        }
        let max_moves = self.config.isolation.max_concurrent_moves;
        let deadline = std::time::Instant::now() + IMPORT_MOVE_SLOT_WAIT;
        let mut wait = std::time::Duration::from_millis(20);
        loop {
            // Past the deadline (or at shutdown), the migration is tried once more and its
            // refusal stands.
            let last_try = std::time::Instant::now() >= deadline || self.migrations.stopping();
            if last_try || self.migrations.slot_free(key, max_moves) {
                let moved = self.migrate_incarnation(
                    op,
                    id,
                    key,
                    MigrateRequest {
                        target: profile.isolation,
                        index_params: profile.index_params,
                        dry_run: false,
                    },
                );
                // Refused because another move took the slot since the look: wait again.
                let slot_taken = matches!(moved, Err(EngineError::MoveSlotsBusy(_)));
                if last_try || !slot_taken {
                    moved?;
                    return Ok(profile);
                }
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(std::time::Duration::from_secs(1));
        }
    }

    fn import_lines(
        &self,
        id: &TenantId,
        key: strata_store::TenantKey,
        lines: impl IntoIterator<Item = Result<ExportLine, EngineError>>,
    ) -> Result<(TenantProfile, serde_json::Map<String, serde_json::Value>), EngineError> {
        let mut profile = TenantProfile::default();
        let mut metadata = serde_json::Map::new();
        let mut collections = HashMap::new();
        let mut batch: Vec<Record> = Vec::with_capacity(IMPORT_BATCH);
        // Usage is counted as a write counts it, but no quota is checked: an import restores
        // the tenant as it was exported, and a tenant may be past its limits (an operator
        // lowered them below its usage), which must not make its own export impossible to
        // restore. Its next writes are refused as they were before the export. Imports are
        // an operator's, so no tenant grows past its quota this way.
        let unlimited = TenantLimits::default();
        let flush = |batch: &mut Vec<Record>,
                     batch_lines: &mut Vec<usize>,
                     collections: &HashMap<CollectionName, Collection>,
                     limits: &TenantLimits|
         -> Result<(), EngineError> {
            if batch.is_empty() {
                return Ok(());
            }
            self.embed_imported(batch, collections)?;
            // Encoded before the transaction, which every tenant's writes wait for.
            let metadata = batch
                .iter()
                .map(|r| MetadataJson::of(&r.metadata))
                .collect::<Result<Vec<_>, _>>()?;
            self.store.write(|w| {
                still_importing(w, id, key)?;
                snapshot::bump_version(w, key)?;
                let mut changes = Vec::with_capacity(batch.len());
                let lines = batch.drain(..).zip(batch_lines.drain(..)).zip(&metadata);
                for ((r, n), metadata) in lines {
                    // The earlier line is not named: remembering every id's line would make
                    // an import's memory grow with its records, which it otherwise does not.
                    if w.put_record_encoded(key, &r, metadata)?.is_some() {
                        return Err(EngineError::BadRequest(format!(
                            "import line {}: record {} appears twice (an earlier line has it)",
                            n + 1,
                            r.id,
                        )));
                    }
                    changes.push(Change::Upsert {
                        record: r,
                        metadata_len: metadata.len(),
                    });
                }
                account(w, key, limits, &changes)
            })
        };
        let mut batch_lines: Vec<usize> = Vec::with_capacity(IMPORT_BATCH);
        // Adaptive state refers to records, so it is written once they all are.
        let mut adaptive: Vec<(usize, ExportLine)> = Vec::new();
        let mut audit_rows: Vec<crate::AuditRow> = Vec::new();
        let flush_audit = |rows: &mut Vec<crate::AuditRow>| -> Result<(), EngineError> {
            if rows.is_empty() {
                return Ok(());
            }
            self.store.write(|w| {
                still_importing(w, id, key)?;
                for row in rows.drain(..) {
                    crate::audit::append_row(w, key, &row)?;
                }
                Ok::<_, EngineError>(())
            })
        };
        let mut links: Vec<(usize, Link)> = Vec::new();
        let mut first_link: Option<usize> = None;
        let mut read = 0;
        // What the file holds, checked against its end line; whether its tenant line says it
        // has one (exports of earlier versions have none); where it was.
        let mut counts = LineCounts::default();
        let mut expects_end = false;
        let mut end_at: Option<usize> = None;
        for (n, line) in lines.into_iter().enumerate() {
            let line = line?;
            read += 1;
            // Without it the tenant's limits, level and policy would silently be defaults.
            if n == 0 && !matches!(line, ExportLine::Tenant { .. }) {
                return Err(EngineError::BadRequest(
                    "import line 1: an export begins with its tenant line".into(),
                ));
            }
            if let Some(end) = end_at {
                return Err(EngineError::BadRequest(format!(
                    "import line {}: a line after the end line (line {}); the end line is last",
                    n + 1,
                    end + 1
                )));
            }
            counts.add(&line);
            match line {
                ExportLine::End(said) => {
                    let differences = counts.differences(&said);
                    if !differences.is_empty() {
                        return Err(EngineError::BadRequest(format!(
                            "import line {}: the end line's counts disagree with the file ({}): \
                             it is incomplete or was altered",
                            n + 1,
                            differences.join("; ")
                        )));
                    }
                    end_at = Some(n);
                }
                // Stored a batch at a time, not held to the end: an export's links follow all
                // of its records, which are in by the first link (the batch pending is
                // flushed then).
                ExportLine::Link(l) => {
                    if first_link.is_none() {
                        first_link = Some(n);
                        flush(&mut batch, &mut batch_lines, &collections, &unlimited)?;
                    }
                    links.push((n, l));
                    if links.len() == IMPORT_BATCH {
                        self.import_links(id, key, &unlimited, std::mem::take(&mut links))?;
                    }
                }
                ExportLine::Tenant {
                    display_name,
                    limits,
                    weight,
                    isolation,
                    index_params,
                    metadata: m,
                    integrity_policy,
                    end_line,
                    ..
                } if n == 0 => {
                    expects_end = end_line;
                    // As a create checks them: an export is operator input like any other. Not
                    // the display name's characters, though: earlier versions stored names with
                    // tabs or newlines, and their backups must still restore (the name is only
                    // shown, escaped, never parsed).
                    crate::tenants::check_profile_fields(None, None, Some(&limits))
                        .map_err(|e| EngineError::BadRequest(format!("import line 1: {e}")))?;
                    crate::tenants::check_display_name_length(display_name.as_deref())
                        .map_err(|e| EngineError::BadRequest(format!("import line 1: {e}")))?;
                    if let Some(p) = &index_params {
                        p.validate()
                            .map_err(|e| EngineError::BadRequest(format!("import line 1: {e}")))?;
                    }
                    let integrity_policy = integrity_policy
                        .map(|v| {
                            let p = crate::integrity::decode_closed(&v).map_err(|e| {
                                EngineError::BadRequest(format!(
                                    "import line 1: integrity_policy: {e}"
                                ))
                            })?;
                            p.validate().map_err(|e| {
                                EngineError::BadRequest(format!(
                                    "import line 1: integrity_policy.{e}"
                                ))
                            })?;
                            Ok::<_, EngineError>(p)
                        })
                        .transpose()?;
                    if let Some(m) = &m {
                        crate::tenant_metadata::check(m)
                            .map_err(|e| EngineError::BadRequest(format!("import line 1: {e}")))?;
                    }
                    // Written with the profile when the import activates the tenant (see
                    // `import_tenant`), not now.
                    metadata = m.unwrap_or_default();
                    profile = TenantProfile {
                        display_name,
                        limits,
                        weight: weight.max(1),
                        isolation,
                        index_params,
                        integrity_policy: integrity_policy
                            .as_ref()
                            .map(crate::integrity::encode_stored),
                        ..TenantProfile::default()
                    };
                }
                ExportLine::Tenant { .. } => {
                    return Err(EngineError::BadRequest(format!(
                        "import line {}: a tenant line must come first",
                        n + 1
                    )));
                }
                ExportLine::Collection(c) => {
                    if c.dim == 0 || c.dim > self.config.limits.max_dim {
                        return Err(EngineError::BadRequest(format!(
                            "import line {}: collection {} has dim {}; this server takes 1 to {} \
                             (engine.limits.max_dim)",
                            n + 1,
                            c.name,
                            c.dim,
                            self.config.limits.max_dim
                        )));
                    }
                    // Refused as the API refuses them: a name already defined (its records
                    // would be checked against one definition and stored under another, a
                    // vector length the index cannot hold), defaults out of range, and the
                    // loaded model at another dimension than its own (its vectors would not
                    // fit the collection).
                    let refuse = |why: String| {
                        EngineError::BadRequest(format!(
                            "import line {}: collection {}: {why}",
                            n + 1,
                            c.name
                        ))
                    };
                    if collections.contains_key(&c.name) {
                        return Err(refuse("defined twice".into()));
                    }
                    c.memory.validate().map_err(|e| refuse(e.to_string()))?;
                    if let Some((model, loaded)) = self.loaded_embedder()
                        && c.embedder.as_ref() == Some(&loaded)
                        && model.dim() != c.dim as usize
                    {
                        return Err(refuse(format!(
                            "dim {}: the built-in model it names embeds in {} dimensions",
                            c.dim,
                            model.dim()
                        )));
                    }
                    self.store.write(|w| {
                        still_importing(w, id, key)?;
                        Ok::<_, EngineError>(w.put_collection(key, &c)?)
                    })?;
                    collections.insert(c.name.clone(), c);
                }
                ExportLine::Audit(row) => {
                    // Written in batches, not one transaction (and one sync) per row.
                    audit_rows.push(row.imported_into(id));
                    if audit_rows.len() >= IMPORT_BATCH {
                        flush_audit(&mut audit_rows)?;
                    }
                }
                line @ (ExportLine::Pheromone { .. } | ExportLine::Narrative { .. }) => {
                    adaptive.push((n, line));
                }
                ExportLine::Record(r) => {
                    let r = *r;
                    let at = |e: EngineError| {
                        EngineError::BadRequest(format!("import line {}: {e}", n + 1))
                    };
                    if let Some(first) = first_link {
                        return Err(at(EngineError::BadRequest(format!(
                            "a record after the links (line {}); an export's records come \
                             before its links",
                            first + 1
                        ))));
                    }
                    let c = collections
                        .get(&r.modality)
                        .ok_or_else(|| at(EngineError::CollectionNotFound(r.modality.clone())))?;
                    if let Some(v) = &r.vector {
                        check_vector(v, c).map_err(|e| at(e.into()))?;
                    }
                    check_record_times(&r).map_err(at)?;
                    let new = strata_types::NewRecord {
                        content: r.content.clone(),
                        vector: r.vector.clone(),
                        user_tokens: Some(r.user_tokens.clone()),
                        metadata: r.metadata.clone(),
                        // The value is checked as a write's; the counters are kept as
                        // exported: a write before 3 Dec 2026 could set counters that do not
                        // add up, and an export must import.
                        confidence: Some(strata_types::Confidence::initial(r.confidence.value)),
                        ..Default::default()
                    };
                    new.validate(&self.config.limits)
                        .map_err(|e| at(e.into()))?;
                    batch.push(r);
                    batch_lines.push(n);
                    if batch.len() == IMPORT_BATCH {
                        flush(&mut batch, &mut batch_lines, &collections, &unlimited)?;
                    }
                }
            }
        }
        if read == 0 {
            return Err(EngineError::BadRequest(
                "import: the body is empty; an export begins with its tenant line".into(),
            ));
        }
        // A file cut after a complete line (disk full, an interrupted copy) would otherwise
        // import as a complete tenant, silently short of what followed.
        if expects_end && end_at.is_none() {
            return Err(EngineError::BadRequest(format!(
                "import: the file ends after line {read} without its end line: it is incomplete"
            )));
        }
        flush(&mut batch, &mut batch_lines, &collections, &unlimited)?;
        flush_audit(&mut audit_rows)?;
        self.import_adaptive(id, key, &collections, adaptive)?;
        self.import_links(id, key, &unlimited, links)?;
        Ok((profile, metadata))
    }

    /// Stores imported links (a batch of them; every record is in by then), each checked like a
    /// new link: valid weight, two different ends that are records of the new tenant.
    fn import_links(
        &self,
        id: &TenantId,
        key: strata_store::TenantKey,
        limits: &TenantLimits,
        links: Vec<(usize, Link)>,
    ) -> Result<(), EngineError> {
        for chunk in links.chunks(IMPORT_BATCH) {
            self.store.write(|w| {
                still_importing(w, id, key)?;
                let mut bytes = 0i64;
                let mut memo = strata_store::HiddenMemo::default();
                for (n, l) in chunk {
                    let at = |e: String| {
                        EngineError::BadRequest(format!("import line {}: link: {e}", n + 1))
                    };
                    NewLink {
                        source: l.source.clone(),
                        target: l.target.clone(),
                        relation: l.relation.clone(),
                        weight: l.weight,
                    }
                    .validate()
                    .map_err(|e| at(e.0))?;
                    let mut domains = Vec::with_capacity(2);
                    for id in [&l.source, &l.target] {
                        match w.record_scope(key, id, &mut memo)? {
                            Some(scope) => domains.push(scope.memory_domain),
                            None => return Err(at(format!("record {id} is not in the import"))),
                        }
                    }
                    // As a request's link: a link between domains could be neither seen nor
                    // deleted by any request, yet it would count against the tenant's quota
                    // and its records' link caps.
                    if domains[0] != domains[1] {
                        return Err(at(format!(
                            "{} and {} are in different domains ({} and {})",
                            l.source, l.target, domains[0], domains[1]
                        )));
                    }
                    if w.put_link(key, l)?.is_some() {
                        return Err(at("appears twice".into()));
                    }
                    // Whole-tenant: every principal's links count, up to the stored bound.
                    let cap = crate::links::MAX_STORED_LINKS_PER_RECORD;
                    if w.link_count(key, &l.source, false)? > cap
                        || w.link_count(key, &l.target, true)? > cap
                    {
                        return Err(at(format!("more than {cap} links of one record")));
                    }
                    bytes += crate::links::link_bytes(l) as i64;
                }
                crate::lifecycle::charge_bytes(w, key, limits, bytes)
            })?;
        }
        Ok(())
    }

    /// Writes imported adaptive state, in one transaction, after checking each line against
    /// the imported records and collections: a pheromone needs its record in its namespace's
    /// domain, a narrative its collection's dimension and bounded values.
    fn import_adaptive(
        &self,
        tenant: &TenantId,
        key: strata_store::TenantKey,
        collections: &HashMap<CollectionName, Collection>,
        lines: Vec<(usize, ExportLine)>,
    ) -> Result<(), EngineError> {
        if lines.is_empty() {
            return Ok(());
        }
        let cfg = &self.config.adaptive;
        // A time ahead of this server's clock (another server's, set ahead) is taken as now: a
        // pheromone does not decay before its time, nor does a narrative leave its cap, so one
        // dated years ahead would hold its full strength, or its place, for years.
        let now = strata_types::now_millis();
        let at_most_now = |t: Millis| t.min(now);
        self.store.write(|w| {
            still_importing(w, tenant, key)?;
            // Narratives are written once every line is read: a namespace keeps at most
            // `max_narratives` of them, the most recently updated, as feedback keeps it.
            let mut narratives: BTreeMap<Domain, NarrativesOf> = BTreeMap::new();
            // A second line for the same pheromone or narrative would silently replace the
            // first, as a second record or link of the same id is refused: refused too.
            let mut pheromones: HashSet<(Domain, RecordId)> = HashSet::new();
            for (n, line) in lines {
                let bad = |what: String| {
                    EngineError::BadRequest(format!("import line {}: {what}", n + 1))
                };
                match line {
                    ExportLine::Pheromone {
                        memory_domain,
                        id,
                        strength,
                        updated_at,
                        reinforcements,
                        exposures,
                    } => {
                        if !(strength.is_finite() && (0.0..=cfg.max_strength).contains(&strength)) {
                            return Err(bad(format!(
                                "pheromone strength must be 0 to {}",
                                cfg.max_strength
                            )));
                        }
                        let owners = match w.record(key, &id)? {
                            Some(r) if r.memory_domain == memory_domain => r.user_tokens,
                            _ => {
                                return Err(bad(format!(
                                    "pheromone for {id}: no such record in domain {memory_domain}"
                                )));
                            }
                        };
                        if !pheromones.insert((memory_domain.clone(), id.clone())) {
                            return Err(bad(format!(
                                "a second pheromone for {id} in domain {memory_domain}"
                            )));
                        }
                        let p = StoredPheromone {
                            strength,
                            updated_at: at_most_now(updated_at),
                            reinforcements,
                            exposures,
                        };
                        w.put_pheromone(key, &memory_domain, &id, &p, &owners)?;
                    }
                    ExportLine::Narrative {
                        memory_domain,
                        user_tokens,
                        collection,
                        vector,
                        updates,
                        updated_at,
                    } => {
                        let c = collections.get(&collection).ok_or_else(|| {
                            bad(format!("narrative for unknown collection {collection}"))
                        })?;
                        if vector.len() != c.dim as usize {
                            return Err(bad(format!(
                                "narrative of {collection} has dimension {}, the collection {}",
                                vector.len(),
                                c.dim
                            )));
                        }
                        check_vector_values(&vector).map_err(|e| bad(e.to_string()))?;
                        let v = StoredNarrative {
                            vector,
                            updates,
                            updated_at: at_most_now(updated_at),
                        };
                        let principal = match user_tokens {
                            None => NarrativePrincipal::Shared,
                            Some(TokenSelector::AllPrincipals) => NarrativePrincipal::AllPrincipals,
                            // As many as a credential may be bound to: no caller speaks for more.
                            Some(TokenSelector::Tokens(t))
                                if t.len() > self.config.limits.max_user_tokens =>
                            {
                                return Err(bad(format!(
                                    "narrative user_tokens: at most {} tokens",
                                    self.config.limits.max_user_tokens
                                )));
                            }
                            Some(TokenSelector::Tokens(t)) => NarrativePrincipal::of_tokens(t),
                        };
                        let again = narratives
                            .entry(memory_domain.clone())
                            .or_default()
                            .insert((principal, collection.clone()), v);
                        if again.is_some() {
                            return Err(bad(format!(
                                "a second narrative of {collection} for the same principals in \
                                 domain {memory_domain}"
                            )));
                        }
                    }
                    _ => {}
                }
            }
            for (domain, of) in narratives {
                for ((principal, collection), v) in newest_within_cap(of, cfg.max_narratives) {
                    w.put_narrative(key, &domain, &principal, &collection, &v)?;
                }
            }
            Ok::<_, EngineError>(())
        })?;
        self.adaptive.forget_tenant(key);
        Ok(())
    }

    /// Gives each imported record with content and no vector, in a collection that declares
    /// the loaded model, its vector (batched). Records of a collection declared for another
    /// model stay text-only, as they would on that server without its model: a re-embed of the
    /// collection gives them vectors later.
    fn embed_imported(
        &self,
        batch: &mut [Record],
        collections: &HashMap<CollectionName, Collection>,
    ) -> Result<(), EngineError> {
        let Some((embedder, loaded)) = self.loaded_embedder() else {
            return Ok(());
        };
        let todo: Vec<usize> = batch
            .iter()
            .enumerate()
            .filter(|(_, r)| r.vector.is_none() && r.content.is_some())
            .filter(|(_, r)| {
                collections
                    .get(&r.modality)
                    .is_some_and(|c| matches!(crate::embedding::embeds(Some(&loaded), c), Ok(true)))
            })
            .map(|(i, _)| i)
            .collect();
        for chunk in todo.chunks(IMPORT_EMBED_BATCH) {
            let texts: Vec<&str> = chunk
                .iter()
                .map(|&i| batch[i].content.as_deref().unwrap_or_default())
                .collect();
            let vectors = crate::embedding::embed(embedder, &texts)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                batch[i].vector = Some(v);
            }
        }
        Ok(())
    }
}

/// Refuses an import's write unless `id` still names the incarnation the import created
/// (`key`): once it is purged (perhaps created again), nothing more is written under its key,
/// so a crash after the purge leaves no byte of it behind.
fn still_importing(
    w: &strata_store::Writer<'_>,
    id: &TenantId,
    key: strata_store::TenantKey,
) -> Result<(), EngineError> {
    match w.tenant(id)? {
        Some(meta) if meta.key == key => Ok(()),
        Some(_) => Err(replaced_during_import(id)),
        None => Err(EngineError::TenantNotFound(id.clone())),
    }
}

fn replaced_during_import(id: &TenantId) -> EngineError {
    EngineError::IdConflict(format!(
        "tenant {id} was purged and created again during its import; the import is abandoned"
    ))
}

/// An imported record's times must be times the server could have given it: from 1970 up to
/// [`strata_types::MAX_RECORD_TIME`] (writes hold to it too). Any other would be refused by the
/// search image that holds it (which is then rebuilt at every load) or misordered by the
/// timestamp columns.
pub(crate) fn check_record_times(r: &strata_types::Record) -> Result<(), EngineError> {
    let times = [
        ("created_at", Some(r.created_at)),
        ("updated_at", Some(r.updated_at)),
        ("expires_at", r.expires_at),
    ];
    for (field, t) in times {
        if let Some(t) = t
            && !(0..=strata_types::MAX_RECORD_TIME).contains(&t)
        {
            return Err(EngineError::BadRequest(format!(
                "{field}: {t} is not a time in milliseconds from 1970 to the year 287,396 \
                 (0 to 2^53)"
            )));
        }
    }
    Ok(())
}
