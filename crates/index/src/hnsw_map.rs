//! Loading a graph from a file by mapping it instead of reading it.
//!
//! Reading a 200,000 × 384 graph file (340 MB) copied it from the OS page cache into fresh
//! anonymous pages that the kernel first zeroed: most of a large tenant's load, and the graph
//! then sat in memory twice (the page cache and the copy). A [`GraphMap`] is a private mapping
//! of the file: its checksum and decoding read the page cache's pages in place, and the
//! graph's level-0 rows (most of the bytes, last in the file and page-aligned, see
//! `hnsw_format.rs`) stay mapped as the graph's rows. A page is copied only when an insert
//! writes to it (the mapping is private: the file never changes), and the kernel may drop
//! clean pages under memory pressure and read them again from the file.
//!
//! What the caller guarantees ([`GraphMap::new`] is `unsafe` for it): nothing truncates or
//! rewrites the file while it is mapped. The engine writes each graph file once, under a new
//! name, read-only, and afterwards only deletes it (a deleted file stays readable while
//! mapped); backups hard-link these files, so a backup's copy is the same file and must not
//! be changed in place either. Another process truncating it would fault the server.
//!
//! Only on Linux on little-endian machines; elsewhere [`GraphMap::new`] says `Unsupported` and
//! the caller reads the file as a stream ([`crate::HnswIndex::read_from`]).

use std::fs::File;
use std::io;
use std::ptr::NonNull;

use crate::hnsw_format::{BodyRead, read_rows};
use crate::hnsw_rows::{MAP_BYTES, Rows, page_size};

/// A private, read-write mapping of a whole graph file (see the module documentation).
pub struct GraphMap {
    ptr: NonNull<u8>,
    /// The file's length.
    len: usize,
    /// The mapping's length: the file's, rounded up to whole pages.
    map_bytes: usize,
}

// SAFETY: the mapping is owned exclusively and is plain memory; shared access only reads.
unsafe impl Send for GraphMap {}
// SAFETY: as above.
unsafe impl Sync for GraphMap {}

impl GraphMap {
    /// Maps `file`, whose length must be `len` (the length its caller recorded): a mapping
    /// past the end of a file faults when read, so a file of another length is refused.
    ///
    /// # Safety
    ///
    /// Nothing may write to or truncate the file for as long as the mapping, or a graph made
    /// from it ([`crate::HnswIndex::from_map`]), lives: its bytes are read as immutable memory
    /// (a link count changed behind the graph's back would walk out of its row), and pages
    /// past a truncated end fault the process. Deleting or renaming the file is fine.
    pub unsafe fn new(file: &File, len: u64) -> io::Result<Self> {
        let on_disk = file.metadata()?.len();
        if on_disk != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the file has {on_disk} bytes, not {len}"),
            ));
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no bytes to map"))?;
        map_file(file, len)
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping holds `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(all(target_os = "linux", target_endian = "little"))]
fn map_file(file: &File, len: usize) -> io::Result<GraphMap> {
    use std::os::fd::AsRawFd;
    let map_bytes = len.next_multiple_of(page_size());
    // SAFETY: a new private mapping of an open file at an address of the kernel's choosing;
    // it touches no existing memory, and writes to it never reach the file.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
    Ok(GraphMap {
        ptr,
        len,
        map_bytes,
    })
}

#[cfg(not(all(target_os = "linux", target_endian = "little")))]
fn map_file(_: &File, _: usize) -> io::Result<GraphMap> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "graph files are mapped only on little-endian Linux",
    ))
}

impl Drop for GraphMap {
    fn drop(&mut self) {
        // SAFETY: the whole mapping made by `map_file`; nothing refers to it after this.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_bytes) };
        debug_assert_eq!(rc, 0, "munmap of a graph file failed");
    }
}

/// Reads a body from a [`GraphMap`], from its start; the rows, when they are large, last and
/// page-aligned, are handed over instead of copied.
pub(crate) struct MapReader {
    /// `None` once the rows took the mapping.
    map: Option<GraphMap>,
    at: usize,
}

impl MapReader {
    pub fn new(map: GraphMap) -> Self {
        MapReader {
            map: Some(map),
            at: 0,
        }
    }
}

impl io::Read for MapReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(map) = &self.map else {
            return Ok(0);
        };
        let rest = &map.bytes()[self.at..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl BodyRead for MapReader {
    fn rows_into(&mut self, rows: &mut Rows, lines: usize) -> io::Result<()> {
        let bytes = lines * size_of::<crate::hnsw_graph::Line>();
        let adoptable = self.map.as_ref().is_some_and(|m| {
            bytes >= MAP_BYTES && self.at.is_multiple_of(page_size()) && self.at + bytes == m.len
        });
        if !adoptable {
            return read_rows(self, rows, lines);
        }
        let map = self.map.take().expect("invariant: checked above");
        let (ptr, map_bytes) = (map.ptr, map.map_bytes);
        std::mem::forget(map);
        *rows = adopt(ptr, map_bytes, self.at, lines);
        self.at += bytes;
        Ok(())
    }
}

#[cfg(all(target_os = "linux", target_endian = "little"))]
fn adopt(ptr: NonNull<u8>, map_bytes: usize, at: usize, lines: usize) -> Rows {
    // SAFETY: a mapping made by `map_file` (private, writable, whole pages), forgotten by its
    // `GraphMap`; `at` is page-aligned and the lines end where the file does, within its last
    // page (checked by the caller).
    unsafe { Rows::adopt_file_pages(ptr, map_bytes, at, lines) }
}

#[cfg(not(all(target_os = "linux", target_endian = "little")))]
fn adopt(_: NonNull<u8>, _: usize, _: usize, _: usize) -> Rows {
    unreachable!("no GraphMap exists elsewhere than on little-endian Linux")
}

#[cfg(all(test, target_os = "linux", target_endian = "little"))]
#[path = "hnsw_map_tests.rs"]
mod tests;
