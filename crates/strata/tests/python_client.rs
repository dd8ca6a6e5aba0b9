//! The Python client's test suite (`clients/python/tests`), run by `cargo test` against this
//! build's binary, so `cargo test --workspace` tests the client and the LangChain store too.
//!
//! The suite needs a virtualenv with the client and its pinned test dependencies. It is made
//! once under the cargo target directory (`target/python-venv`) and reused while its stamp (the
//! Python version, the client's path, `pyproject.toml` and `constraints.txt`) is unchanged; the
//! client is installed editable, so source edits need no reinstall. A missing Python, venv
//! module or package index fails this test with the reason: a suite that skipped itself would
//! pass without testing anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Python used to create the virtualenv; `STRATA_PYTHON` overrides it.
fn base_python() -> String {
    std::env::var("STRATA_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn client_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python");
    dir.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// `<target>/debug/strata` → `<target>`: the venv lives with the build it tests.
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_strata"));
    bin.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("no target directory above {}", bin.display()))
        .to_path_buf()
}

/// The repository's model directory (filled by `scripts/fetch-model.sh`), absolute.
fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2")
}

fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a setup step, failing the test with `hint` and the step's output if it fails.
fn run(cmd: &mut Command, what: &str, hint: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}\n{hint}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {hint}\n{}",
        out.status,
        output_text(&out)
    );
    out
}

/// What the venv was built from; a different stamp means it must be rebuilt.
fn stamp(python: &str, client: &Path) -> String {
    let version = run(
        Command::new(python).arg("--version"),
        "python --version",
        "install Python 3 (3.10 or newer) or set STRATA_PYTHON to one",
    );
    let read = |name: &str| {
        std::fs::read_to_string(client.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", client.join(name).display()))
    };
    format!(
        "python: {}source: {}\n--- pyproject.toml\n{}\n--- constraints.txt\n{}",
        String::from_utf8_lossy(&version.stdout),
        client.display(),
        read("pyproject.toml"),
        read("constraints.txt"),
    )
}

/// The virtualenv's Python, after building the venv if its stamp is missing or stale.
fn ensure_venv(client: &Path) -> PathBuf {
    let python = base_python();
    let venv = target_dir().join("python-venv");
    let stamp_path = venv.join("strata-stamp.txt");
    let expected = stamp(&python, client);
    if venv_python(&venv).exists()
        && std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == expected)
    {
        return venv_python(&venv);
    }
    // A stale or half-built venv (the stamp is written last) is rebuilt from scratch.
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .unwrap_or_else(|e| panic!("removing {}: {e}", venv.display()));
    }
    run(
        Command::new(&python).args(["-m", "venv"]).arg(&venv),
        "creating the virtualenv",
        "Python's venv module is needed (on Debian: apt-get install python3-venv), \
         or set STRATA_PYTHON to a Python that has it",
    );
    let constraints = client.join("constraints.txt");
    run(
        Command::new(venv_python(&venv))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .arg("-c")
            .arg(&constraints)
            .arg("-e")
            .arg(format!("{}[langchain,test]", client.display()))
            // Pins the build backend too: pip builds the client in an isolated environment,
            // which honours constraints given this way only.
            .env("PIP_CONSTRAINT", &constraints),
        "installing the Python client and its test dependencies",
        "pip needs to reach the package index (PyPI)",
    );
    std::fs::write(&stamp_path, expected)
        .unwrap_or_else(|e| panic!("writing {}: {e}", stamp_path.display()));
    venv_python(&venv)
}

#[test]
fn python_client_suite_passes() {
    let client = client_dir();
    let python = ensure_venv(&client);
    let out = Command::new(&python)
        .args(["-m", "pytest", "tests", "-q", "-rs"])
        .current_dir(&client)
        .env("STRATA_BIN", env!("CARGO_BIN_EXE_strata"))
        // The embedder tests' model, as an absolute path (the suite runs in the client's
        // directory).
        .env("STRATA_MODEL_DIR", model_dir())
        // Keep `__pycache__` directories out of the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("STRATA_URL")
        .env_remove("STRATA_API_KEY")
        .env_remove("STRATA_OPERATOR_KEY")
        .output()
        .unwrap_or_else(|e| panic!("running pytest with {}: {e}", python.display()));
    let report = output_text(&out);
    assert!(out.status.success(), "the Python suite failed\n{report}");
    // The summary line, e.g. "114 passed in 15.2s". A skip is a failure here: skipped tests
    // would let a broken client or store pass.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or_else(|| panic!("no pytest summary\n{report}"));
    assert!(
        !summary.contains("skipped"),
        "the Python suite skipped tests\n{report}"
    );
    println!("python client: {summary}");
}
