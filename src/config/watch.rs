//! Watches the directory that holds the config file, so that every way a file gets
//! replaced is seen: in-place writes, atomic renames (editors, `mv`), and Kubernetes'
//! ConfigMap volumes, where `config.toml → ..data/config.toml` and `..data` is a symlink
//! swapped to a new timestamped directory. Watching the file itself would miss the last two.

use std::path::Path;
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};

/// Keeps the watch alive; dropping it stops watching.
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigWatcher")
    }
}

/// Calls `changed.notify_one()` whenever something in `path`'s directory is created,
/// written, renamed or removed. Reads (including hoptrace's own) are ignored.
pub fn watch(path: &Path, changed: Arc<tokio::sync::Notify>) -> notify::Result<ConfigWatcher> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        let Ok(event) = event else { return };
        let relevant = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        if relevant {
            changed.notify_one();
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(ConfigWatcher { _watcher: watcher })
}
