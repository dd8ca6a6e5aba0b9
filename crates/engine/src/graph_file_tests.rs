//! Graph files through an engine: a saved graph is one file, read back at the next load; a
//! damaged or missing file, or one a crash left half-saved, makes the load rebuild with the
//! same answers; a migration keeps it usable; a hard delete leaves none. The same for a large
//! collection's search image, a file of its own (`crate::search_image`).

use std::path::{Path, PathBuf};

use strata_auth::{OperatorScope, TenantScope};
use strata_store::Reads;
use strata_types::{Metric, NewRecord, RecordId, RequestScope, TenantId};

use crate::snapshot::{self, SavedGraph};
use crate::test_support::{DIM, admin_scope, answers, put_clustered, put_clustered_with, vec_name};
use crate::{Engine, EngineConfig};

/// Records of the test collection: enough for a graph (see `test_support::DIM`).
const N: usize = 1_100;

fn open(dir: &Path) -> (Engine, TenantScope) {
    let engine = Engine::open(dir, EngineConfig::default()).unwrap();
    let scope = admin_scope(&engine, "acme");
    (engine, scope)
}

/// A tenant with a graph, saved; its answers.
fn saved_tenant() -> (tempfile::TempDir, Vec<Vec<String>>) {
    saved_tenant_with(|_| None)
}

/// [`saved_tenant`] whose records hold forty words each, none shared: a search image large
/// enough to be decoded beside the graph file's read (`crate::image_beside_graph`).
fn saved_tenant_with_text() -> (tempfile::TempDir, Vec<Vec<String>>) {
    let saved = saved_tenant_with(|i| {
        Some(
            (0..40)
                .map(|j| format!("w{i}x{j}"))
                .collect::<Vec<_>>()
                .join(" "),
        )
    });
    let (engine, scope) = open(saved.0.path());
    let r = engine.store.read().unwrap();
    let image = crate::search_image::load(&r, scope.key(), &vec_name())
        .unwrap()
        .expect("an image");
    assert!(image.len() >= crate::image_beside_graph::SIDE_BY_SIDE_FROM_BYTES as u64);
    saved
}

/// Loads the calling thread made on two threads so far.
fn side_by_side_loads() -> u64 {
    crate::image_beside_graph::tests::SIDE_BY_SIDE.get()
}

fn saved_tenant_with(
    content: impl Fn(usize) -> Option<String>,
) -> (tempfile::TempDir, Vec<Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let id = TenantId::parse("acme").unwrap();
    engine
        .create_tenant(&OperatorScope::for_tests(), &id, None)
        .unwrap();
    let scope = admin_scope(&engine, "acme");
    engine
        .create_collection(&scope, &vec_name(), DIM, Metric::Cosine)
        .unwrap();
    put_clustered_with(&engine, &scope, N, content);
    engine.index_stats(&scope).unwrap();
    engine.wait_for_graph_builds();
    let before = answers(&engine, &scope);
    engine.persist_indexes().unwrap();
    (dir, before)
}

fn restored(engine: &Engine, scope: &TenantScope) -> bool {
    engine
        .index_stats(scope)
        .unwrap()
        .into_iter()
        .any(|s| s.collection == vec_name() && s.graph && s.restored_from_snapshot)
}

/// What the tenant's snapshot records of its graph file.
fn graph_file(engine: &Engine, scope: &TenantScope) -> crate::graph_file::GraphFile {
    let bytes = engine
        .store
        .read()
        .unwrap()
        .blob(scope.key(), "index:vec")
        .unwrap()
        .expect("a snapshot");
    match snapshot::decode(&bytes).unwrap().graph {
        Some(SavedGraph::File(f)) => f,
        other => panic!("no graph file: {other:?}"),
    }
}

/// The graph file the tenant's snapshot names.
fn named_file(engine: &Engine, scope: &TenantScope) -> PathBuf {
    let name = graph_file(engine, scope).name;
    engine.store.derived_dir(scope.key()).join(name)
}

/// The image file the tenant's image row names, if its image is a file.
fn image_file(engine: &Engine, scope: &TenantScope) -> Option<PathBuf> {
    let row = engine
        .store
        .read()
        .unwrap()
        .blob(scope.key(), "image:vec")
        .unwrap()
        .expect("an image row");
    let f = crate::search_image::named_file(&row)?.unwrap();
    Some(engine.store.derived_dir(scope.key()).join(f.name))
}

