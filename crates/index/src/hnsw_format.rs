//! The persisted form of an HNSW graph (the body after `HnswIndex`'s header), little-endian.
//! Layout 2 (written since `STRHNSW4`):
//!
//! ```text
//! m u32 | nodes u32 | entry u32 (u32::MAX: empty) | max_level u32 | stride u32 | pad u32
//! labels   nodes × u32          slot of each node
//! levels   nodes × u8           top level of each node
//! deleted  nodes × u8           1 = tombstone
//! upper    Σ levels × (1 + m) × u32   upper-level lists of the nodes with level ≥ 1, in order
//! padding  pad × 0u8            so that the rows start at a multiple of ROW_ALIGN in the file
//! rows     nodes × stride × u32 level-0 rows exactly as held in memory (vector, count, links)
//! ```
//!
//! Layout 1 (`STRHNSW2` and `STRHNSW3`, still read) had no `pad` and no padding, and the rows
//! between `deleted` and `upper`.
//!
//! Why this shape: loading a 200 000-node graph must be quick, so the big arrays are written
//! as they sit in memory and read back straight into their final buffers; no graph is rebuilt
//! on load. The rows, most of the bytes, come last and page-aligned so that a load from a file
//! can map them instead of copying them (`hnsw_map.rs`): the pages past the end of the file
//! read as zero, as the rows' spare capacity must. The body is written to and read from
//! streams, or a mapping of a file, that the caller opens; this crate opens no file. Decoding
//! is closed: every length, count, level, link and padding byte is checked, so a damaged body
//! is an error (and the engine rebuilds the graph), never an out-of-bounds walk.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use crate::error::IndexError;
use crate::hnsw_graph::{Graph, LINE_WORDS, Line, MAX_LEVEL, row_stride};
use crate::hnsw_rows::{MAP_BYTES, Rows};

/// Where the rows of a graph whose rows take at least [`MAP_BYTES`] start in the encoding: at
/// a multiple of 64 KiB, a whole number of pages for every common page size (4, 16 and
/// 64 KiB), so a file's rows can be mapped where they are. Smaller rows are read, not mapped,
/// and get no padding.
pub(crate) const ROW_ALIGN: usize = 64 << 10;

/// The body layouts a header can announce (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Layout 1: the rows between the tombstones and the upper lists, no padding.
    RowsInside,
    /// Layout 2: the rows last, after padding.
    RowsLast,
}

/// Bytes of layout 2's fixed fields: m, nodes, entry, max_level, stride, pad.
const FIXED: usize = 6 * 4;

fn corrupt(reason: impl Into<String>) -> IndexError {
    IndexError::Corrupt {
        reason: reason.into(),
    }
}

fn put_u32(out: &mut impl Write, v: u32) -> io::Result<()> {
    out.write_all(&v.to_le_bytes())
}

/// Writes `words` little-endian. On a little-endian machine that is their memory as it is,
/// written in one call (no copy of a graph that can be hundreds of megabytes).
fn put_words(out: &mut impl Write, words: &[u32]) -> io::Result<()> {
    if cfg!(target_endian = "little") {
        out.write_all(bytemuck::cast_slice(words))
    } else {
        for chunk in words.chunks(16 * 1024) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|w| w.to_le_bytes()).collect();
            out.write_all(&bytes)?;
        }
        Ok(())
    }
}

fn rows_bytes(g: &Graph) -> usize {
    g.nodes() * g.stride * 4
}

/// Bytes of padding before the rows of `g` when its body starts at offset `at` of the
/// encoding.
fn padding(g: &Graph, at: usize) -> usize {
    if rows_bytes(g) < MAP_BYTES {
        return 0;
    }
    let before = at + FIXED + g.nodes() * (4 + 1 + 1) + g.upper_words * 4;
    before.next_multiple_of(ROW_ALIGN) - before
}

/// Bytes of [`write_to`]'s output for `g` with its body at offset `at` of the encoding.
pub(crate) fn encoded_len(g: &Graph, at: usize) -> usize {
    debug_assert_eq!(
        g.upper_words,
        g.upper.iter().map(|u| u.len()).sum::<usize>(),
        "the graph's count of upper-level words"
    );
    FIXED + g.nodes() * (4 + 1 + 1) + g.upper_words * 4 + padding(g, at) + rows_bytes(g)
}

/// Writes the body of `g` (layout 2) to `out`, where it starts at offset `at` of the encoding.
pub(crate) fn write_to(g: &Graph, at: usize, out: &mut impl Write) -> io::Result<()> {
    let n = g.nodes();
    let pad = padding(g, at);
    put_u32(out, g.m as u32)?;
    put_u32(out, n as u32)?;
    put_u32(out, g.entry.unwrap_or(u32::MAX))?;
    put_u32(out, g.max_level as u32)?;
    put_u32(out, g.stride as u32)?;
    put_u32(out, pad as u32)?;
    put_words(out, &g.labels)?;
    out.write_all(&g.levels)?;
    out.write_all(&g.deleted)?;
    for list in &g.upper {
        put_words(out, list)?;
    }
    io::copy(&mut io::repeat(0).take(pad as u64), out)?;
    put_words(out, g.words())
}

