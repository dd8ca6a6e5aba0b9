//! The README's Quickstart, run verbatim: every ```sh block of the "Quickstart" section, in
//! order, in one bash session against the real binary.

mod common;

use std::process::Command;

use common::{OPERATOR_KEY, Server};

fn quickstart_blocks() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let start = readme
        .find("\n## Quickstart")
        .expect("a Quickstart section");
    let section = &readme[start + 1..];
    let section = match section[3..].find("\n## ") {
        Some(end) => &section[..end + 3],
        None => section,
    };
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn readme_quickstart_runs_verbatim() {
    let blocks = quickstart_blocks();
    assert!(
        blocks.len() >= 7,
        "expected the Quickstart's sh blocks, got {}",
        blocks.len()
    );
    let server = Server::start();
    // Blocks run in one shell, like a reader pasting them into one terminal; each is echoed
    // with a marker so a failure names its block. The `strata` the README runs is this
    // build's, found on PATH as after `cargo install`.
    let mut script = String::from("set -euo pipefail\n");
    for (i, b) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '--- block {i}'\n{b}\necho\n"));
    }
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_strata"))
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("STRATA_SERVER", &server.url)
        .env("STRATA_KEY", OPERATOR_KEY)
        .env("PATH", path)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The searches found what the README says they find: Alice her memory, nobody else.
    for expected in [
        "as [\"u:alice\"]:\n[\"Alice takes oat milk in her coffee\"]\n",
        "as [\"u:bob\"]:\n[]\n",
        "as []:\n[]\n",
        "[\"Ticket 42: the coffee machine on floor 3 is broken\"",
        "\"domains\":[\"support\"]",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let support = stdout.rsplit("--- block").nth(1).unwrap_or("");
    assert!(
        !support.contains("oat milk"),
        "private memory leaked into the support search:\n{support}"
    );
}

/// The README's list of metadata keys that shadow a built-in field is the server's own.
#[test]
fn readme_lists_the_reserved_metadata_keys() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let start = readme
        .find("may not shadow a built-in field")
        .expect("the reserved-keys sentence");
    let sentence = &readme[start..];
    let sentence = &sentence[..sentence.find(".\n").expect("its end")];
    let listed: Vec<&str> = sentence.split('`').skip(1).step_by(2).collect();
    // The first quoted word is the error code's status text, the rest the keys.
    let listed: Vec<&str> = listed.into_iter().skip(1).collect();
    assert_eq!(listed, strata_types::RESERVED_FIELDS);
}
