//! The persisted form of an HNSW graph (the body after `HnswIndex`'s header), little-endian:
//!
//! ```text
//! m u32 | nodes u32 | entry u32 (u32::MAX: empty) | max_level u32 | stride u32
//! labels   nodes × u32          slot of each node
//! levels   nodes × u8           top level of each node
//! deleted  nodes × u8           1 = tombstone
//! rows     nodes × stride × u32 level-0 rows exactly as held in memory (vector, count, links)
//! upper    Σ levels × (1 + m) × u32   upper-level lists of the nodes with level ≥ 1, in order
//! ```
//!
//! Why this shape: loading a 200 000-node graph must be quick, so the big arrays are written
//! as they sit in memory and read back straight into their final buffers (one copy from a
//! file, no intermediate byte buffer); no graph is rebuilt on load. The body is written to and
//! read from `std::io` streams the caller opens; this crate opens no file. Decoding
//! is closed: every length, count, level and link is checked, so a damaged body is an error
//! (and the engine rebuilds the graph), never an out-of-bounds walk.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use crate::error::IndexError;
use crate::hnsw_graph::{Graph, LINE_WORDS, MAX_LEVEL, row_stride};

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

/// Bytes of [`write_to`]'s output for `g`.
pub(crate) fn encoded_len(g: &Graph) -> usize {
    debug_assert_eq!(
        g.upper_words,
        g.upper.iter().map(|u| u.len()).sum::<usize>(),
        "the graph's count of upper-level words"
    );
    5 * 4 + g.nodes() * (4 + 1 + 1) + (g.nodes() * g.stride + g.upper_words) * 4
}

/// Writes the body of `g` to `out`.
pub(crate) fn write_to(g: &Graph, out: &mut impl Write) -> io::Result<()> {
    let n = g.nodes();
    put_u32(out, g.m as u32)?;
    put_u32(out, n as u32)?;
    put_u32(out, g.entry.unwrap_or(u32::MAX))?;
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

/// A source that fails, rather than panics or over-allocates, past the bytes it announced.
struct Source<'a, R> {
    r: &'a mut R,
    /// Bytes the body still has by its caller's account; nothing larger is allocated.
    left: u64,
}

impl<R: Read> Source<'_, R> {
    fn bytes(&mut self, out: &mut [u8], what: &str) -> Result<(), IndexError> {
        let n = out.len() as u64;
        if n > self.left {
            return Err(corrupt(format!("graph body ends inside its {what}")));
        }
        self.r.read_exact(out).map_err(|e| {
            corrupt(match e.kind() {
                io::ErrorKind::UnexpectedEof => format!("graph body ends inside its {what}"),
                _ => format!("reading the {what}: {e}"),
            })
        })?;
        self.left -= n;
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Result<u32, IndexError> {
        let mut b = [0; 4];
        self.bytes(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads little-endian words straight into `out` (their final place).
    fn words_into(&mut self, out: &mut [u32], what: &str) -> Result<(), IndexError> {
        self.bytes(bytemuck::cast_slice_mut(out), what)?;
        if cfg!(target_endian = "big") {
            for w in out.iter_mut() {
                *w = u32::from_le(*w);
            }
        }
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

/// Reads a body written by [`write_to`] into `g`, an empty graph built with the expected
/// dimension and metric (its `m` is replaced by the recorded one). `len` is the body's length
/// by the caller's account (a slice's length, a file's size): counts that need more bytes
/// than that are damage, refused before anything that large is allocated. Every array is
/// read straight into its final buffer, so a load copies the graph once.
pub(crate) fn read_from(r: &mut impl Read, len: u64, g: &mut Graph) -> Result<(), IndexError> {
    let mut r = Source { r, left: len };
    let m = r.u32("header")? as usize;
    let n = r.u32("header")? as usize;
    let entry = r.u32("header")?;
    let max_level = r.u32("header")? as usize;
    let stride = r.u32("header")? as usize;
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
    // Fresh lines: a large graph's are pages of a new mapping, first touched by this read.
    g.rows.grow_zeroed(lines);
    r.words_into(g.words_mut(), "rows")?;
    if let Some(&l) = g.levels.iter().find(|&&l| l as usize > MAX_LEVEL) {
        return Err(corrupt(format!("node level {l} above {MAX_LEVEL}")));
    }
    if g.deleted.iter().any(|&d| d > 1) {
        return Err(corrupt("tombstone flag other than 0 or 1"));
    }
    g.upper = Vec::with_capacity(n);
    for node in 0..n {
        let mut list = vec![0u32; g.levels[node] as usize * (1 + m)].into_boxed_slice();
        r.words_into(&mut list, "upper links")?;
        g.upper_words += list.len();
        g.upper.push(list);
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
mod tests;
