//! The data dir and the files that hold secrets: every file created 0600 and every directory
//! 0700 (the project forbids `unsafe`, so there is no umask: modes are set per file), a data dir
//! open to other users refused, the one-engine lock and who holds it, and the access code.
//! Used by the engine, the connectors that create files, the config and the local process control.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write a file only the owner can read (secrets).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::config(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Create `path` empty with mode 0600 if it does not exist, so that what is then written into it
/// (a SQLite database, and its journals, which take the database's mode) is the owner's alone.
pub fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::config(format!("cannot create {}: {e}", path.display()))),
    }
}

/// The access code of the engine in `data_dir`, generated on first use.
pub fn access_code(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("access_code");
    if let Ok(code) = std::fs::read_to_string(&path) {
        let code = code.trim().to_string();
        if !code.is_empty() {
            return Ok(code);
        }
    }
    create_dir_private(data_dir)?;
    let code = uuid::Uuid::new_v4().to_string();
    write_private(&path, &code)?;
    Ok(code)
}

/// Refuse a data dir that other users may read or enter: the store in it holds connection
/// passwords and tokens. Its mode is the user's to change, not tap's.
pub fn require_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .map_err(|e| Error::config(format!("cannot read data dir {}: {e}", dir.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::config(format!(
            "data dir {} is open to other users (mode {:o}), and its store holds connection passwords and \
             tokens: run `chmod 700 {}` (tap changes the mode only of a directory it creates)",
            dir.display(),
            mode & 0o777,
            dir.display()
        )));
    }
    Ok(())
}

/// Files of the data dir from before modes were enforced: made the owner's alone. One that
/// cannot be (another user's file in the data dir) stops the start, naming it.
pub fn tighten_files(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::config(format!("cannot read data dir {}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let path = e.path();
        let mode = if path.is_dir() { 0o700 } else { 0o600 };
        if path.is_dir() && path.file_name().is_some_and(|n| n == "lookup") {
            tighten_files(&path)?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            Error::config(format!("cannot make {} private to its owner (mode {mode:o}): {e}", path.display()))
        })?;
    }
    Ok(())
}

/// Hold the data dir's lock for the engine's life: a second engine on the same data dir is
/// refused, naming the process that holds it.
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("engine.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::config(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = lock_holder(dir).map(|p| format!(" (pid {p})")).unwrap_or_default();
            Err(Error::config(format!(
                "another engine{holder} runs on data dir {}: one engine per data dir (`tap engine stop` stops it, \
                 or give this one another --data-dir)",
                dir.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::config(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// The process holding the data dir's lock, from the kernel's list of locks (`/proc/locks`):
/// the only pid `stop` signals, so a stale `engine.json` can never name another process.
pub fn lock_holder(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.join("engine.lock")).ok()?;
    let dev = meta.dev();
    let (major, minor) =
        (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff), ((dev >> 12) & 0xffff_ff00) | (dev & 0xff));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        // "1: FLOCK  ADVISORY  WRITE 2296 00:2a:1234 0 EOF"
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str())).then(|| f.get(4)?.parse().ok())?
    })
}

/// Create `dir` (and missing parents) as the owner's alone (0700); an existing one is left as it is.
pub fn create_dir_private(dir: &Path) -> Result<()> {
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::config(format!("cannot create directory {}: {e}", dir.display())))?;
    }
    Ok(())
}

pub fn state_file(data_dir: &Path) -> PathBuf {
    data_dir.join("engine.json")
}
