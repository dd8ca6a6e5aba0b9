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
//! The default is an eighth of the memory the process may use (the machine's, or when lower
//! the smallest memory limit of the process's own cgroup and its ancestors, read from
//! `/proc/self/cgroup`: cgroup v2's `0::` line, or v1's memory controller), at least
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
    // A container's (or a systemd unit's) limit is what the process may really use.
    let limit = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|own| {
            let texts: Vec<String> = limit_files(&own)
                .iter()
                .filter_map(|path| std::fs::read_to_string(path).ok())
                .collect();
            smallest_limit(texts.iter().map(String::as_str))
        });
    default_for(usable(total, limit))
}

/// Where cgroup v2 is mounted, and v1's memory controller.
const V2_ROOT: &str = "/sys/fs/cgroup";
const V1_MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";

/// The memory-limit files of the cgroup named in `proc_self_cgroup` (the text of
/// `/proc/self/cgroup`) and of each of its ancestors, innermost first: any of them may hold
/// the limit that binds (a container's limit often sits on a parent of the process's own
/// group). v2's `0::/path` gives `memory.max` files; v1's line whose controllers include
/// `memory` gives `memory.limit_in_bytes` files. Files that do not exist are skipped by the
/// reader.
fn limit_files(proc_self_cgroup: &str) -> Vec<String> {
    let mut files = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            files.extend(with_ancestors(V2_ROOT, path, "memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            files.extend(with_ancestors(
                V1_MEMORY_ROOT,
                path,
                "memory.limit_in_bytes",
            ));
        }
    }
    files
}

/// The binding limit among the texts of a cgroup's and its ancestors' limit files: the
/// smallest (`None` if none sets one).
fn smallest_limit<'a>(texts: impl Iterator<Item = &'a str>) -> Option<u64> {
    texts.filter_map(cgroup_limit).min()
}

/// `root/path/file`, then the same file in each parent of `path` up to `root/file`.
fn with_ancestors(root: &str, path: &str, file: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    (0..=parts.len())
        .rev()
        .map(|n| {
            let mut dir = root.to_owned();
            for part in &parts[..n] {
                dir.push('/');
                dir.push_str(part);
            }
            format!("{dir}/{file}")
        })
        .collect()
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
    fn finds_the_own_cgroup_v2_and_its_ancestors() {
        let own = "0::/system.slice/strata.service\n";
        assert_eq!(
            limit_files(own),
            vec![
                "/sys/fs/cgroup/system.slice/strata.service/memory.max",
                "/sys/fs/cgroup/system.slice/memory.max",
                "/sys/fs/cgroup/memory.max",
            ]
        );
        // In a container with its own cgroup namespace the group is the root.
        assert_eq!(limit_files("0::/\n"), vec!["/sys/fs/cgroup/memory.max"]);
    }

    #[test]
    fn finds_the_own_cgroup_v1_memory_controller() {
        let own = "12:pids:/docker/abc\n\
                   9:memory:/docker/abc\n\
                   4:cpu,cpuacct:/docker/abc\n\
                   1:name=systemd:/docker/abc\n";
        assert_eq!(
            limit_files(own),
            vec![
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/docker/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            ]
        );
        // A combined controller list names memory too; other lines and junk are ignored.
        let own = "5:cpuset,memory:/a\ngarbage\n3:cpu:/b\n";
        assert_eq!(
            limit_files(own),
            vec![
                "/sys/fs/cgroup/memory/a/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            ]
        );
        assert!(limit_files("").is_empty());
    }

    #[test]
    fn the_smallest_limit_of_the_group_and_its_ancestors_binds() {
        // The process's own group is unlimited; its parent (the container) is not.
        let texts = ["max\n", "2147483648\n", "8589934592\n"];
        assert_eq!(smallest_limit(texts.into_iter()), Some(2 * GIB));
        assert_eq!(smallest_limit(["max\n", "max\n"].into_iter()), None);
        assert_eq!(smallest_limit(std::iter::empty()), None);
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
