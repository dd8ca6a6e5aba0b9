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
//! as they sit in memory and read back as bulk copies; no graph is rebuilt on load. Decoding
//! is closed: every length, count, level and link is checked, so a damaged body is an error
//! (and the engine rebuilds the graph), never an out-of-bounds walk.

use std::collections::HashMap;

use crate::error::IndexError;
use crate::hnsw_graph::{Graph, LINE_WORDS, Line, MAX_LEVEL, row_stride};

fn corrupt(reason: impl Into<String>) -> IndexError {
    IndexError::Corrupt {
        reason: reason.into(),
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn words_to_bytes(out: &mut Vec<u8>, words: &[u32]) {
    out.reserve(words.len() * 4);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// Bytes of [`write`]'s output for `g`.
pub(crate) fn encoded_len(g: &Graph) -> usize {
    let upper: usize = g.upper.iter().map(|u| u.len()).sum();
    5 * 4 + g.nodes() * (4 + 1 + 1) + (g.nodes() * g.stride + upper) * 4
}

/// Appends the body of `g` to `out`.
pub(crate) fn write(g: &Graph, out: &mut Vec<u8>) {
    out.reserve(encoded_len(g));
    let n = g.nodes();
    put_u32(out, g.m as u32);
    put_u32(out, n as u32);
    put_u32(out, g.entry.unwrap_or(u32::MAX));
    put_u32(out, g.max_level as u32);
    put_u32(out, g.stride as u32);
    words_to_bytes(out, &g.labels);
    out.extend_from_slice(&g.levels);
    out.extend_from_slice(&g.deleted);
    let rows: &[Line] = &g.rows;
    for line in rows {
        words_to_bytes(out, &line.0);
    }
    for list in &g.upper {
        words_to_bytes(out, list);
    }
}

/// A cursor over the body that fails, rather than panics, past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], IndexError> {
        if self.bytes.len() < n {
            return Err(corrupt(format!("graph body ends inside its {what}")));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u32(&mut self, what: &str) -> Result<u32, IndexError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn words_into(&mut self, out: &mut [u32], what: &str) -> Result<(), IndexError> {
        let len = out
            .len()
            .checked_mul(4)
            .ok_or_else(|| corrupt("too large"))?;
        let b = self.take(len, what)?;
        for (w, c) in out.iter_mut().zip(b.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
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

/// Reads a body written by [`write`] into `g`, an empty graph built with the expected
/// dimension and metric (its `m` is replaced by the recorded one).
pub(crate) fn read(bytes: &[u8], g: &mut Graph) -> Result<(), IndexError> {
    let mut r = Reader { bytes };
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
    if n.saturating_mul(stride * 4) > r.bytes.len() {
        return Err(corrupt(format!("{n} nodes do not fit in the body")));
    }
    g.labels = vec![0; n];
    r.words_into(&mut g.labels, "labels")?;
    g.levels = r.take(n, "levels")?.to_vec();
    g.deleted = r.take(n, "tombstones")?.to_vec();
    g.rows = vec![Line::default(); n * stride / LINE_WORDS];
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
        g.upper.push(list);
    }
    if !r.bytes.is_empty() {
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
