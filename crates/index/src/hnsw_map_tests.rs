//! Tests of loading a graph by mapping its file: the same graph as a read, growth past the
//! mapping that moves the file's pages, a file that never changes, and closed decoding.
//! (Linux on little-endian machines only: elsewhere nothing is mapped.)

use std::io::Write;

use super::GraphMap;
use crate::error::IndexError;
use crate::hnsw::{HnswIndex, HnswParams};
use crate::metric::Metric;

const DIM: usize = 16;

/// The format tests' large graph (16-d, cosine, rows above the 1 MiB from which they map).
fn large() -> HnswIndex {
    crate::hnsw_format::tests::large_graph()
}

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(bytes).expect("write");
    f.flush().expect("flush");
    f
}

fn map_load(bytes: &[u8]) -> Result<HnswIndex, IndexError> {
    let f = file_with(bytes);
    // SAFETY: the test's own temporary file, not written while mapped.
    let map = unsafe { GraphMap::new(f.as_file(), bytes.len() as u64) }.expect("map");
    assert!(map.bytes() == bytes);
    HnswIndex::from_map(map, DIM, Metric::Cosine, HnswParams::default())
}

#[test]
fn a_mapped_graph_is_the_graph_that_was_saved_and_grows_without_touching_its_file() {
    let mut g = large();
    let bytes = g.to_bytes().expect("to_bytes");
    let f = file_with(&bytes);
    // SAFETY: the test's own temporary file, not written while mapped.
    let map = unsafe { GraphMap::new(f.as_file(), bytes.len() as u64) }.expect("map");
    let mut back =
        HnswIndex::from_map(map, DIM, Metric::Cosine, HnswParams::default()).expect("from_map");
    assert!(
        back.graph.rows.maps_a_file(),
        "large rows stay in the file's pages"
    );
    assert!(
        back.to_bytes().expect("to_bytes") == bytes,
        "the bytes differ"
    );
    let query = crate::testdata::queries(1, DIM, 10, 3, 9).remove(0);
    assert_eq!(
        back.search(&query, 10, None).expect("search"),
        g.search(&query, 10, None).expect("search")
    );

    // 20,000 inserts: each writes into rows of the file's pages (reverse links), and the
    // rows grow past the mapping several times, moving its pages. The same inserts into the
    // original give the same bytes, and the file is as it was written.
    let more = crate::testdata::clustered(20_000, DIM, 10, 4);
    for (i, v) in more.iter().enumerate() {
        let slot = 20_000 + i as u32;
        g.insert(slot, v).expect("insert");
        back.insert(slot, v).expect("insert");
    }
    let grown = back.to_bytes().expect("to_bytes");
    assert!(grown == g.to_bytes().expect("to_bytes"), "the bytes differ");
    assert_eq!(back.encoded_len(), grown.len());
    assert!(back.graph.rows.maps_a_file());
    // (`assert!`, not `assert_eq!`: a failure would print megabytes.)
    assert!(
        std::fs::read(f.path()).expect("read") == bytes,
        "the file changed"
    );

    // The grown graph saves and maps again.
    let again = map_load(&grown).expect("the grown graph loads");
    assert!(
        again.to_bytes().expect("to_bytes") == grown,
        "the bytes differ"
    );
}

#[test]
fn large_rows_start_page_aligned_at_the_end_of_the_file() {
    let g = large();
    let bytes = g.to_bytes().expect("to_bytes");
    let rows = g.graph.words().len() * 4;
    assert!(rows >= crate::hnsw_rows::MAP_BYTES);
    assert_eq!((bytes.len() - rows) % crate::hnsw_format::ROW_ALIGN, 0);
}

#[test]
fn small_and_version_3_graphs_load_from_a_mapping_by_a_copy() {
    let mut small = HnswIndex::new(DIM, Metric::Cosine, HnswParams::default()).expect("new");
    for (i, v) in crate::testdata::clustered(100, DIM, 10, 3)
        .iter()
        .enumerate()
    {
        small.insert(i as u32, v).expect("insert");
    }
    let bytes = small.to_bytes().expect("to_bytes");
    let back = map_load(&bytes).expect("small");
    assert!(!back.graph.rows.maps_a_file());
    assert!(
        back.to_bytes().expect("to_bytes") == bytes,
        "the bytes differ"
    );

    let g = large();
    let v5 = g.to_bytes().expect("to_bytes");
    let mut v3 = v5[..21].to_vec();
    v3[..8].copy_from_slice(b"STRHNSW3");
    v3.extend_from_slice(&g.body_layout_1());
    let back = map_load(&v3).expect("version 3");
    assert!(
        !back.graph.rows.maps_a_file(),
        "layout 1's rows are not last"
    );
    assert!(back.to_bytes().expect("to_bytes") == v5, "the bytes differ");
}