/// Every file the tenant's rows name: its graph's, and its image's when that is a file.
fn named_files(engine: &Engine, scope: &TenantScope) -> Vec<PathBuf> {
    let mut named = vec![named_file(engine, scope)];
    named.extend(image_file(engine, scope));
    named.sort();
    named
}

/// Lets a test damage a graph file, which the store writes read-only.
fn writable(p: &Path) {
    if let Ok(meta) = std::fs::metadata(p) {
        let mut perms = meta.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(p, perms).unwrap();
    }
}

/// Every file in the tenant's derived directory.
fn files(engine: &Engine, scope: &TenantScope) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(engine.store.derived_dir(scope.key()))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

/// Writes a derived file no row names into the tenant's directory, as a crash after a save's
/// commit leaves its old files.
fn write_stray(engine: &Engine, scope: &TenantScope, name: &str) {
    engine
        .store
        .write_derived(scope.key(), name, |w| w.write_all(b"an old graph"))
        .unwrap();
}

fn verify_ok(engine: &Engine) -> crate::VerifyReport {
    let report = engine
        .verify_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse("acme").unwrap(),
        )
        .unwrap();
    assert!(report.ok, "{report:?}");
    report
}

#[test]
fn a_saved_graph_is_one_file_read_back_at_the_next_load() {
    let (dir, before) = saved_tenant();
    let (engine, scope) = open(dir.path());
    assert_eq!(files(&engine, &scope), vec![named_file(&engine, &scope)]);
    assert!(restored(&engine, &scope));
    assert_eq!(answers(&engine, &scope), before);
    assert!(verify_ok(&engine).warnings.is_empty());
}

/// A restored graph maps its file, privately: writes to the tenant change the graph (new
/// nodes, new links in mapped rows, rows grown past the mapping), never the file, which
/// still checks out; the save that replaces and deletes the file leaves the loaded graph
/// answering the same, and the next load restores the new file.
#[test]
fn writes_to_a_restored_graph_never_change_its_file() {
    let (dir, _) = saved_tenant();
    let (engine, scope) = open(dir.path());
    assert!(restored(&engine, &scope));
    let old = named_file(&engine, &scope);
    let bytes = std::fs::read(&old).unwrap();
    // The load maps the file where it can (the graph's rows, 9 MB here, are its pages).
    let g = crate::graph_file::load(
        &engine.store,
        scope.key(),
        &graph_file(&engine, &scope),
        DIM as usize,
        strata_index::Metric::Cosine,
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        g.maps_a_file(),
        cfg!(all(target_os = "linux", target_endian = "little"))
    );
    drop(g);
    let records = strata_index::testdata::clustered(300, DIM as usize, 10, 7)
        .into_iter()
        .enumerate()
        .map(|(i, v)| NewRecord {
            id: Some(RecordId::parse(format!("new{i}")).unwrap()),
            modality: Some(vec_name()),
            vector: Some(v),
            ..Default::default()
        })
        .collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    let after = answers(&engine, &scope);
    assert!(
        restored(&engine, &scope),
        "the writes went into the restored graph"
    );
    assert!(std::fs::read(&old).unwrap() == bytes, "the file changed");
    assert!(verify_ok(&engine).warnings.is_empty());
    engine.persist_indexes().unwrap();
    assert!(!old.exists(), "the save deleted the old file");
    assert_eq!(answers(&engine, &scope), after);
    drop(engine);
    let (engine, scope) = open(dir.path());
    assert!(restored(&engine, &scope));
    assert_eq!(answers(&engine, &scope), after);
}

/// Damage done to a file.
type Damage = fn(&Path);

/// Each kind of damage, done to the file the snapshot names: the load rebuilds from the
/// records (no graph restored), the answers are the same, `verify` warns without failing, and
/// the next save writes a good file again.
#[test]
fn a_damaged_or_missing_graph_file_is_rebuilt_with_the_same_answers() {
    let (dir, before) = saved_tenant();
    damaged_files_are_rebuilt(dir.path(), &before, false);
}

