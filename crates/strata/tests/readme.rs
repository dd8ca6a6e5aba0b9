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
        blocks.len() >= 5,
        "expected the Quickstart's sh blocks, got {}",
        blocks.len()
    );
    let server = Server::start();
    // Blocks run in one shell, like a reader pasting them into one terminal; each is echoed
    // with a marker so a failure names its block.
    let mut script = String::from("set -euo pipefail\n");
    for (i, b) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '--- block {i}'\n{b}\necho\n"));
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("STRATA", &server.url)
        .env("OPERATOR_KEY", OPERATOR_KEY)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The searches found what the README says they find.
    let last_block = stdout.rsplit("--- block").next().unwrap_or("");
    assert!(
        last_block.contains("oat milk"),
        "Alice's search missed her memory:\n{last_block}"
    );
    assert!(
        last_block.contains("coffee machine"),
        "support search missed:\n{last_block}"
    );
    let support_search = last_block.rsplit("\"hits\"").next().unwrap_or("");
    assert!(
        !support_search.contains("oat milk"),
        "private memory leaked:\n{last_block}"
    );
}
