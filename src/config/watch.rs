//! Watches the directory that holds the config file, so that every way a file gets
//! replaced is seen: in-place writes, atomic renames (editors, `mv`), and Kubernetes'
//! ConfigMap volumes, where `config.toml → ..data/config.toml` and `..data` is a symlink
//! swapped to a new timestamped directory. Watching the file itself would miss the last two.
//!
//! Only events on entries that can change what the config path reads count: the file's own
//! name, `..data`, and the directory entries its symlinks lead through. Anything else in the
//! directory (a log file the process writes into, an editor's swap file) is ignored: a
//! reload that logs into the watched directory would otherwise trigger itself forever.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use prometheus_client::metrics::counter::Counter;

/// Kubernetes' ConfigMap volumes: the symlink swapped to a new timestamped directory.
const KUBERNETES_DATA: &str = "..data";

/// Symlink hops followed to find the entries the config path leads through.
const MAX_HOPS: usize = 8;

/// Keeps the watch alive; dropping it stops watching.
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigWatcher")
    }
}

/// Counts the directory's events by what was done with them.
#[derive(Clone, Debug, Default)]
pub struct WatchCounters {
    /// Events that concerned the config file (each may start a reload, after debouncing).
    pub relevant: Counter,
    /// Events on other entries of the directory, and reads.
    pub ignored: Counter,
}

