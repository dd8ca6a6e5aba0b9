//! The bytes of the row log: entries, each one storage transaction's rows, and the rows in it.
//!
//! An entry is a header and its payload, in little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic, `STRL` |
//! | 4 | payload length |
//! | 8 | epoch: the open of the store that wrote it |
//! | 8 | log sequence number (LSN), one more than the entry before it |
//! | 8 | unlogged commits before it (see the parent module) |
//! | 4 | CRC-32 of the 24 bytes above after the magic, then the payload |
//!
//! A payload is rows one after another: the table's tag (one byte, see `file_writes`), the
//! key's length (4 bytes) and bytes, then the value's length (4 bytes; `u32::MAX` for a row
//! removed) and bytes.
//!
//! A file is read from its start as a chain: entries of one epoch whose numbers follow one
//! another. The first entry that does not decode, fails its checksum, belongs to another
//! epoch or does not follow ends the chain: a torn write at a crash, or what an earlier round
//! of the file left beyond the current one's end (older numbers, or an older epoch).

use crate::file_writes::TableTag;

const MAGIC: u32 = u32::from_le_bytes(*b"STRL");
pub(crate) const HEADER: usize = 36;
const REMOVED: u32 = u32::MAX;

/// One decoded entry, borrowing its payload from the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    pub(crate) lsn: u64,
    pub(crate) needs: u64,
    pub(crate) payload: &'a [u8],
}

/// An entry being built: room for its header, then its rows ([`encode_row`]), then
/// [`seal_entry`].
pub(crate) fn begin_entry() -> Vec<u8> {
    vec![0; HEADER]
}

/// Writes the header of `entry` (begun with [`begin_entry`]) for its payload; refused for a
/// payload of 4 GiB or more (before the transaction commits, so nothing is left unlogged).
pub(crate) fn seal_entry(entry: &mut [u8], epoch: u64, lsn: u64, needs: u64) -> Result<(), String> {
    let (header, payload) = entry.split_at_mut(HEADER);
    let len = u32::try_from(payload.len()).map_err(|_| {
        format!(
            "a transaction's rows are {} bytes, past the row log's 4 GiB",
            payload.len()
        )
    })?;
    header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&epoch.to_le_bytes());
    header[16..24].copy_from_slice(&lsn.to_le_bytes());
    header[24..32].copy_from_slice(&needs.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[4..32]);
    crc.update(payload);
    header[32..36].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok(())
}

/// Appends one whole entry to `out` (tests).
#[cfg(test)]
pub(crate) fn encode_entry(out: &mut Vec<u8>, epoch: u64, lsn: u64, needs: u64, payload: &[u8]) {
    let mut entry = begin_entry();
    entry.extend_from_slice(payload);
    seal_entry(&mut entry, epoch, lsn, needs).expect("a test's payload is small");
    out.extend_from_slice(&entry);
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The chain of entries of `epoch` at the start of `file` (see the module's documentation).
pub(crate) fn chain(file: &[u8], epoch: u64) -> Vec<Entry<'_>> {
    let mut entries: Vec<Entry<'_>> = Vec::new();
    let mut at = 0;
    while file.len() - at >= HEADER {
        let header = &file[at..at + HEADER];
        if u32_at(header, 0) != MAGIC {
            break;
        }
        let len = u32_at(header, 4) as usize;
        let Some(payload) = file.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[4..32]);
        crc.update(payload);
        if crc.finalize() != u32_at(header, 32) || u64_at(header, 8) != epoch {
            break;
        }
        let lsn = u64_at(header, 16);
        if entries.last().is_some_and(|e| lsn != e.lsn + 1) {
            break;
        }
        entries.push(Entry {
            lsn,
            needs: u64_at(header, 24),
            payload,
        });
        at += HEADER + len;
    }
    entries
}

/// Appends one row to a payload: `value` `None` for a row removed.
pub(crate) fn encode_row(out: &mut Vec<u8>, tag: TableTag, key: &[u8], value: Option<&[u8]>) {
    out.push(tag as u8);
    let key_len = u32::try_from(key.len()).expect("a key fits in 4 GiB");
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key);
    match value {
        Some(v) => {
            let len = u32::try_from(v.len())
                .ok()
                .filter(|&l| l != REMOVED)
                .expect("a value fits in 4 GiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(v);
        }
        None => out.extend_from_slice(&REMOVED.to_le_bytes()),
    }
}

/// One row of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row<'a> {
    pub(crate) tag: TableTag,
    pub(crate) key: &'a [u8],
    /// `None`: the row was removed.
    pub(crate) value: Option<&'a [u8]>,
}

/// The rows of a payload whose checksum held; one that does not parse is an error, as its
/// entry was written whole by this code.
pub(crate) fn rows(mut payload: &[u8]) -> Result<Vec<Row<'_>>, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err("a row log entry ends inside a row".into());
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    let mut rows = Vec::new();
    while !payload.is_empty() {
        let tag = take(&mut payload, 1)?[0];
        let tag = TableTag::of_byte(tag)
            .ok_or_else(|| format!("a row log entry names an unknown table, tag {tag}"))?;
        let key_len = u32_at(take(&mut payload, 4)?, 0) as usize;
        let key = take(&mut payload, key_len)?;
        let value = match u32_at(take(&mut payload, 4)?, 0) {
            REMOVED => None,
            len => Some(take(&mut payload, len as usize)?),
        };
        rows.push(Row { tag, key, value });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row as the tests spell it: table, key, value (`None`: removed).
    type Spelled<'a> = (TableTag, &'a [u8], Option<&'a [u8]>);

    fn payload(rows: &[Spelled<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, key, value) in rows {
            encode_row(&mut out, *tag, key, *value);
        }
        out
    }

    #[test]
    fn rows_round_trip_with_removals_and_empty_values() {
        let rows_in = [
            (TableTag::Data, &b"k1"[..], Some(&b"value"[..])),
            (TableTag::Meta, b"m", None),
            (TableTag::Registry, b"", Some(&b""[..])),
        ];
        let p = payload(&rows_in);
        let out = rows(&p).unwrap();
        let back: Vec<_> = out.iter().map(|r| (r.tag, r.key, r.value)).collect();
        assert_eq!(back, rows_in);
        assert!(rows(&p[..p.len() - 1]).is_err());
    }

    #[test]
    fn a_chain_ends_at_a_torn_entry_a_gap_or_another_epoch() {
        let mut file = Vec::new();
        for lsn in 5..9 {
            encode_entry(
                &mut file,
                3,
                lsn,
                1,
                &payload(&[(TableTag::Data, b"k", None)]),
            );
        }
        let whole = chain(&file, 3);
        assert_eq!(
            whole.iter().map(|e| e.lsn).collect::<Vec<_>>(),
            [5, 6, 7, 8]
        );
        assert!(
            chain(&file, 2).is_empty(),
            "another epoch's entries are not read"
        );
        // Torn: the last entry cut short, or one byte of it flipped.
        assert_eq!(chain(&file[..file.len() - 1], 3).len(), 3);
        let mut flipped = file.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(chain(&flipped, 3).len(), 3);
        // An older entry left after the chain's end does not follow it.
        let mut stale = file.clone();
        encode_entry(&mut stale, 3, 2, 0, b"");
        encode_entry(&mut stale, 3, 9, 1, b"");
        assert_eq!(chain(&stale, 3).len(), 4);
        // Zeros, as in a file grown but never written.
        let mut zeros = file.clone();
        zeros.extend_from_slice(&[0; 100]);
        assert_eq!(chain(&zeros, 3).len(), 4);
    }
}
