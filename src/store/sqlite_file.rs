//! The embedded database as files on disk: their modes and the online backup.
//!
//! The SQLite file holds HA1s, which are password equivalents, so nobody but the service's
//! user may read it. The data directory is created 0700 and the database file 0600 *before*
//! SQLite opens it: SQLite creates the `-wal` and `-shm` files with the main file's mode
//! (its unix VFS copies it and `fchmod`s a new file to match), so they are 0600 too. A file
//! of provisio's own found looser is tightened (logged); a looser directory is only warned
//! about, since an operator may point `data_dir` at a directory shared with other things.
//! docs/deploy.md states both rules.

use anyhow::{Context as _, bail};
use deadpool_sqlite::rusqlite::{Connection, OpenFlags};
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Mode of the data directory: only the service's user may list or enter it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the database file, its `-wal`, `-shm` and `-journal`, and of a backup.
pub const FILE_MODE: u32 = 0o600;

/// Suffixes of the files SQLite keeps beside the database (WAL, shared-memory index, rollback
/// journal): they hold the same pages, so they get the same mode.
const COMPANIONS: &[&str] = &["-wal", "-shm", "-journal"];

/// Creates `dir` (and missing parents) 0700; warns when an existing one is open to others.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    create_dirs(dir)?;
    if let Some(mode) = loose_mode(dir) {
        tracing::warn!(
            dir = %dir.display(),
            mode = %format!("{mode:04o}"),
            "the data directory is open to other users; the database in it holds password \
             equivalents (chmod 700 it)"
        );
    }
    Ok(())
}

/// Creates `dir` and its missing parents 0700 (existing ones are left as they are).
fn create_dirs(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Makes the database file at `path` private before SQLite opens it: missing directories
/// created 0700 (the data directory's own check is [`create_private_dir`]'s), the file
/// created 0600 when missing, and the file and its companions tightened to 0600 when an
/// earlier version (or a copy) left them readable by others.
pub fn prepare(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
        .open(path)
        .with_context(|| format!("cannot create SQLite database {}", path.display()))?;
    for file in std::iter::once(path.to_path_buf()).chain(companions(path)) {
        tighten(&file);
    }
    Ok(())
}

/// The companion files of the database at `path`.
fn companions(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    COMPANIONS.iter().map(move |suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Sets an existing file that others may read back to 0600 (a missing one is fine).
fn tighten(file: &Path) {
    let Some(mode) = loose_mode(file) else {
        return;
    };
    match set_mode(file, FILE_MODE) {
        Ok(()) => tracing::warn!(
            file = %file.display(),
            was = %format!("{mode:04o}"),
            "database file was readable by other users; tightened to 0600"
        ),
        Err(e) => tracing::warn!(
            file = %file.display(),
            mode = %format!("{mode:04o}"),
            error = %e,
            "database file is readable by other users and cannot be tightened (chmod 600 it)"
        ),
    }
}

/// The permission bits of `path` when group or others have any of them; `None` when private,
/// missing, or on a platform without Unix modes.
fn loose_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// `chmod` on Unix; nothing elsewhere.
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// What [`backup`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Size of the copy in bytes.
    pub bytes: u64,
    /// True when the running user does not own the source database: SQLite may have left
    /// `-wal`/`-shm` files owned by that user, which the service then cannot open.
    pub foreign_owner: bool,
}

/// Writes a consistent copy of the SQLite database at `source` to `dest` while other
/// connections (a running server) keep reading and writing it.
///
/// `VACUUM INTO` reads one snapshot in a read transaction, which in WAL mode blocks no writer,
/// and writes a compact database. The copy goes to a 0600 temporary file beside `dest`, is
/// checked with `PRAGMA quick_check`, flushed, and only then takes `dest`'s name, so a failed
/// backup never leaves a half-written file under that name. Without `force` an existing
/// `dest` is refused, including one that appears while the copy is made (a hard link cannot
/// replace a file).
pub fn backup(source: &Path, dest: &Path, force: bool) -> anyhow::Result<BackupReport> {
    let source_meta = std::fs::metadata(source)
        .with_context(|| format!("no SQLite database at {}", source.display()))?;
    if !force && dest.symlink_metadata().is_ok() {
        bail!("{} exists; pass --force to replace it", dest.display());
    }
    if let (Ok(a), Ok(b)) = (source.canonicalize(), dest.canonicalize())
        && a == b
    {
        bail!("the backup cannot replace the database itself");
    }
    let name = dest
        .file_name()
        .with_context(|| format!("{} is not a file name", dest.display()))?;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", crate::secret::new_hex(6)));
    let temp = TempFile(dir.join(temp_name));

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let file = options
        .open(&temp.0)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let foreign_owner = owner(&source_meta) != file.metadata().ok().as_ref().and_then(owner);

    let db = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open SQLite database {}", source.display()))?;
    db.busy_timeout(Duration::from_secs(10))?;
    let temp_str = temp
        .0
        .to_str()
        .context("the backup path is not valid UTF-8")?;
    db.execute("VACUUM INTO ?1", [temp_str])
        .with_context(|| format!("copying {}", source.display()))?;
    drop(db);

    let check: String = Connection::open_with_flags(&temp.0, OpenFlags::SQLITE_OPEN_READ_ONLY)?
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .context("checking the copy")?;
    if check != "ok" {
        bail!("the copy failed its integrity check: {check}");
    }
    file.sync_all().context("flushing the copy")?;
    set_mode(&temp.0, FILE_MODE)?;
    let bytes = file.metadata()?.len();
    drop(file);

    if force {
        std::fs::rename(&temp.0, dest)
            .with_context(|| format!("cannot write {}", dest.display()))?;
    } else {
        match std::fs::hard_link(&temp.0, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                bail!("{} exists; pass --force to replace it", dest.display());
            }
            // A file system without hard links: the existence check above has to do.
            Err(_) => std::fs::rename(&temp.0, dest)
                .with_context(|| format!("cannot write {}", dest.display()))?,
        }
    }
    drop(temp);
    // The new directory entry survives a crash only once the directory itself is flushed.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(BackupReport {
        bytes,
        foreign_owner,
    })
}

/// The owning user id of a file (Unix only).
fn owner(meta: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        Some(std::os::unix::fs::MetadataExt::uid(meta))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// A temporary file removed when dropped (a no-op once it has been renamed away).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn prepare_creates_private_dir_and_file_and_tightens_companions() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("a/b/provisio.sqlite3");
        let wal = root.path().join("a/b/provisio.sqlite3-wal");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        std::fs::set_permissions(db.parent().unwrap(), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&wal), 0o600);

        let fresh = root.path().join("x/y/z.sqlite3");
        prepare(&fresh).unwrap();
        assert_eq!(mode(fresh.parent().unwrap()), 0o700);
        assert_eq!(mode(&root.path().join("x")), 0o700);
        assert_eq!(mode(&fresh), 0o600);
    }

    #[test]
    fn backup_refuses_existing_file_and_replaces_with_force() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("src.sqlite3");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (42);")
            .unwrap();
        let dest = root.path().join("copy.sqlite3");
        std::fs::write(&dest, b"keep me").unwrap();
        let err = backup(&db, &dest, false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"keep me");
        backup(&db, &dest, true).unwrap();
        assert_eq!(mode(&dest), 0o600);
        let copy = Connection::open(&dest).unwrap();
        let x: i64 = copy.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 42);
        // Nothing temporary is left beside the copy.
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
        assert!(backup(&db, &db, true).is_err());
        assert!(backup(&root.path().join("missing"), &root.path().join("m2"), false).is_err());
    }
}
