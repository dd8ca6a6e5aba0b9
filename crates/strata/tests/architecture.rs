//! Keeps ARCHITECTURE.md honest: every repository path it names in backticks exists.

use std::path::Path;

#[test]
fn every_path_named_in_architecture_md_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let paths: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| (s.starts_with("crates/") || s.starts_with("docs/")) && !s.contains(' '))
        .collect();
    assert!(
        paths.len() >= 20,
        "expected ARCHITECTURE.md to name its files, found {paths:?}"
    );
    let missing: Vec<&&str> = paths.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}