/// Writes the body of `g` in layout 1, as version 3 did: for tests that old files still load.
#[cfg(test)]
pub(crate) fn write_layout_1(g: &Graph, out: &mut impl Write) -> io::Result<()> {
    for v in [
        g.m,
        g.nodes(),
        g.entry.map_or(u32::MAX as usize, |e| e as usize),
    ] {
        put_u32(out, v as u32)?;
    }
    put_u32(out, g.max_level as u32)?;
    put_u32(out, g.stride as u32)?;
    put_words(out, &g.labels)?;
    out.write_all(&g.levels)?;
    out.write_all(&g.deleted)?;
    put_words(out, g.words())?;
    for list in &g.upper {
        put_words(out, list)?;
    }
    Ok(())
}

/// Where a body is read from: a stream ([`Stream`]), or a mapping of a file that can hand
/// over its pages instead of copying them (`hnsw_map.rs`).
pub(crate) trait BodyRead: Read {
    /// Puts the next `lines` lines of the body into `rows`, which is empty.
    fn rows_into(&mut self, rows: &mut Rows, lines: usize) -> io::Result<()>;
}

/// A body read from a stream: the rows are read into fresh lines.
pub(crate) struct Stream<R>(pub R);

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> BodyRead for Stream<R> {
    fn rows_into(&mut self, rows: &mut Rows, lines: usize) -> io::Result<()> {
        read_rows(self, rows, lines)
    }
}

/// Reads `lines` lines from `r` into `rows`, which is empty.
pub(crate) fn read_rows(r: &mut impl Read, rows: &mut Rows, lines: usize) -> io::Result<()> {
    // Fresh lines: a large graph's are pages of a new mapping, first touched by this read.
    rows.grow_zeroed(lines);
    r.read_exact(rows.bytes_mut())
}

fn read_error(e: io::Error, what: &str) -> IndexError {
    corrupt(match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("graph body ends inside its {what}"),
        _ => format!("reading the {what}: {e}"),
    })
}

/// A source that fails, rather than panics or over-allocates, past the bytes it announced.
struct Source<'a, R> {
    r: &'a mut R,
    /// Bytes the body still has by its caller's account; nothing larger is allocated.
    left: u64,
}

