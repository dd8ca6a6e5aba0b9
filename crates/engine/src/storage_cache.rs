//! The default size of the storage engine's page cache (`[engine] storage_cache_bytes`).
//!
//! A search reads its hits' records from storage (collections keep only a lean part of each
//! record resident). With many tenants those records' pages are spread over the whole file, so
//! a fixed small cache makes nearly every hit of a tenant not searched a moment ago a read from
//! the file: with 1,000 tenants of 1,000 records (a file of about 1.3 GB) and a 64 MiB cache,
//! a search of a random tenant took 2.9 times as long as one of a single tenant, and 1.85
//! times once the cache held the file (docs/benchmarks.md). Databases size this cache from
//! the machine's memory for that reason (WiredTiger takes half of it less 1 GB). The cache is
//! a bound, not an allocation: it holds only pages read or written, so a small database never
//! fills it.
//!
//! The default is an eighth of the memory the process may use (the machine's, or the limit of
//! the cgroup mounted at `/sys/fs/cgroup`, a container's own, when lower), at least
//! [`MIN_DEFAULT`] and at most [`MAX_DEFAULT`]; an eighth leaves most of it to the tenants'
//! indexes (`[engine.residency]`), which the process holds on top of this cache. Where the
//! memory cannot be read (not Linux, or `/proc` unreadable) it is [`MIN_DEFAULT`], the fixed
//! default before.

/// The default when the machine's memory is unknown or small.
pub(crate) const MIN_DEFAULT: u64 = strata_store::DEFAULT_CACHE_BYTES as u64;
/// The largest default: beyond it an operator should choose the split between this cache and
/// the residency budget.
pub(crate) const MAX_DEFAULT: u64 = 4 << 30;
/// The default's share of the memory: one part in this many.
const SHARE: u64 = 8;

/// The default page cache for the memory this process may use, as read now.
pub(crate) fn default_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let total = meminfo.as_deref().and_then(mem_total);
    // cgroup v2, then v1: a container's limit is what the process may really use.
    let limit = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .as_deref()
    .and_then(cgroup_limit);
    default_for(usable(total, limit))
}

/// The memory the process may use: the smaller of the machine's and the container's limit.
fn usable(total: Option<u64>, limit: Option<u64>) -> Option<u64> {
    match (total, limit) {
        (Some(t), Some(l)) => Some(t.min(l)),
        (t, l) => t.or(l),
    }
}

/// The default for `memory` usable bytes (`None`: unknown).
fn default_for(memory: Option<u64>) -> u64 {
    memory.map_or(MIN_DEFAULT, |m| (m / SHARE).clamp(MIN_DEFAULT, MAX_DEFAULT))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// A cgroup's memory limit in bytes; `None` for none (`max`, or v1's huge "unlimited" value,
/// which is above any machine's memory and so never the smaller one anyway).
fn cgroup_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn reads_mem_total_in_bytes() {
        let meminfo = "MemTotal:       24522600 kB\nMemFree:         3000000 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_522_600 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
        assert_eq!(
            mem_total("MemTotal: 5 MB\n"),
            None,
            "an unknown unit is not guessed"
        );
    }

    #[test]
    fn a_cgroup_without_a_limit_says_none() {
        assert_eq!(cgroup_limit("max\n"), None);
        assert_eq!(cgroup_limit("2147483648\n"), Some(2 * GIB));
    }

    #[test]
    fn the_container_limit_wins_when_lower() {
        assert_eq!(usable(Some(32 * GIB), Some(4 * GIB)), Some(4 * GIB));
        // cgroup v1's "unlimited" is far above the machine.
        assert_eq!(usable(Some(32 * GIB), Some(u64::MAX / 2)), Some(32 * GIB));
        assert_eq!(usable(None, Some(4 * GIB)), Some(4 * GIB));
        assert_eq!(usable(None, None), None);
    }

    #[test]
    fn the_default_is_an_eighth_within_its_bounds() {
        assert_eq!(default_for(None), MIN_DEFAULT);
        assert_eq!(
            default_for(Some(256 << 20)),
            MIN_DEFAULT,
            "small machines keep 64 MiB"
        );
        assert_eq!(default_for(Some(16 * GIB)), 2 * GIB);
        assert_eq!(default_for(Some(256 * GIB)), MAX_DEFAULT);
        // The default always passes validation.
        let d = default_bytes();
        assert!((MIN_DEFAULT..=MAX_DEFAULT).contains(&d), "{d}");
    }
}
