//! File descriptors: every open connection holds one, so `max_connections` is only a real cap
//! if the process may open that many plus what it needs besides (database connections, the
//! SQLite files, the listener, the hooks watcher, logs). Many systems start processes with a
//! soft `RLIMIT_NOFILE` of 1,024 and a far higher hard limit; the soft limit is raised to the
//! hard one at start-up, and a `max_connections` that still cannot fit stops the start with a
//! message instead of failing later with `accept` errors (EMFILE).

/// Descriptors kept for everything but client connections and the database pool: stdio, the
/// listener, the runtime's epoll and wake-up handles, the hooks watcher, files read by hooks
/// and the CLI.
pub const RESERVED_FDS: u64 = 64;

/// The process's `RLIMIT_NOFILE`, before and after raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimits {
    /// Soft limit found at start.
    pub soft_before: u64,
    /// Soft limit now (the hard limit when raising worked).
    pub soft: u64,
    /// Hard limit (only root may raise it; `LimitNOFILE=` in a systemd unit, `ulimit -Hn`).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and reports both.
pub fn raise_nofile() -> std::io::Result<FdLimits> {
    let (soft_before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let soft = rlimit::increase_nofile_limit(hard)?;
    Ok(FdLimits {
        soft_before,
        soft,
        hard,
    })
}

/// Descriptors a server with these settings may need at once: one per connection, up to three
/// per pooled database connection (SQLite's database, WAL and shared-memory files), and
/// [`RESERVED_FDS`].
pub fn required(max_connections: usize, pool_size: usize) -> u64 {
    let conns = u64::try_from(max_connections).unwrap_or(u64::MAX);
    let pool = u64::try_from(pool_size).unwrap_or(u64::MAX);
    conns
        .saturating_add(pool.saturating_mul(3))
        .saturating_add(RESERVED_FDS)
}

/// Whether `max_connections` fits under the (raised) soft limit; the error says what to change.
pub fn check(limits: &FdLimits, max_connections: usize, pool_size: usize) -> Result<(), String> {
    let needed = required(max_connections, pool_size);
    if needed <= limits.soft {
        return Ok(());
    }
    let fits = limits
        .soft
        .saturating_sub(required(0, pool_size))
        .to_string();
    Err(format!(
        "key `max_connections`: {max_connections} connections need about {needed} file \
         descriptors (with pool_size = {pool_size} and {RESERVED_FDS} in reserve), but this \
         process may open only {} (soft limit, hard limit {}). Lower `max_connections` to at \
         most {fits}, or raise the hard limit (`LimitNOFILE=` in the systemd unit, `ulimit -Hn`).",
        limits.soft, limits.hard
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_with_headroom_or_says_what_to_change() {
        let l = FdLimits {
            soft_before: 1024,
            soft: 4096,
            hard: 4096,
        };
        assert!(check(&l, 4000, 8).is_ok());
        let e = check(&l, 10_000, 16).unwrap_err();
        assert!(e.contains("`max_connections`"), "{e}");
        assert!(e.contains("4096"), "{e}");
        assert!(e.contains(&(4096 - 48 - RESERVED_FDS).to_string()), "{e}");
        assert!(check(&l, 4096, 16).is_err(), "no headroom left");
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let l = raise_nofile().unwrap();
        assert!(l.soft >= l.soft_before);
        assert!(l.soft <= l.hard);
    }
}
