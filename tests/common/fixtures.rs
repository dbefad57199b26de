//! The invalid config fixtures: each `tests/fixtures/invalid/*.toml` lists, in `# expect: `
//! comments, exactly the error lines `hoptrace check` prints for it.
//!
//! Relative paths inside a fixture (TLS files) are resolved, like any config's, from the
//! working directory: both fixture tests run from the repository root (`cargo test` starts
//! test binaries there; the binary test also sets it on the child process).

use std::path::{Path, PathBuf};

/// The repository root, where the fixtures' relative paths start.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every fixture file, sorted.
pub fn invalid_fixtures() -> Vec<PathBuf> {
    let dir = repo_root().join("tests/fixtures/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "only {} fixtures", files.len());
    files
}

/// Compares what was printed for `fixture` (a `FILE: N errors` line, then one error per
/// line) with its `# expect:` lines, as multisets: `Err` describes every missing and every
/// unexpected line.
pub fn compare(fixture: &Path, printed: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(fixture).expect("readable fixture");
    let mut expected: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# expect: "))
        .collect();
    if expected.is_empty() {
        return Err(format!("{} has no `# expect:` line", fixture.display()));
    }
    let mut lines = printed.lines();
    let header = lines.next().unwrap_or_default();
    let count = match expected.len() {
        1 => "1 error".to_owned(),
        n => format!("{n} errors"),
    };
    let mut problems = Vec::new();
    if !header.ends_with(&format!(": {count}")) {
        problems.push(format!("header {header:?} does not say {count:?}"));
    }
    let mut got: Vec<&str> = lines.collect();
    expected.sort_unstable();
    got.sort_unstable();
    for line in &expected {
        match got.iter().position(|g| g == line) {
            Some(i) => {
                got.remove(i);
            }
            None => problems.push(format!("missing: {line}")),
        }
    }
    problems.extend(got.iter().map(|line| format!("unexpected: {line}")));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}:\n  {}\nprinted:\n{printed}",
            fixture.display(),
            problems.join("\n  ")
        ))
    }
}
