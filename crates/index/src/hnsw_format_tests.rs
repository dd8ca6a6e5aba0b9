//! Tests of the persisted graph format: golden bytes, and closed decoding of damaged bodies.

use crate::error::IndexError;
use crate::hnsw::{HnswIndex, HnswParams};
use crate::metric::Metric;

/// Three 2-d vectors under slots 10, 20 and 30, m = 2, L2: small enough to spell out.
fn tiny() -> HnswIndex {
    let params = HnswParams {
        m: 2,
        ..HnswParams::default()
    };
    let mut g = HnswIndex::new(2, Metric::L2, params).expect("new");
    g.insert(10, &[0.0, 0.0]).expect("insert");
    g.insert(20, &[1.0, 0.0]).expect("insert");
    g.insert(30, &[0.0, 2.0]).expect("insert");
    g.remove(20).expect("remove");
    g
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The exact bytes of `tiny()`. If this test fails, the format changed: bump the version in
/// `MAGIC` (old graphs are then rebuilt by the engine, unless they still load) and update
/// these bytes.
const GOLDEN: &str = concat!(
    // header: STRHNSW5, dim 2, metric l2, not calibrated (ef 0, 0 vectors), built with
    // ef_construction 128
    "535452484e5357350200000003000000000000000080000000",
    // m 2, 3 nodes, entry node 2, max level 5, stride 16, no padding (rows below 1 MiB)
    "020000000300000002000000050000001000000000000000",
    // labels 10 20 30
    "0a000000140000001e000000",
    // levels 2 0 5
    "020005",
    // tombstones: node 1
    "000100",
    // upper links of node 0 (levels 1-2)
    "010000000200000000000000010000000200000000000000",
    // upper links of node 2 (levels 1-5)
    "0100000000000000000000000100000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    // row 0: (0, 0), 2 links: 1 2
    "0000000000000000020000000100000002000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    // row 1: (1, 0), 2 links: 0 2
    "0000803f00000000020000000000000002000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    // row 2: (0, 2), 2 links: 0 1
    "0000000000000040020000000000000001000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
);

/// The same graph as version 3 wrote it (layout 1: the rows before the upper links, no
/// padding field): still loaded, by a copy, as the same graph.
const GOLDEN_V3: &str = concat!(
    "535452484e53573302000000030000000000000000",
    "0200000003000000020000000500000010000000",
    "0a000000140000001e000000",
    "020005",
    "000100",
    "0000000000000000020000000100000002000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000803f00000000020000000000000002000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000040020000000000000001000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "010000000200000000000000010000000200000000000000",
    "0100000000000000000000000100000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
);

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn a_version_3_graph_loads_as_the_same_graph() {
    let v5 = tiny().to_bytes().expect("to_bytes");
    let mut v3 = v5[..21].to_vec();
    v3[..8].copy_from_slice(b"STRHNSW3");
    v3.extend_from_slice(&tiny().body_layout_1());
    assert_eq!(hex(&v3), GOLDEN_V3, "layout 1 as version 3 wrote it");
    let g = load(&unhex(GOLDEN_V3)).expect("load");
    assert_eq!(hex(&g.to_bytes().expect("to_bytes")), GOLDEN);
}

/// Version 4 did not record the construction beam: such a graph loads as built with the one
/// given, and is otherwise the same graph.
#[test]
fn a_version_4_graph_loads_with_the_beam_given() {
    let v5 = tiny().to_bytes().expect("to_bytes");
    let mut v4 = v5[..21].to_vec();
    v4[..8].copy_from_slice(b"STRHNSW4");
    v4.extend_from_slice(&v5[25..]);
    let params = HnswParams {
        m: 2,
        ef_construction: 40,
        ..HnswParams::default()
    };
    let g = HnswIndex::from_bytes(&v4, 2, Metric::L2, params).expect("load v4");
    assert_eq!(g.params().ef_construction, 40);
    assert_eq!(g.len(), 2);
}

/// A version-5 graph loads as built with the beam it records, whatever the one given: the
/// engine compares it with its tenant's to know whether the graph needs a rebuild.
#[test]
fn a_graph_keeps_the_construction_beam_it_was_built_with() {
    let built = HnswParams {
        m: 2,
        ef_construction: 77,
        ..HnswParams::default()
    };
    let mut g = HnswIndex::new(2, Metric::L2, built).expect("new");
    g.insert(1, &[0.0, 1.0]).expect("insert");
    let bytes = g.to_bytes().expect("to_bytes");
    let back = load(&bytes).expect("load");
    assert_eq!(back.params().ef_construction, 77);
    assert_eq!(back.params().m, 2);
    // A beam of 0, or above what any graph records, is a damaged header.
    for beam in [0u32, (1 << 16) + 1] {
        let mut bad = bytes.clone();
        bad[21..25].copy_from_slice(&beam.to_le_bytes());
        assert!(
            matches!(load(&bad), Err(IndexError::Corrupt { .. })),
            "{beam}"
        );
    }
}

#[test]
fn golden_bytes() {
    let bytes = tiny().to_bytes().expect("to_bytes");
    assert_eq!(hex(&bytes), GOLDEN);
}

fn load(bytes: &[u8]) -> Result<HnswIndex, IndexError> {
    let params = HnswParams {
        m: 2,
        ..HnswParams::default()
    };
    HnswIndex::from_bytes(bytes, 2, Metric::L2, params)
}

#[test]
fn the_golden_bytes_load_and_answer() {
    let bytes = tiny().to_bytes().expect("to_bytes");
    let g = load(&bytes).expect("load");
    assert_eq!(g.len(), 2);
    assert!(g.contains(10) && g.contains(30) && !g.contains(20));
    let hits = g.search(&[1.0, 0.0], 3, None).expect("search");
    let slots: Vec<u32> = hits.iter().map(|h| h.slot).collect();
    assert_eq!(slots, vec![10, 30]);
}

/// Offset of the first level-0 link count in `tiny()`'s bytes: header (25), graph header
/// (24), labels (12), levels (3), tombstones (3), upper links (24 + 60), then the first row's
/// 2-float vector.
const FIRST_COUNT: usize = 25 + 24 + 12 + 3 + 3 + 24 + 60 + 8;

#[test]
fn damaged_bodies_are_refused() {
    let good = tiny().to_bytes().expect("to_bytes");
    let corrupt = |bytes: &[u8]| matches!(load(bytes), Err(IndexError::Corrupt { .. }));
    // Padding of 64 KiB or more.
    let mut pad = good.clone();
    pad[25 + 20..25 + 24].copy_from_slice(&(64u32 << 10).to_le_bytes());
    assert!(corrupt(&pad));
    // The usearch-era format (version 1) is refused, so the engine rebuilds the graph.
    let mut v1 = good.clone();
    v1[..8].copy_from_slice(b"STRHNSW1");
    assert!(corrupt(&v1));
    // Every truncation, and a trailing byte.
    for cut in 0..good.len() {
        assert!(load(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(corrupt(&longer));
    // A link count above the capacity, and a link to a node that does not exist.
    let mut count = good.clone();
    count[FIRST_COUNT] = 5;
    assert!(corrupt(&count));
    let mut link = good.clone();
    link[FIRST_COUNT + 4..FIRST_COUNT + 8].copy_from_slice(&7u32.to_le_bytes());
    assert!(corrupt(&link));
    // A node count far beyond the bytes present is refused before anything is allocated.
    let mut nodes = good.clone();
    nodes[25 + 4..25 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(corrupt(&nodes));
    // A tombstone flag that is neither 0 nor 1.
    let mut flag = good.clone();
    flag[25 + 24 + 12 + 3] = 2;
    assert!(corrupt(&flag));
}

/// A 16-d cosine graph of 5,000 nodes under slots 0, 3, 6, … with 300 tombstones: every
/// section of the body has bytes, and its rows (5,000 × 256 bytes) are above the 1 MiB from
/// which a file's rows are mapped (`hnsw_map_tests.rs`).
pub(crate) fn large_graph() -> HnswIndex {
    let vectors = crate::testdata::clustered(5_000, 16, 10, 3);
    let mut g = HnswIndex::new(16, Metric::Cosine, HnswParams::default()).expect("new");
    let items: Vec<(u32, &[f32])> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32 * 3, v.as_slice()))
        .collect();
    g.insert_batch(&items, 1).expect("insert");
    for slot in (0..300).map(|s| s * 3) {
        g.remove(slot).expect("remove");
    }
    g
}

#[test]
fn a_large_graph_round_trips_quickly_enough_to_test() {
    let mut g = large_graph();
    let bytes = g.to_bytes().expect("to_bytes");
    let back = HnswIndex::from_bytes(&bytes, 16, Metric::Cosine, HnswParams::default())
        .expect("from_bytes");
    assert_eq!(back.to_bytes().expect("to_bytes"), bytes);
    assert_eq!(back.len(), g.len());
    assert_eq!(back.encoded_len(), bytes.len());

    // The loaded graph grows (its rows, a mapping past 1 MiB, are remapped) and keeps every
    // node: the same inserts into the original and the loaded graph give the same bytes, and
    // the size kept as nodes are added is the size of what is written.
    let more = crate::testdata::clustered(20_000, 16, 10, 4);
    let mut back = back;
    for (i, v) in more.iter().enumerate() {
        let slot = 20_000 + i as u32;
        g.insert(slot, v).expect("insert");
        back.insert(slot, v).expect("insert");
    }
    let grown = back.to_bytes().expect("to_bytes");
    assert_eq!(grown, g.to_bytes().expect("to_bytes"));
    assert_eq!(back.encoded_len(), grown.len());
}

/// A reader that hands out at most `step` bytes per call, like a pipe or a slow file.
struct Trickle<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

/// Streams in and out give exactly the bytes and the graph of `to_bytes` and `from_bytes`,
/// whatever sizes the reads come in; a stream shorter than announced, or an announced length
/// that leaves bytes over, is refused.
#[test]
fn streams_read_and_write_the_same_bytes() {
    let vectors = crate::testdata::clustered(2_000, 16, 10, 3);
    let mut g = HnswIndex::new(16, Metric::L2, HnswParams::default()).expect("new");
    for (i, v) in vectors.iter().enumerate() {
        g.insert(i as u32, v).expect("insert");
    }
    let bytes = g.to_bytes().expect("to_bytes");
    let mut written = Vec::new();
    g.write_to(&mut written).expect("write_to");
    assert_eq!(written, bytes);
    assert_eq!(g.encoded_len(), bytes.len());
    for step in [1, 7, 4096, usize::MAX] {
        let mut r = Trickle {
            bytes: &bytes,
            step,
        };
        let back = HnswIndex::read_from(
            &mut r,
            bytes.len() as u64,
            16,
            Metric::L2,
            HnswParams::default(),
        )
        .expect("read_from");
        assert_eq!(back.to_bytes().expect("to_bytes"), bytes, "step {step}");
    }
    let short = &bytes[..bytes.len() - 1];
    let mut r = Trickle {
        bytes: short,
        step: 4096,
    };
    let cut = HnswIndex::read_from(
        &mut r,
        bytes.len() as u64,
        16,
        Metric::L2,
        HnswParams::default(),
    );
    assert!(matches!(cut, Err(IndexError::Corrupt { .. })));
    let mut r = Trickle {
        bytes: &bytes,
        step: 4096,
    };
    let over = HnswIndex::read_from(
        &mut r,
        bytes.len() as u64 + 1,
        16,
        Metric::L2,
        HnswParams::default(),
    );
    assert!(matches!(over, Err(IndexError::Corrupt { .. })));
}
