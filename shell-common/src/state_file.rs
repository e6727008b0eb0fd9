//! The state file's IO (`--state-file`, `--state-save-every`): the engine decides what and
//! when ([`lainlet_core::Engine::poll_state_save`]); this module only moves bytes.
//!
//! ```text
//! start:     load(engine, path)        read the file → handle_saved_state (one log line)
//! running:   keep(shared, rt)          at poll_state_save_timeout(): save if due
//! shutdown:  save_now(shared)          (service::drain) the last state, if changed
//! ```
//!
//! A write goes to `<path>.tmp`, is fsynced, renamed over `<path>`, and the directory is
//! fsynced: a crash leaves the old file or the new one, never half of one. Every problem (a
//! missing directory that cannot be made, a full or read-only disk, a corrupt file) is one log
//! line and a counted metric; none stops lainlet.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lainlet_core::{Engine, SavedState, StateIoError};
use tracing::{debug, info, warn};

use crate::socket::Runtime;
use crate::startup::human_bytes;
use crate::sync::{first, Either};
use crate::Shared;

/// Loads the state file at `path` into a fresh `engine`, logging what happened (one line).
/// A missing file is no problem (the first start); anything else not usable is counted.
pub fn load(engine: &mut Engine, path: &Path) {
    let start = Instant::now();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            info!(
                "no state file at {} yet: reading etcd in full",
                path.display()
            );
            return;
        }
        Err(e) => {
            warn!(
                "cannot read the state file {}: {e}; reading etcd in full",
                path.display()
            );
            engine.handle_state_file_error(StateIoError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            });
            return;
        }
    };
    match engine.handle_saved_state(Instant::now(), &bytes) {
        Ok(r) => {
            info!(
                "loaded the state file {} ({}, {} keys, {} history entries) at etcd {} \
                 revision {} in {:.1?}: served as stale until etcd proves it continues that \
                 history",
                path.display(),
                human_bytes(bytes.len()),
                r.keys,
                r.history,
                r.store,
                r.revision,
                start.elapsed()
            );
            let after = crate::startup::mark_start().elapsed();
            info!("serving: ready {after:.1?} after start (the saved state)");
        }
        Err(e) => warn!(
            "ignoring the state file {}: {e}; reading etcd in full",
            path.display()
        ),
    }
}

/// Saves the state periodically when it changed, until shutdown (the last save is
/// [`save_now`]'s, from [`crate::service::drain`]).
pub async fn keep<R: Runtime>(shared: std::sync::Arc<Shared>, rt: R) {
    let Some(path) = shared.state_file().map(Path::to_path_buf) else {
        return;
    };
    let Some(every) = shared.with_engine(|e| e.state_save_every()) else {
        return;
    };
    loop {
        let due = shared
            .with_engine(|e| e.poll_state_save_timeout())
            .unwrap_or_else(|| Instant::now() + every);
        match first(rt.sleep_until(due), shared.shut_down()).await {
            Either::Left(()) => {}
            Either::Right(()) => return,
        }
        save(&shared, &path, false);
    }
}

/// Saves the state now if it changed since the last save (at shutdown).
pub fn save_now(shared: &Shared) {
    if let Some(path) = shared.state_file().map(Path::to_path_buf) {
        save(shared, &path, true);
    }
}

fn save(shared: &Shared, path: &Path, shutdown: bool) {
    let Some(state) = shared.with_engine(|e| e.poll_state_save(Instant::now(), shutdown)) else {
        return;
    };
    let start = Instant::now();
    let result = write(path, &state).map_err(|e| StateIoError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    });
    match &result {
        Ok(n) => {
            let line = format!(
                "saved the state at etcd revision {} ({} keys, {}) to {} in {:.1?}",
                state.revision(),
                state.key_count(),
                human_bytes(*n),
                path.display(),
                start.elapsed()
            );
            match shutdown {
                true => info!("{line}"),
                false => debug!("{line}"),
            }
        }
        Err(e) => warn!("cannot save the state file: {e} (serving goes on; tried again later)"),
    }
    let now = Instant::now();
    shared.with_engine(|e| e.handle_state_saved(now, result.map(|_| ())));
}

/// Writes `state` atomically to `path`; returns the bytes written.
fn write(path: &Path, state: &SavedState) -> std::io::Result<usize> {
    let bytes = state.encode();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_path(path);
    let written = (|| {
        // The file holds the cluster's data: readable by lainlet's user only.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(bytes.len())
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_writes_the_whole_file_readable_by_its_owner_only_and_leaves_no_temporary() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("lainlet-state-test-{}", std::process::id()));
        let path = dir.join("sub").join("state");
        let mut engine = Engine::new(lainlet_core::EngineConfig {
            etcd_api: lainlet_core::EtcdApi::Only(lainlet_core::Store::V3),
            state_save_every: Some(std::time::Duration::from_secs(1)),
            ..lainlet_core::EngineConfig::default()
        });
        let now = Instant::now();
        engine.handle_snapshot(
            now,
            lainlet_core::Snapshot {
                revision: 7,
                kvs: vec![lainlet_core::KeyValue {
                    key: "/lain/config/vip".into(),
                    value: b"1.2.3.4".to_vec(),
                    mod_revision: 5,
                }],
            },
        );
        let state = engine.poll_state_save(now, true).expect("a state to save");
        let n = write(&path, &state).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), n);
        assert_eq!(SavedState::decode(&bytes).unwrap(), state);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!temp_path(&path).exists());
        // A directory where the file should be: an error, not a panic.
        assert!(write(&dir.join("sub"), &state).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_temporary_file_sits_beside_the_state_file() {
        assert_eq!(
            temp_path(Path::new("/var/lib/lainlet/state")),
            Path::new("/var/lib/lainlet/state.tmp")
        );
    }
}