/// The same with the image decoded beside the graph file's read: the damage is found there
/// too, and the graph is dropped, not served.
#[test]
fn a_damaged_graph_file_read_beside_the_image_is_rebuilt_with_the_same_answers() {
    let (dir, before) = saved_tenant_with_text();
    damaged_files_are_rebuilt(dir.path(), &before, true);
}

/// A large image, decoded on another thread while the graph file is read: the graph is
/// restored and answers as it did.
#[test]
fn a_large_image_is_decoded_beside_the_graph_file_and_the_graph_restored() {
    let (dir, before) = saved_tenant_with_text();
    let (engine, scope) = open(dir.path());
    let loads = side_by_side_loads();
    assert!(restored(&engine, &scope));
    assert_eq!(side_by_side_loads(), loads + 1);
    assert_eq!(answers(&engine, &scope), before);
    assert!(verify_ok(&engine).warnings.is_empty());
}

/// A large image is kept in a file of its own beside the graph's, which its row names (a
/// small one stays in its row: `a_saved_graph_is_one_file_read_back_at_the_next_load`); the
/// load reads it and restores the tenant.
#[test]
fn a_large_image_is_a_file_its_row_names() {
    let (dir, before) = saved_tenant_with_text();
    let (engine, scope) = open(dir.path());
    let image = image_file(&engine, &scope).expect("an image file");
    assert!(image.to_str().unwrap().ends_with(".image"));
    assert!(
        std::fs::metadata(&image).unwrap().len() >= crate::search_image::IN_FILE_FROM_BYTES as u64
    );
    assert_eq!(named_files(&engine, &scope).len(), 2);
    assert_eq!(files(&engine, &scope), named_files(&engine, &scope));
    assert!(restored(&engine, &scope));
    assert_eq!(answers(&engine, &scope), before);
    assert!(verify_ok(&engine).warnings.is_empty());
}

/// Each kind of damage done to the image file: the load rebuilds from the records with the
/// same answers, `verify` warns without failing, and the next save (the rebuilt index is a
/// change worth saving) writes good files again, the damaged one deleted.
#[test]
fn a_damaged_or_missing_image_file_is_rebuilt_with_the_same_answers() {
    let (dir, before) = saved_tenant_with_text();
    for (what, damage) in damages() {
        let (engine, scope) = open(dir.path());
        let file = image_file(&engine, &scope).expect("an image file");
        writable(&file);
        damage(&file);
        let report = verify_ok(&engine);
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("search image of vec")),
            "{what}: {report:?}"
        );
        // Rebuilt from the records (its graph may still come from its own, intact file).
        assert!(
            engine
                .index_stats(&scope)
                .unwrap()
                .iter()
                .all(|s| !s.loaded_from_image),
            "{what}: loaded from the image"
        );
        assert_eq!(answers(&engine, &scope), before, "{what}");
        engine.wait_for_graph_builds();
        engine.persist_indexes().unwrap();
        assert_eq!(
            files(&engine, &scope),
            named_files(&engine, &scope),
            "{what}"
        );
        drop(engine);
        let (engine, scope) = open(dir.path());
        assert!(restored(&engine, &scope), "{what}: saved again");
        assert_eq!(answers(&engine, &scope), before, "{what}");
        assert!(verify_ok(&engine).warnings.is_empty(), "{what}");
    }
}

/// Damage done to a derived file, each kind with its name.
fn damages() -> Vec<(&'static str, Damage)> {
    vec![
        ("cut in half", |p| {
            let len = std::fs::metadata(p).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(len / 2).unwrap();
        }),
        ("one bit flipped in the middle", |p| {
            let mut bytes = std::fs::read(p).unwrap();
            // In a graph, past the header, labels, levels and tombstones: inside the rows.
            let at = bytes.len() / 2;
            bytes[at] ^= 0x10;
            std::fs::write(p, bytes).unwrap();
        }),
        ("a byte appended", |p| {
            let mut bytes = std::fs::read(p).unwrap();
            bytes.push(0);
            std::fs::write(p, bytes).unwrap();
        }),
        ("deleted", |p| std::fs::remove_file(p).unwrap()),
    ]
}

