//! The graph's rows: a growable array of cache lines that does not copy itself to grow.
//!
//! A `Vec<Line>` grows by allocating a new buffer and copying into it: the system allocator
//! cannot grow a block in place above 16-byte alignment, and a line is 64-byte aligned. So the
//! insert that crossed a capacity boundary of a 100,000 × 384 graph (the first insert after
//! every load, which sizes the rows exactly) copied 173 MB and faulted in as many fresh pages
//! under the tenant's index lock: a write of 100–360 ms, and the graph's memory held twice for
//! that moment. Large arrays here are anonymous mappings (page-aligned, so line-aligned), which
//! Linux grows with `mremap`: the pages move to a larger range, nothing is copied. Small arrays
//! stay on the heap, where a copy is cheap and a mapping per small graph would spend the
//! process's limited count of mappings.
//!
//! Not asked for: transparent huge pages (`MADV_HUGEPAGE`). Measured on these mappings they
//! gave 8–30 % more searches per CPU-second at 100,000 × 384 (fewer TLB misses), but under
//! the common kernel setting `defrag = madvise` a huge-page fault may compact memory first,
//! and loading a 200,000-record tenant took 2.1–2.2 s instead of 0.4–0.6 s, mostly in the
//! kernel (docs/benchmarks.md). Where THP is `always`, the kernel uses them here anyway.
//!
//! Elsewhere than on Linux a mapping grows by a copy into a new one, as a `Vec` does.
//!
//! A graph loaded from a file can take its rows as a private mapping of the file itself
//! (`hnsw_map.rs`): no copy, no zeroing; a page becomes the graph's own only when an insert
//! writes to it. Growing such rows moves the file's pages and the anonymous pages after them
//! into a larger anonymous mapping (two `mremap` moves): a file mapping cannot be extended
//! in place, since its extension would map the file past its end.
//!
//! Invariant: the lines between `len` and `cap` are zero (every allocation is zeroed and the
//! array never shrinks), so growing the length is only a change of `len`.

use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::ptr::NonNull;

use crate::hnsw_graph::Line;

/// Arrays of at least this many bytes are mappings; below, heap blocks.
pub(crate) const MAP_BYTES: usize = 1 << 20;

pub(crate) struct Rows {
    ptr: NonNull<Line>,
    len: usize,
    cap: usize,
    /// Whether `ptr` is a mapping of `cap` lines (else a heap block, or nothing when `cap` is 0).
    mapped: bool,
    /// How many lines at the start of the mapping map a file (a whole number of pages; 0 for
    /// none): they cannot move with the anonymous pages after them in one `mremap`.
    file_lines: usize,
}

// SAFETY: `Rows` owns its buffer exclusively, as a `Vec<Line>` does; `Line` is plain data.
unsafe impl Send for Rows {}
// SAFETY: shared access only reads (`as_ptr`); writes need `&mut self`.
unsafe impl Sync for Rows {}

impl Rows {
    pub fn new() -> Self {
        Rows {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
            mapped: false,
            file_lines: 0,
        }
    }

    /// Takes the `lines` lines at byte `at` of the file mapping `map` (of `map_bytes` bytes,
    /// whole pages) as the rows; the pages before `at` are unmapped. The lines must reach the
    /// end of the file, so the rest of the last page, past the file's end, is zero.
    ///
    /// # Safety
    ///
    /// `map` is a private, writable mapping of `map_bytes` bytes that nothing else refers to
    /// from now on; `at` is a multiple of the page size; the file ends within the last page
    /// and after byte `at + lines * 64`, which it does not exceed by a page.
    #[cfg(all(target_os = "linux", target_endian = "little"))]
    pub(crate) unsafe fn adopt_file_pages(
        map: NonNull<u8>,
        map_bytes: usize,
        at: usize,
        lines: usize,
    ) -> Self {
        debug_assert!(at.is_multiple_of(page_size()) && map_bytes.is_multiple_of(page_size()));
        if at > 0 {
            // SAFETY: the first `at` bytes are whole pages of `map`, no longer referred to.
            let rc = unsafe { libc::munmap(map.as_ptr().cast(), at) };
            debug_assert_eq!(rc, 0, "munmap of a graph file's head failed");
        }
        let cap = (map_bytes - at) / size_of::<Line>();
        debug_assert!(lines <= cap && (cap - lines) * size_of::<Line>() < page_size());
        Rows {
            // SAFETY: `at` < `map_bytes`, within the mapping, and page-aligned, so line-aligned.
            ptr: unsafe { NonNull::new_unchecked(map.as_ptr().add(at).cast()) },
            len: lines,
            cap,
            mapped: true,
            file_lines: cap,
        }
    }

    /// Whether some of the lines are pages of a file (see [`Rows::adopt_file_pages`]).
    pub fn maps_a_file(&self) -> bool {
        self.file_lines > 0
    }

