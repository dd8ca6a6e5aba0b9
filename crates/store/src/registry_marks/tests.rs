//! The lists of marked registry rows follow every write and removal of a row, and a file
//! without them gets them built by one scan.

use redb::{ReadableDatabase, ReadableTable};
use strata_types::TenantId;

use super::*;
use crate::TenantMeta;

fn profile(level: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut p = serde_json::Map::new();
    p.insert("isolation".into(), level.into());
    p
}

fn create(store: &Store, name: &str, level: &str) -> TenantMeta {
    let id = TenantId::parse(name).unwrap();
    store
        .write(|w| w.create_tenant(&id, 1, profile(level)))
        .unwrap()
}

fn candidates(store: &Store) -> Vec<String> {
    marked(store, RowMark::Dedicated)
}

fn marked(store: &Store, mark: RowMark) -> Vec<String> {
    let mut ids: Vec<String> = store
        .rows_marked(mark)
        .unwrap()
        .into_iter()
        .map(|(id, meta)| {
            meta.unwrap();
            id
        })
        .collect();
    ids.sort();
    ids
}

/// The rows a scan of the whole registry finds: what the list must equal.
fn scanned(store: &Store) -> Vec<String> {
    let db = store.db().clone();
    let txn = db.begin_read().unwrap();
    let mut ids = Vec::new();
    for row in txn.open_table(REGISTRY).unwrap().iter().unwrap() {
        let (k, v) = row.unwrap();
        if RowMark::Dedicated.marks(v.value()) {
            ids.push(k.value().to_owned());
        }
    }
    ids
}

fn listed_entries(store: &Store) -> usize {
    let db = store.db().clone();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let mut n = 0;
    for mark in RowMark::ALL {
        n += meta
            .range(mark.prefix()..mark.prefix_end())
            .unwrap()
            .count();
    }
    n
}

#[test]
fn the_list_follows_creations_level_changes_and_erasures() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    assert!(candidates(&store).is_empty(), "a new file lists nothing");
    create(&store, "acme", "shared");
    let globex = create(&store, "globex", "dedicated");
    let mut initech = create(&store, "initech", "partition");
    assert_eq!(candidates(&store), ["globex"]);

    initech.profile = profile("dedicated");
    store.write(|w| w.put_tenant(&initech)).unwrap();
    assert_eq!(candidates(&store), ["globex", "initech"]);
    assert_eq!(candidates(&store), scanned(&store));

    initech.profile = profile("shared");
    store.write(|w| w.put_tenant(&initech)).unwrap();
    store.write(|w| w.erase_tenant(&globex)).unwrap();
    assert!(candidates(&store).is_empty());
    assert_eq!(
        listed_entries(&store),
        0,
        "an erased tenant leaves no entry behind"
    );

    // The list is kept across a reopen, not rebuilt.
    create(&store, "umbrella", "dedicated");
    drop(store);
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    assert_eq!(candidates(&store), ["umbrella"]);
}

#[test]
fn a_file_without_the_list_gets_it_built_by_one_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    create(&store, "acme", "shared");
    create(&store, "globex", "dedicated");
    // More rows than the build reads at a time, so that it pages.
    store
        .write(|w| {
            for i in 0..BUILD_PAGE + 10 {
                let id = TenantId::parse(format!("t{i:05}")).unwrap();
                w.create_tenant(&id, 1, profile("shared"))?;
            }
            let late = TenantId::parse("zeta").unwrap();
            w.create_tenant(&late, 1, profile("dedicated"))?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    // A file written before the list existed: no entries and no mark.
    store
        .write(|w| {
            w.meta.remove(RowMark::Dedicated.entry("globex").as_str())?;
            w.meta.remove(RowMark::Dedicated.entry("zeta").as_str())?;
            w.meta.remove(COMPLETE)?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    assert_eq!(listed_entries(&store), 0);
    assert_eq!(
        candidates(&store),
        ["globex", "zeta"],
        "the build finds them by the scan, on every page"
    );
    assert_eq!(
        listed_entries(&store),
        2,
        "and lists them for the next start"
    );
    create(&store, "initech", "dedicated");
    assert_eq!(candidates(&store), ["globex", "initech", "zeta"]);
}

#[test]
fn an_import_under_way_is_listed_until_its_row_no_longer_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let mut acme = create(&store, "acme", "shared");
    create(&store, "globex", "dedicated");
    assert!(marked(&store, RowMark::Importing).is_empty());
    acme.profile.insert("importing".into(), true.into());
    store.write(|w| w.put_tenant(&acme)).unwrap();
    assert_eq!(marked(&store, RowMark::Importing), ["acme"]);
    assert_eq!(candidates(&store), ["globex"], "each mark has its own list");
    acme.profile.remove("importing");
    store.write(|w| w.put_tenant(&acme)).unwrap();
    assert!(marked(&store, RowMark::Importing).is_empty());
    // Built by the scan too, with the other list.
    acme.profile.insert("importing".into(), true.into());
    store.write(|w| w.put_tenant(&acme)).unwrap();
    store
        .write(|w| {
            w.meta.remove(RowMark::Importing.entry("acme").as_str())?;
            w.meta.remove(RowMark::Dedicated.entry("globex").as_str())?;
            w.meta.remove(COMPLETE)?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    assert_eq!(marked(&store, RowMark::Importing), ["acme"]);
    assert_eq!(candidates(&store), ["globex"]);
}