#[test]
fn damaged_mapped_files_are_refused() {
    let g = large();
    let good = g.to_bytes().expect("to_bytes");
    let rows = g.graph.words().len() * 4;
    let rows_at = good.len() - rows;
    let corrupt = |bytes: &[u8]| matches!(map_load(bytes), Err(IndexError::Corrupt { .. }));
    // A byte short, a byte over.
    assert!(corrupt(&good[..good.len() - 1]));
    let mut longer = good.clone();
    longer.push(0);
    assert!(corrupt(&longer));
    // A padding byte that is not zero, and a padding length other than the one that puts the
    // rows where they belong (the bytes shifted to keep the file's length).
    let mut pad = good.clone();
    pad[rows_at - 1] = 1;
    assert!(corrupt(&pad));
    let pad_at = 25 + 20;
    let written = u32::from_le_bytes(good[pad_at..pad_at + 4].try_into().unwrap());
    assert!(written > 0);
    let mut shifted = good.clone();
    shifted[pad_at..pad_at + 4].copy_from_slice(&(written - 64).to_le_bytes());
    shifted.drain(rows_at - 64..rows_at);
    shifted.extend_from_slice(&[0; 64]);
    assert!(corrupt(&shifted));
    // A link count above the capacity in the first row, a link to no node in the last.
    let count_at = rows_at + DIM * 4;
    let mut count = good.clone();
    count[count_at..count_at + 4].copy_from_slice(&1_000u32.to_le_bytes());
    assert!(corrupt(&count));
    let last_count_at = good.len() - g.graph.stride * 4 + DIM * 4;
    let mut link = good.clone();
    link[last_count_at..last_count_at + 4].copy_from_slice(&1u32.to_le_bytes());
    link[last_count_at + 4..last_count_at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(corrupt(&link));
}

#[test]
fn empty_files_and_files_of_another_length_are_not_mapped() {
    // SAFETY (each `GraphMap::new`): the test's own temporary files, not written while mapped.
    let f = file_with(&[]);
    assert!(unsafe { GraphMap::new(f.as_file(), 0) }.is_err());
    let f = file_with(&[1; 100]);
    let map = |len| unsafe { GraphMap::new(f.as_file(), len) };
    assert!(map(101).is_err(), "longer than the file");
    assert!(map(99).is_err(), "shorter than the file");
    assert_eq!(map(100).expect("map").bytes(), &[1; 100]);
}

/// The mappings (lines of `/proc/self/maps`) that overlap `bytes` bytes from `at`.
fn mappings_over(at: usize, bytes: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    maps.lines()
        .filter_map(|l| {
            let range = l.split_whitespace().next()?;
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .filter(|&(a, b)| a < at + bytes && b > at)
        .count()
}

/// Rows that took a file's pages grow again and again (each time moving the file's pages and
/// the anonymous ones after them) and stay two mappings: the file's and one anonymous. A
/// third would make the next growth fail on kernels before 6.17, whose `mremap` takes a single
/// mapping only. Every line is kept and the new ones are zero.
#[test]
fn rows_on_a_file_stay_two_mappings_however_often_they_grow() {
    let g = large();
    let bytes = g.to_bytes().expect("to_bytes");
    let mut back = map_load(&bytes).expect("load");
    let mut rows = std::mem::replace(&mut back.graph.rows, crate::hnsw_rows::Rows::new());
    assert!(rows.maps_a_file());
    let original = rows.bytes_mut().to_vec();
    let line = size_of::<crate::hnsw_graph::Line>();
    for round in 0..6 {
        let len = rows.len();
        rows.grow_zeroed(len * 2);
        // Writes into the anonymous part too, as inserts do.
        rows.bytes_mut()[len * line] = round + 1;
        let (at, cap) = (rows.as_ptr() as usize, rows.resident_bytes());
        assert_eq!(mappings_over(at, cap), 2, "round {round}");
    }
    let all = rows.bytes_mut();
    assert!(
        all[..original.len()] == original[..],
        "the file's lines are kept"
    );
    let mut marks = Vec::new();
    for (i, &b) in all[original.len()..].iter().enumerate() {
        if b != 0 {
            marks.push((i + original.len()) / line);
        }
    }
    let n = original.len() / line;
    let expected: Vec<usize> = (0..6).map(|r| n << r).collect();
    assert_eq!(marks, expected, "only the written lines are not zero");
}