    /// The lines in use as bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the first `len` lines are initialised plain data, owned exclusively.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast(), self.len * size_of::<Line>())
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes the array keeps in memory: a mapping's pages up to its length (the kernel backs
    /// a page only once it is written, and the array never shrinks); a heap block whole.
    pub fn resident_bytes(&self) -> usize {
        let bytes = self.len * size_of::<Line>();
        if self.mapped {
            bytes.next_multiple_of(page_size())
        } else {
            self.cap * size_of::<Line>()
        }
    }

    pub fn as_ptr(&self) -> *const Line {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut Line {
        self.ptr.as_ptr()
    }

    /// Makes room for `additional` more lines.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self
            .len
            .checked_add(additional)
            .expect("row count overflow");
        if needed > self.cap {
            self.grow(needed.max(self.cap.saturating_mul(2)).max(16));
        }
    }

    /// Grows the array to `new_len` lines (never shrinks it); the new lines are zero.
    pub fn grow_zeroed(&mut self, new_len: usize) {
        if new_len > self.len {
            self.reserve(new_len - self.len);
            self.len = new_len;
        }
    }

    /// Reallocates to hold at least `cap` lines, keeping the first `len`.
    fn grow(&mut self, cap: usize) {
        let bytes = cap
            .checked_mul(size_of::<Line>())
            .expect("row bytes overflow");
        if bytes < MAP_BYTES {
            let new = heap_zeroed(cap);
            self.move_into(new, cap, false);
        } else if !self.mapped {
            let cap = bytes.next_multiple_of(page_size()) / size_of::<Line>();
            let new = map_zeroed(cap);
            self.move_into(new, cap, true);
        } else {
            let cap = bytes.next_multiple_of(page_size()) / size_of::<Line>();
            self.ptr = if self.file_lines > 0 {
                relocate(self.ptr, self.cap, self.file_lines, cap)
            } else {
                remap(self.ptr, self.cap, cap, self.len)
            };
            self.cap = cap;
        }
    }

    /// Copies the lines into `new` (of `cap` lines), frees the old buffer and adopts `new`.
    fn move_into(&mut self, new: NonNull<Line>, cap: usize, mapped: bool) {
        debug_assert_eq!(self.file_lines, 0, "file pages are never copied");
        // SAFETY: both buffers hold at least `len` lines and are distinct allocations.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.as_ptr(), self.len) };
        self.free();
        (self.ptr, self.cap, self.mapped) = (new, cap, mapped);
    }

    fn free(&mut self) {
        if self.cap == 0 {
            return;
        }
        if self.mapped {
            unmap(self.ptr, self.cap);
        } else {
            // SAFETY: a heap block allocated by `heap_zeroed(self.cap)` with this layout.
            unsafe { dealloc(self.ptr.as_ptr().cast(), lines_layout(self.cap)) };
        }
    }
}

impl Drop for Rows {
    fn drop(&mut self) {
        self.free();
    }
}

fn lines_layout(cap: usize) -> Layout {
    Layout::array::<Line>(cap).expect("row layout")
}

fn heap_zeroed(cap: usize) -> NonNull<Line> {
    let layout = lines_layout(cap);
    // SAFETY: `cap` >= 16 lines (see `reserve`), so the layout is not zero-sized.
    let p = unsafe { alloc_zeroed(layout) };
    NonNull::new(p.cast()).unwrap_or_else(|| handle_alloc_error(layout))
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(size_of::<Line>())
}

/// A new anonymous private mapping of `cap` lines (a whole number of pages), zeroed.
fn map_zeroed(cap: usize) -> NonNull<Line> {
    let bytes = cap * size_of::<Line>();
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing; it touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        handle_alloc_error(lines_layout(cap));
    }
    NonNull::new(p.cast()).unwrap_or_else(|| handle_alloc_error(lines_layout(cap)))
}

fn unmap(ptr: NonNull<Line>, cap: usize) {
    // SAFETY: `ptr` is a range of exactly `cap` lines made by `map_zeroed`, `remap`,
    // `relocate` or `Rows::adopt_file_pages` (one mapping, or a file's followed by an anonymous
    // one, which `munmap` takes together), and nothing refers to it after this.
    let rc = unsafe { libc::munmap(ptr.as_ptr().cast(), cap * size_of::<Line>()) };
    debug_assert_eq!(rc, 0, "munmap of the graph rows failed");
}