/// Calls `changed.notify_one()` whenever an entry of a directory of `files` that one of
/// them reads through (see the module doc) is created, written, renamed or removed. Reads
/// (including hoptrace's own) and other entries are ignored.
pub fn watch(
    files: &[PathBuf],
    changed: Arc<tokio::sync::Notify>,
    counters: WatchCounters,
) -> notify::Result<ConfigWatcher> {
    let files = watched_files(files);
    let mut dirs: Vec<PathBuf> = files.iter().map(|(dir, _)| dir.clone()).collect();
    dirs.sort();
    dirs.dedup();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        let Ok(event) = event else { return };
        // Resolved per event: a symlink may have been pointed elsewhere since the last one.
        let watched: Vec<(&Path, Vec<OsString>)> = files
            .iter()
            .map(|(dir, file)| (dir.as_path(), relevant_names(file, dir)))
            .collect();
        if is_relevant(&event, &watched) {
            counters.relevant.inc();
            changed.notify_one();
        } else {
            counters.ignored.inc();
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(ConfigWatcher { _watcher: watcher })
}

/// Each file with the directory watched for it, both absolute: notify reports events under
/// the absolute form of a relative directory, and a relative config path (`--config
/// cfg.toml`) must match them.
fn watched_files(files: &[PathBuf]) -> Vec<(PathBuf, PathBuf)> {
    files
        .iter()
        .map(|f| {
            let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
            (directory_of(&f).to_owned(), f)
        })
        .collect()
}

/// The directory watched for `path`: its parent, `.` for a bare file name.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The names of the entries of `dir` whose change can change what `path` reads: its own
/// name, `..data`, and, while `path` is a symlink (chain) leading through `dir`, the entry
/// each hop leads to (for `config.toml → ..data/config.toml` that is `..data`; for
/// `config.toml → v2.toml`, `v2.toml`). Targets outside `dir` are not watched anyway.
pub fn relevant_names(path: &Path, dir: &Path) -> Vec<OsString> {
    let mut names = vec![OsString::from(KUBERNETES_DATA)];
    if let Some(name) = path.file_name() {
        names.push(name.to_owned());
    }
    let mut current = path.to_owned();
    for _ in 0..MAX_HOPS {
        let Ok(target) = std::fs::read_link(&current) else {
            break;
        };
        let target = match current.parent() {
            Some(parent) if target.is_relative() => parent.join(target),
            _ => target,
        };
        let Some(first) = first_component_in(&target, dir) else {
            break;
        };
        if !names.contains(&first) {
            names.push(first);
        }
        current = target;
    }
    names
}

/// The first component of `path` below `dir` (`dir/a/b` → `a`), if `path` is below it
/// (as given, or with `dir` canonical, for absolute link targets).
fn first_component_in(path: &Path, dir: &Path) -> Option<OsString> {
    let first = |rest: &Path| match rest.components().next() {
        Some(Component::Normal(name)) => Some(name.to_owned()),
        _ => None,
    };
    if let Ok(rest) = path.strip_prefix(dir) {
        return first(rest);
    }
    let canonical = dir.canonicalize().ok()?;
    first(path.strip_prefix(canonical).ok()?)
}

/// Whether `event` may change a watched file: a create, write, rename or remove (not a
/// read) of an entry named in `watched` (directory, relevant names of that directory). An
/// event naming no path (the kernel queue overflowed) counts: what it stands for is unknown.
pub fn is_relevant(event: &Event, watched: &[(&Path, Vec<OsString>)]) -> bool {
    let kind = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    let concerns = |path: &PathBuf| {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        watched
            .iter()
            .any(|(d, names)| *d == dir && names.iter().any(|n| n.as_os_str() == name))
    };
    kind && (event.paths.is_empty() || event.paths.iter().any(concerns))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        let mut event = Event::new(kind);
        for p in paths {
            event = event.add_path(PathBuf::from(p));
        }
        event
    }

    fn names(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    const WRITE: EventKind = EventKind::Modify(ModifyKind::Data(DataChange::Any));

    #[test]
    fn only_the_config_and_its_links_are_relevant() {
        let names = names(&["..data", "cfg.toml"]);
        let relevant = [(Path::new("/etc/h"), names)];
        for (kind, paths) in [
            (WRITE, vec!["/etc/h/cfg.toml"]),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                vec!["/etc/h/cfg.toml"],
            ),
            (EventKind::Create(CreateKind::File), vec!["/etc/h/cfg.toml"]),
            (EventKind::Remove(RemoveKind::File), vec!["/etc/h/cfg.toml"]),
            // An atomic rename: the temporary name, then the config's.
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                vec!["/etc/h/cfg.toml.tmp", "/etc/h/cfg.toml"],
            ),
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                vec!["/etc/h/..data"],
            ),
            // Queue overflow: unknown, so reload.
            (EventKind::Other, vec![]),
        ] {
            assert!(
                is_relevant(&event(kind, &paths), &relevant),
                "{kind:?} {paths:?}"
            );
        }
    }

    #[test]
    fn other_entries_and_reads_are_ignored() {
        let names = names(&["..data", "cfg.toml"]);
        let relevant = [(Path::new("/etc/h"), names)];
        for (kind, paths) in [
            // The process's own log file, next to its config.
            (WRITE, vec!["/etc/h/err.log"]),
            (EventKind::Create(CreateKind::File), vec!["/etc/h/err.log"]),
            // Kubernetes' new timestamped directory and the temporary link, before the swap.
            (
                EventKind::Create(CreateKind::Folder),
                vec!["/etc/h/..2026_11_21_20_05_00.000000002"],
            ),
            (
                EventKind::Create(CreateKind::Any),
                vec!["/etc/h/..data_tmp"],
            ),
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                vec!["/etc/h/cfg.toml.tmp"],
            ),
            // An editor's swap file; a name that only contains the config's.
            (WRITE, vec!["/etc/h/.cfg.toml.swp"]),
            (WRITE, vec!["/etc/h/cfg.toml~"]),
            // The same name in a directory not watched for it.
            (WRITE, vec!["/etc/other/cfg.toml"]),
            // Reads of the config itself.
            (
                EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any)),
                vec!["/etc/h/cfg.toml"],
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                vec!["/etc/h/cfg.toml"],
            ),
        ] {
            assert!(
                !is_relevant(&event(kind, &paths), &relevant),
                "{kind:?} {paths:?}"
            );
        }
    }

    #[test]
    fn symlinks_add_the_entries_they_lead_through() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A plain file: its name and ..data.
        std::fs::write(d.join("plain.toml"), "").unwrap();
        assert_eq!(
            relevant_names(&d.join("plain.toml"), d),
            names(&["..data", "plain.toml"])
        );
        // The Kubernetes layout.
        std::fs::create_dir(d.join("..2026_01")).unwrap();
        std::fs::write(d.join("..2026_01/config.toml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_01", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.toml", d.join("config.toml")).unwrap();
        assert_eq!(
            relevant_names(&d.join("config.toml"), d),
            names(&["..data", "config.toml"])
        );
        // A chain within the directory, relative then absolute.
        std::fs::write(d.join("v2.toml"), "").unwrap();
        std::os::unix::fs::symlink("v2.toml", d.join("current.toml")).unwrap();
        std::os::unix::fs::symlink(d.join("current.toml"), d.join("cfg.toml")).unwrap();
        assert_eq!(
            relevant_names(&d.join("cfg.toml"), d),
            names(&["..data", "cfg.toml", "current.toml", "v2.toml"])
        );
        // A target outside the directory: not watched, nothing to add.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("x.toml"), "").unwrap();
        std::os::unix::fs::symlink(other.path().join("x.toml"), d.join("out.toml")).unwrap();
        assert_eq!(
            relevant_names(&d.join("out.toml"), d),
            names(&["..data", "out.toml"])
        );
        // A bare file name watches ".".
        assert_eq!(directory_of(Path::new("cfg.toml")), Path::new("."));
    }

    #[tokio::test]
    async fn a_relative_path_is_watched() {
        let dir = tempfile::tempdir().unwrap();
        // The temporary directory, named relative to the current one.
        let cwd = std::env::current_dir().unwrap();
        let mut relative = PathBuf::new();
        for _ in cwd.components().skip(1) {
            relative.push("..");
        }
        relative.push(dir.path().strip_prefix("/").unwrap());
        let path = relative.join("cfg.toml");
        assert!(path.is_relative());
        std::fs::write(&path, "a").unwrap();
        let changed = Arc::new(tokio::sync::Notify::new());
        let counters = WatchCounters::default();
        let watched = std::slice::from_ref(&path);
        let _watcher = watch(watched, changed.clone(), counters.clone()).unwrap();
        std::fs::write(relative.join("other.log"), "x").unwrap();
        std::fs::write(&path, "b").unwrap();
        let seen = tokio::time::timeout(std::time::Duration::from_secs(20), changed.notified());
        seen.await.expect("the change of the config was not seen");
        // The other file's events came first, and were ignored.
        assert!(counters.ignored.get() >= 1);
        assert!(counters.relevant.get() >= 1);
        let (dir, file) = &watched_files(&[path])[0];
        assert!(dir.is_absolute() && file.is_absolute());
    }
}