/// `side_by_side`: each damaged file must have been read beside its image's decoding.
fn damaged_files_are_rebuilt(dir: &Path, before: &[Vec<String>], side_by_side: bool) {
    for (what, damage) in damages() {
        let (engine, scope) = open(dir);
        let file = named_file(&engine, &scope);
        writable(&file);
        damage(&file);
        let loads = side_by_side_loads();
        let report = verify_ok(&engine);
        assert!(
            report.warnings.iter().any(|w| w.contains("graph of vec")),
            "{what}: {report:?}"
        );
        assert!(!restored(&engine, &scope), "{what}: restored");
        assert!(
            !side_by_side || side_by_side_loads() > loads,
            "{what}: not read beside the image"
        );
        assert_eq!(answers(&engine, &scope), before, "{what}");
        engine.wait_for_graph_builds();
        assert_eq!(answers(&engine, &scope), before, "{what}, rebuilt");
        engine.persist_indexes().unwrap();
        // The damaged file is gone with the save; the new ones are the only ones.
        assert_eq!(files(&engine, &scope), named_files(&engine, &scope));
        drop(engine);
        let (engine, scope) = open(dir);
        assert!(restored(&engine, &scope), "{what}: saved again");
        assert_eq!(answers(&engine, &scope), before, "{what}");
    }
}

/// A save writes the new file (temporary, synced, renamed), commits the snapshot naming it,
/// then deletes the old one. A crash before the commit leaves the old snapshot and its file,
/// plus a complete or partial file nothing names: the load uses the old one, and the next
/// save deletes the leftovers.
#[test]
fn a_crash_between_the_steps_of_a_save_leaves_the_old_graph_usable() {
    let (dir, before) = saved_tenant();
    let (engine, scope) = open(dir.path());
    let old = named_file(&engine, &scope);
    let derived = engine.store.derived_dir(scope.key());
    // A new file renamed into place before the crash, and one still being written.
    let unnamed = derived.join(format!(
        "{}-9-00000000000000ff.hnsw",
        old.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .split('-')
            .next()
            .unwrap()
    ));
    std::fs::copy(&old, &unnamed).unwrap();
    std::fs::write(derived.join("tmp-partial.hnsw"), b"STRHNSW2").unwrap();
    drop(engine);

    let (engine, scope) = open(dir.path());
    assert!(restored(&engine, &scope));
    assert_eq!(named_file(&engine, &scope), old);
    assert_eq!(answers(&engine, &scope), before);
    verify_ok(&engine);
    // The next save (after a change) names a new file and deletes everything else.
    put_clustered(&engine, &scope, N + 10);
    engine.wait_for_graph_builds();
    let after = answers(&engine, &scope);
    engine.persist_indexes().unwrap();
    let new = named_file(&engine, &scope);
    assert_ne!(new, old);
    assert_eq!(files(&engine, &scope), vec![new]);
    drop(engine);
    let (engine, scope) = open(dir.path());
    assert!(restored(&engine, &scope));
    assert_eq!(answers(&engine, &scope), after);
}

/// The files do not depend on the isolation level: after a migration into the tenant's own
/// file and back, a restart still restores the graph from its file.
#[test]
fn a_migration_keeps_the_graph_file_usable() {
    let (dir, before) = saved_tenant();
    let id = TenantId::parse("acme").unwrap();
    for target in [
        crate::IsolationLevel::Dedicated,
        crate::IsolationLevel::Shared,
    ] {
        let (engine, scope) = open(dir.path());
        engine
            .migrate_tenant(
                &OperatorScope::for_tests(),
                &id,
                crate::MigrateRequest {
                    target,
                    index_params: None,
                    dry_run: false,
                },
            )
            .unwrap();
        engine.wait_for_graph_builds();
        engine.persist_indexes().unwrap();
        drop(engine);
        let (engine, scope2) = open(dir.path());
        assert_eq!(scope.key(), scope2.key());
        assert!(restored(&engine, &scope2), "after moving to {target:?}");
        assert_eq!(answers(&engine, &scope2), before);
        assert!(verify_ok(&engine).warnings.is_empty());
    }
}

/// Deleting a collection deletes its files, its image's as well as its graph's.
#[test]
fn a_deleted_collection_leaves_no_file() {
    let (dir, before) = saved_tenant_with_text();
    let (engine, scope) = open(dir.path());
    assert_eq!(answers(&engine, &scope), before);
    // A file no row names, of another name (a save's, left by a crash after its commit):
    // the delete's clean-up deletes what no row names, not only files of its own name.
    write_stray(&engine, &scope, "6f74686572-1-00000000000000aa.hnsw");
    assert_eq!(files(&engine, &scope).len(), 3);
    engine.delete_collection(&scope, &vec_name()).unwrap();
    assert_eq!(files(&engine, &scope), Vec::<PathBuf>::new());
    assert!(verify_ok(&engine).warnings.is_empty());
}