/// Grows the mapping `ptr` of `old` lines (`len` of them in use) to `new` lines; its pages
/// move, nothing is copied.
#[cfg(target_os = "linux")]
fn remap(ptr: NonNull<Line>, old: usize, new: usize, _len: usize) -> NonNull<Line> {
    // SAFETY: `ptr` is a whole mapping of `old` lines; MREMAP_MAYMOVE lets the kernel move it,
    // and the caller adopts the returned address and forgets the old one. The grown part of
    // an anonymous mapping is zero.
    let p = unsafe {
        libc::mremap(
            ptr.as_ptr().cast(),
            old * size_of::<Line>(),
            new * size_of::<Line>(),
            libc::MREMAP_MAYMOVE,
        )
    };
    if p == libc::MAP_FAILED {
        handle_alloc_error(lines_layout(new));
    }
    NonNull::new(p.cast()).unwrap_or_else(|| handle_alloc_error(lines_layout(new)))
}

/// Grows the mapping `ptr` of `old` lines whose first `file` lines map a file to `new` lines:
/// a new anonymous mapping, into whose start the file's pages move, and after them the
/// anonymous pages, grown in the same move to the rest of the new length. Nothing is copied;
/// the lines past `old` are zero. The range stays two mappings (the file's, one anonymous):
/// moving the anonymous part without growing it would leave it beside the fresh tail as a
/// separate mapping (moved pages keep their own bookkeeping and do not merge), and before
/// Linux 6.17 `mremap` refuses a range of several mappings, so the next growth would fail.
#[cfg(target_os = "linux")]
fn relocate(ptr: NonNull<Line>, old: usize, file: usize, new: usize) -> NonNull<Line> {
    let fresh = map_zeroed(new);
    let move_to = |from: usize, lines: usize, to_lines: usize| {
        // SAFETY: `from..from + lines` is one whole mapping of the old range (its file part,
        // or its anonymous part), moved, grown to `to_lines`, over the same offset of `fresh`,
        // whose pages it replaces (`from + to_lines` <= `new`); the old range is gone after,
        // and the caller forgets it.
        let p = unsafe {
            libc::mremap(
                ptr.as_ptr().add(from).cast(),
                lines * size_of::<Line>(),
                to_lines * size_of::<Line>(),
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                fresh.as_ptr().add(from).cast::<libc::c_void>(),
            )
        };
        if p == libc::MAP_FAILED {
            handle_alloc_error(lines_layout(new));
        }
    };
    move_to(0, file, file);
    if old > file {
        move_to(file, old - file, new - file);
    }
    fresh
}

/// Only Linux maps files into rows.
#[cfg(not(target_os = "linux"))]
fn relocate(_: NonNull<Line>, _: usize, _: usize, _: usize) -> NonNull<Line> {
    unreachable!("rows map a file only on Linux")
}

/// Without `mremap`: a new mapping, the lines in use copied over, the old one unmapped.
#[cfg(not(target_os = "linux"))]
fn remap(ptr: NonNull<Line>, old: usize, new: usize, len: usize) -> NonNull<Line> {
    let fresh = map_zeroed(new);
    // SAFETY: distinct mappings of `old` and `new` >= `old` >= `len` lines.
    unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), fresh.as_ptr(), len) };
    unmap(ptr, old);
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hnsw_graph::LINE_WORDS;

    fn fill(rows: &mut Rows, from: usize, to: usize) {
        for i in from..to {
            // SAFETY: `i` < `rows.len()`.
            unsafe { (*rows.as_mut_ptr().add(i)).0 = [i as u32; LINE_WORDS] };
        }
    }

    fn check(rows: &Rows, upto: usize) {
        for i in 0..rows.len() {
            let want = if i < upto { i as u32 } else { 0 };
            // SAFETY: `i` < `rows.len()`.
            let line = unsafe { &*rows.as_ptr().add(i) };
            assert_eq!(line.0, [want; LINE_WORDS], "line {i}");
        }
    }

    #[test]
    fn growing_across_the_heap_and_the_mapping_keeps_every_line_and_zeroes_the_new_ones() {
        let mut rows = Rows::new();
        let mut filled = 0;
        // From a heap block, over the mapping threshold, then remapped several times.
        for len in [
            1,
            17,
            1000,
            MAP_BYTES / 64 - 1,
            MAP_BYTES / 64 + 5,
            100_000,
            300_000,
        ] {
            rows.grow_zeroed(len);
            check(&rows, filled);
            assert!(rows.as_ptr().is_aligned(), "lines stay 64-byte aligned");
            fill(&mut rows, filled, len);
            filled = len;
        }
        check(&rows, filled);
        assert!(rows.mapped);
    }

    #[test]
    fn a_mapping_is_counted_by_the_pages_its_lines_reach() {
        let mut rows = Rows::new();
        rows.grow_zeroed(MAP_BYTES / 64 * 2);
        assert_eq!(rows.resident_bytes(), MAP_BYTES * 2);
        rows.reserve(MAP_BYTES / 64 * 10);
        assert_eq!(
            rows.resident_bytes(),
            MAP_BYTES * 2,
            "reserved pages are not counted"
        );
        let mut small = Rows::new();
        small.grow_zeroed(10);
        assert_eq!(small.resident_bytes(), 16 * 64, "a heap block counts whole");
    }
}