impl<R: BodyRead> Source<'_, R> {
    /// Takes `n` bytes off the account, or fails if the body is shorter.
    fn take(&mut self, n: usize, what: &str) -> Result<(), IndexError> {
        if n as u64 > self.left {
            return Err(corrupt(format!("graph body ends inside its {what}")));
        }
        self.left -= n as u64;
        Ok(())
    }

    fn bytes(&mut self, out: &mut [u8], what: &str) -> Result<(), IndexError> {
        self.take(out.len(), what)?;
        self.r.read_exact(out).map_err(|e| read_error(e, what))
    }

    fn u32(&mut self, what: &str) -> Result<u32, IndexError> {
        let mut b = [0; 4];
        self.bytes(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads little-endian words straight into `out` (their final place).
    fn words_into(&mut self, out: &mut [u32], what: &str) -> Result<(), IndexError> {
        self.bytes(bytemuck::cast_slice_mut(out), what)?;
        from_le(out);
        Ok(())
    }

    /// `len` bytes, after checking that they are there by the caller's account.
    fn vec(&mut self, len: usize, what: &str) -> Result<Vec<u8>, IndexError> {
        if len as u64 > self.left {
            return Err(corrupt(format!("graph body ends inside its {what}")));
        }
        let mut v = vec![0; len];
        self.bytes(&mut v, what)?;
        Ok(v)
    }

    /// The level-0 rows of `g`, `lines` lines, into its empty rows.
    fn rows(&mut self, g: &mut Graph, lines: usize) -> Result<(), IndexError> {
        self.take(lines * size_of::<Line>(), "rows")?;
        self.r
            .rows_into(&mut g.rows, lines)
            .map_err(|e| read_error(e, "rows"))?;
        from_le(g.words_mut());
        Ok(())
    }
}

/// Turns words read little-endian into the machine's order (nothing to do on most machines).
fn from_le(words: &mut [u32]) {
    if cfg!(target_endian = "big") {
        for w in words.iter_mut() {
            *w = u32::from_le(*w);
        }
    }
}

/// Checks that a neighbour list `[count][links...]` of capacity `cap` is well formed: count
/// within the capacity, every link a node whose level reaches `level`.
fn check_list(list: &[u32], cap: usize, level: usize, levels: &[u8]) -> Result<(), IndexError> {
    let count = list[0] as usize;
    if count > cap {
        return Err(corrupt(format!(
            "a node lists {count} links, at most {cap}"
        )));
    }
    for &link in &list[1..1 + count] {
        match levels.get(link as usize) {
            Some(&l) if l as usize >= level => {}
            _ => return Err(corrupt(format!("link to node {link} on level {level}"))),
        }
    }
    Ok(())
}

/// The upper-level lists of every node of `g`, whose levels are read.
fn read_upper(r: &mut Source<'_, impl BodyRead>, g: &mut Graph) -> Result<(), IndexError> {
    g.upper = Vec::with_capacity(g.nodes());
    for node in 0..g.nodes() {
        // A level above MAX_LEVEL is refused after the body is read; this list is at most
        // 255 × 257 words whatever the damage, and must fit in the bytes left.
        let mut list = vec![0u32; g.levels[node] as usize * (1 + g.m)].into_boxed_slice();
        r.words_into(&mut list, "upper links")?;
        g.upper_words += list.len();
        g.upper.push(list);
    }
    Ok(())
}

/// Where a body is and how it is laid out.
pub(crate) struct Body {
    /// Its offset in the encoding (the header's length).
    pub at: usize,
    /// Its length by the caller's account (a slice's length, a file's size, less the header).
    pub len: u64,
    pub layout: Layout,
}

/// Reads a body into `g`, an empty graph built with the expected dimension and metric (its
/// `m` is replaced by the recorded one). Counts that need more bytes than the body's length
/// are damage, refused before anything that large is allocated. Every array is read straight
/// into its final buffer (or, for the rows of a mapped file, left where they are).
pub(crate) fn read_from(
    r: &mut impl BodyRead,
    body: Body,
    g: &mut Graph,
) -> Result<(), IndexError> {
    let Body { at, len, layout } = body;
    let mut r = Source { r, left: len };
    let m = r.u32("header")? as usize;
    let n = r.u32("header")? as usize;
    let entry = r.u32("header")?;
    let max_level = r.u32("header")? as usize;
    let stride = r.u32("header")? as usize;
    let pad = match layout {
        Layout::RowsInside => 0,
        Layout::RowsLast => r.u32("header")? as usize,
    };
    if !(2..=256).contains(&m) {
        return Err(corrupt(format!("connectivity {m} out of range")));
    }
    *g = Graph::new(g.dim, m, g.space, g.kernel);
    if stride != row_stride(g.dim, g.m0) {
        return Err(corrupt(format!(
            "row stride {stride}, expected {}",
            g.stride
        )));
    }
    if pad >= ROW_ALIGN {
        return Err(corrupt(format!("{pad} bytes of padding")));
    }
    // Every node takes at least a row; a count beyond the bytes present is damage, and is
    // caught before anything that large is allocated.
    if (n as u64).saturating_mul(stride as u64 * 4) > r.left {
        return Err(corrupt(format!("{n} nodes do not fit in the body")));
    }
    g.labels = vec![0; n];
    r.words_into(&mut g.labels, "labels")?;
    g.levels = r.vec(n, "levels")?;
    g.deleted = r.vec(n, "tombstones")?;
    let lines = n * stride / LINE_WORDS;
    match layout {
        Layout::RowsInside => {
            r.rows(g, lines)?;
            read_upper(&mut r, g)?;
        }
        Layout::RowsLast => {
            read_upper(&mut r, g)?;
            // The rows' place is fixed by what precedes them: other padding is damage.
            let expected = padding(g, at);
            if pad != expected {
                return Err(corrupt(format!(
                    "{pad} bytes of padding, expected {expected}"
                )));
            }
            if r.vec(pad, "padding")?.iter().any(|&b| b != 0) {
                return Err(corrupt("padding that is not zero"));
            }
            r.rows(g, lines)?;
        }
    }
    if let Some(&l) = g.levels.iter().find(|&&l| l as usize > MAX_LEVEL) {
        return Err(corrupt(format!("node level {l} above {MAX_LEVEL}")));
    }
    if g.deleted.iter().any(|&d| d > 1) {
        return Err(corrupt("tombstone flag other than 0 or 1"));
    }
    if r.left != 0 {
        return Err(corrupt("bytes after the graph body"));
    }
    let words_at = |node: usize| node * stride + g.dim;
    for node in 0..n {
        let at = words_at(node);
        check_list(&g.words()[at..at + 1 + g.m0], g.m0, 0, &g.levels)?;
        for (i, list) in g.upper[node].chunks_exact(1 + m).enumerate() {
            check_list(list, m, i + 1, &g.levels)?;
        }
    }
    if n == 0 {
        if entry != u32::MAX || max_level != 0 {
            return Err(corrupt("an empty graph with an entry point"));
        }
    } else {
        let top = g.levels.iter().copied().max().unwrap_or(0) as usize;
        if entry as usize >= n || g.levels[entry as usize] as usize != max_level || max_level != top
        {
            return Err(corrupt("entry point is not a node of the top level"));
        }
        g.entry = Some(entry);
        g.max_level = max_level;
    }
    let mut slot_node = HashMap::with_capacity(n);
    for (node, (&slot, &dead)) in g.labels.iter().zip(&g.deleted).enumerate() {
        if dead == 0 && slot_node.insert(slot, node as u32).is_some() {
            return Err(corrupt(format!("slot {slot} is live on two nodes")));
        }
    }
    g.slot_node = slot_node;
    Ok(())
}

#[cfg(test)]
#[path = "hnsw_format_tests.rs"]
pub(crate) mod tests;