/// The files of a deleted collection are deleted by what no row names, not by their name: a
/// delete whose last step runs late, after its collection was created again under the name
/// and saved, keeps the new collection's files (named by its rows) and deletes only the
/// stray one of the same name.
#[test]
fn a_late_delete_of_a_collections_files_keeps_those_its_successor_saved() {
    let (dir, before) = saved_tenant_with_text();
    let (engine, scope) = open(dir.path());
    assert_eq!(answers(&engine, &scope), before);
    let named = named_files(&engine, &scope);
    assert_eq!(named.len(), 2, "a graph file and an image file");
    let hex: String = vec_name()
        .as_str()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stray = format!("{hex}-1-00000000000000aa.hnsw");
    write_stray(&engine, &scope, &stray);
    assert_eq!(files(&engine, &scope).len(), 3);
    engine.delete_unnamed_files(&scope);
    assert_eq!(files(&engine, &scope), named);
    drop(engine);
    let (engine, scope) = open(dir.path());
    assert_eq!(answers(&engine, &scope), before);
    assert!(
        restored(&engine, &scope),
        "loaded from its files, not rebuilt"
    );
    assert!(verify_ok(&engine).warnings.is_empty());
}

/// A verify holds the tenant's saves back while it reads: a save commits rows naming new
/// files and deletes the old ones with no other lock held, so a verify that read its rows
/// before such a save and the files after would find them gone and warn about a healthy
/// tenant.
#[test]
fn a_verify_holds_the_tenants_saves_back() {
    let (dir, before) = saved_tenant_with_text();
    let (engine, scope) = open(dir.path());
    assert_eq!(answers(&engine, &scope), before);
    // How long a verify takes with nothing held: one that ignored the save would be done
    // well within three times that.
    let started = std::time::Instant::now();
    verify_ok(&engine);
    let unheld = started.elapsed();
    let slot = engine.indexes.get(scope.key()).expect("a loaded tenant");
    let saving = slot.saving.lock().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let verify = s.spawn(|| {
            let report = verify_ok(&engine);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            report
        });
        std::thread::sleep(unheld * 3 + std::time::Duration::from_millis(100));
        assert!(
            !done.load(std::sync::atomic::Ordering::SeqCst),
            "the verify waits for the save in progress"
        );
        drop(saving);
        assert!(verify.join().unwrap().warnings.is_empty());
    });
}

/// Files no row names (a crash between a save's commit and its deletion of the old files
/// leaves them) are deleted when the tenant is next loaded, not only by its next save, which
/// a tenant that is only read never makes; the files its rows name stay and are loaded.
#[test]
fn a_load_deletes_the_files_no_row_names() {
    let (dir, before) = saved_tenant();
    {
        let (engine, scope) = open(dir.path());
        write_stray(&engine, &scope, "766563-1-00000000000000aa.hnsw");
    }
    let (engine, scope) = open(dir.path());
    let named = named_files(&engine, &scope);
    assert_eq!(files(&engine, &scope).len(), named.len() + 1);
    assert_eq!(answers(&engine, &scope), before);
    assert!(
        restored(&engine, &scope),
        "loaded from its files, not rebuilt"
    );
    assert_eq!(files(&engine, &scope), named);
}

/// A hard delete removes the tenant's graph files with it; a directory a crash left behind
/// for a tenant that is no longer registered goes at the next start.
#[test]
fn a_hard_delete_leaves_no_graph_file() {
    let (dir, _) = saved_tenant();
    let (engine, scope) = open(dir.path());
    let derived = engine.store.derived_dir(scope.key());
    assert!(derived.is_dir());
    engine
        .purge_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse("acme").unwrap(),
        )
        .unwrap();
    assert!(!derived.exists());

    // As if a crash came between the purge's commit and the deletion.
    std::fs::create_dir_all(&derived).unwrap();
    std::fs::write(derived.join("leftover.hnsw"), b"x").unwrap();
    drop(engine);
    let _engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    assert!(!derived.exists());
}
