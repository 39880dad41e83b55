//! Deciding what `compact` does with each blob of an image (no I/O here).
//!
//! Input: per blob, its data size, the bytes of the chunks the bootstrap
//! still references in it, and whether it may be rewritten at all. Rules,
//! following upstream's compactor:
//! * nothing happens when the image has fewer blobs than
//!   `layers_to_compact` (0: always try);
//! * a blob no chunk references any more is dropped from the blob table;
//! * a blob whose used ratio (`used / data`) is below `min_used_ratio`
//!   percent is rewritten with only its used chunks (0 disables this);
//! * blobs smaller than `compact_blob_size` (a blob to be rewritten counts
//!   with its used bytes) are merged, smallest first, into new blobs of at
//!   most `max_compact_size` used bytes; only blobs sharing a chunk
//!   compressor are merged (a blob has one compressor).
//!
//! Blobs that may not be rewritten (shared chunk-dictionary blobs, blob
//! kinds whose data this builder cannot read) are kept whatever their
//! figures, unless nothing references them.

/// What the planner knows about one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobUsage {
    /// Bytes of chunk data in the blob (its size without the chunk table).
    pub data_size: u64,
    /// Stored bytes of the distinct chunks the bootstrap references in it.
    pub used_bytes: u64,
    /// Does any chunk of the bootstrap reference the blob?
    pub referenced: bool,
    /// May the blob be rewritten or merged?
    pub movable: bool,
    /// Blobs are merged only with blobs of the same key (the compressor id).
    pub merge_key: u32,
}

/// The thresholds of `compact.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Rewrite blobs whose used ratio is below this percentage (0: never).
    pub min_used_ratio: u8,
    /// Merge blobs smaller than this many bytes.
    pub compact_blob_size: u64,
    /// A merged blob holds at most this many bytes of chunk data.
    pub max_compact_size: u64,
    /// Compact only images with at least this many blobs (0: always).
    pub layers_to_compact: usize,
}

/// What happens to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Stays in the blob table as it is.
    Keep,
    /// Leaves the blob table: nothing references it.
    Drop,
    /// Its used chunks go into new blob number `n` ([`Plan::groups`]).
    Rewrite(usize),
}

/// The decision for a whole image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Per blob, in blob-table order.
    pub fates: Vec<Fate>,
    /// Per new blob: the old blobs whose used chunks it receives, ascending.
    pub groups: Vec<Vec<usize>>,
    /// Per blob: rewritten because of its low used ratio.
    pub low_ratio: Vec<bool>,
    /// The image has fewer blobs than `layers_to_compact`: nothing planned.
    pub too_few_blobs: bool,
}

impl Plan {
    /// Does the plan change nothing?
    pub fn is_noop(&self) -> bool {
        self.fates.iter().all(|f| *f == Fate::Keep)
    }
}

/// Used ratio below `min` percent? (Exact: `used / data < min / 100`, the
/// same as upstream's truncated percentage compared with an integer.)
fn below_ratio(b: &BlobUsage, min: u8) -> bool {
    min > 0 && (b.used_bytes as u128) * 100 < (min as u128) * (b.data_size as u128)
}

/// Plan the compaction of `blobs` under `t`.
pub fn plan(blobs: &[BlobUsage], t: &Thresholds) -> Plan {
    let n = blobs.len();
    let mut plan =
        Plan { fates: vec![Fate::Keep; n], groups: Vec::new(), low_ratio: vec![false; n], too_few_blobs: false };
    if n < t.layers_to_compact {
        plan.too_few_blobs = true;
        return plan;
    }
    for (i, b) in blobs.iter().enumerate() {
        if !b.referenced {
            plan.fates[i] = Fate::Drop;
        } else if b.movable {
            plan.low_ratio[i] = below_ratio(b, t.min_used_ratio);
        }
    }
    // Size a blob counts with when merging: what it would hold after this run.
    let size = |i: usize| if plan.low_ratio[i] { blobs[i].used_bytes } else { blobs[i].data_size };
    let mut candidates: Vec<usize> =
        (0..n).filter(|&i| blobs[i].referenced && blobs[i].movable && size(i) < t.compact_blob_size).collect();
    candidates.sort_by_key(|&i| (blobs[i].merge_key, size(i), i));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut cur_bytes = 0u64;
    for i in candidates {
        let fits = cur.first().is_some_and(|&f| blobs[f].merge_key == blobs[i].merge_key)
            && cur_bytes.saturating_add(blobs[i].used_bytes) <= t.max_compact_size;
        if !fits {
            groups.extend((cur.len() > 1).then(|| std::mem::take(&mut cur)));
            cur.clear();
            cur_bytes = 0;
        }
        cur.push(i);
        cur_bytes += blobs[i].used_bytes;
    }
    groups.extend((cur.len() > 1).then_some(cur));
    let grouped: Vec<usize> = groups.iter().flatten().copied().collect();
    groups.extend((0..n).filter(|i| plan.low_ratio[*i] && !grouped.contains(i)).map(|i| vec![i]));
    for g in groups.iter_mut() {
        g.sort_unstable();
    }
    // New blobs take the table position of their first source blob.
    groups.sort_by_key(|g| g[0]);
    for (k, g) in groups.iter().enumerate() {
        for &i in g {
            plan.fates[i] = Fate::Rewrite(k);
        }
    }
    plan.groups = groups;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn blob(data: u64, used: u64) -> BlobUsage {
        BlobUsage { data_size: data, used_bytes: used, referenced: used > 0, movable: true, merge_key: 1 }
    }

    fn th(ratio: u8, small: u64, max: u64) -> Thresholds {
        Thresholds { min_used_ratio: ratio, compact_blob_size: small, max_compact_size: max, layers_to_compact: 0 }
    }

    #[test]
    fn low_ratio_blobs_are_rewritten_alone() {
        let blobs = [blob(100 * MIB, 5 * MIB), blob(100 * MIB, 90 * MIB), blob(100 * MIB, 10 * MIB)];
        let p = plan(&blobs, &th(10, 0, 0));
        // 5% < 10% is rewritten; exactly 10% is not.
        assert_eq!(p.fates, vec![Fate::Rewrite(0), Fate::Keep, Fate::Keep]);
        assert_eq!(p.groups, vec![vec![0]]);
        assert_eq!(p.low_ratio, vec![true, false, false]);
        let p = plan(&blobs, &th(11, 0, 0));
        assert_eq!(p.fates, vec![Fate::Rewrite(0), Fate::Keep, Fate::Rewrite(1)]);
    }

    #[test]
    fn ratio_zero_disables_rewriting() {
        let p = plan(&[blob(100 * MIB, 1)], &th(0, 0, 0));
        assert!(p.is_noop());
        assert!(!p.too_few_blobs);
    }

    #[test]
    fn small_blobs_merge_smallest_first_up_to_the_maximum() {
        // Sizes 4, 1, 3, 2 and one large blob; merge limit 6: the smallest
        // first gives {1,2,3} = 6, then 4 would overflow and starts a group
        // of its own (alone, so it is kept).
        let blobs = [blob(4, 4), blob(1, 1), blob(3, 3), blob(2, 2), blob(100, 100)];
        let p = plan(&blobs, &th(0, 10, 6));
        assert_eq!(p.groups, vec![vec![1, 2, 3]]);
        assert_eq!(p.fates, vec![Fate::Keep, Fate::Rewrite(0), Fate::Rewrite(0), Fate::Rewrite(0), Fate::Keep]);
    }

    #[test]
    fn merged_size_counts_used_bytes_only() {
        // Two 8-byte blobs mostly unused: 2 + 2 used fits a limit of 4.
        let blobs = [blob(8, 2), blob(8, 2)];
        assert_eq!(plan(&blobs, &th(0, 10, 4)).groups, vec![vec![0, 1]]);
        assert!(plan(&blobs, &th(0, 10, 3)).is_noop());
        // Not smaller than compact_blob_size: not merged.
        assert!(plan(&blobs, &th(0, 8, 100)).is_noop());
    }

    #[test]
    fn a_rewritten_blob_counts_with_its_used_bytes_when_merging() {
        // Blob 0 is large but 1% used: once rewritten it is small and joins
        // the merge of the small blob 1.
        let blobs = [blob(1000, 10), blob(20, 20), blob(1000, 900)];
        let p = plan(&blobs, &th(5, 50, 100));
        assert_eq!(p.groups, vec![vec![0, 1]]);
        assert_eq!(p.fates, vec![Fate::Rewrite(0), Fate::Rewrite(0), Fate::Keep]);
        assert_eq!(p.low_ratio, vec![true, false, false]);
    }

    #[test]
    fn unreferenced_blobs_are_dropped_and_never_merged() {
        let blobs = [blob(5, 0), blob(5, 5), blob(5, 5)];
        let p = plan(&blobs, &th(0, 10, 100));
        assert_eq!(p.fates, vec![Fate::Drop, Fate::Rewrite(0), Fate::Rewrite(0)]);
        assert_eq!(p.groups, vec![vec![1, 2]]);
    }

    #[test]
    fn pinned_blobs_are_kept_whatever_their_figures() {
        let mut pinned = blob(1000, 1);
        pinned.movable = false;
        let blobs = [pinned, blob(5, 5), blob(5, 5)];
        let p = plan(&blobs, &th(50, 2000, 10_000));
        assert_eq!(p.fates, vec![Fate::Keep, Fate::Rewrite(0), Fate::Rewrite(0)]);
        // Unreferenced, even a pinned blob leaves the table.
        pinned.referenced = false;
        assert_eq!(plan(&[pinned], &th(50, 2000, 10_000)).fates, vec![Fate::Drop]);
    }

    #[test]
    fn only_blobs_of_one_compressor_merge() {
        let mut lz4 = blob(5, 5);
        lz4.merge_key = 2;
        let blobs = [blob(5, 5), lz4, blob(6, 6), lz4];
        let p = plan(&blobs, &th(0, 10, 100));
        assert_eq!(p.groups, vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn too_few_blobs_means_nothing_happens() {
        let blobs = [blob(100, 1), blob(100, 0)];
        let mut t = th(50, 1000, 1000);
        t.layers_to_compact = 3;
        let p = plan(&blobs, &t);
        assert!(p.too_few_blobs && p.is_noop());
        // At least layers_to_compact blobs (upstream: >=): compacted.
        t.layers_to_compact = 2;
        let p = plan(&blobs, &t);
        assert!(!p.too_few_blobs);
        assert_eq!(p.fates, vec![Fate::Rewrite(0), Fate::Drop]);
    }

    #[test]
    fn new_blobs_are_numbered_by_their_first_source() {
        // The 1-byte blob 3 is the smallest, but the group's table position
        // is that of blob 1.
        let blobs = [blob(100, 100), blob(3, 3), blob(100, 1), blob(1, 1)];
        let p = plan(&blobs, &th(50, 10, 10));
        assert_eq!(p.groups, vec![vec![1, 2, 3]]);
        assert_eq!(p.fates, vec![Fate::Keep, Fate::Rewrite(0), Fate::Rewrite(0), Fate::Rewrite(0)]);
        // Blob 1 is not small enough any more: blobs 2 (1% used) and 3 merge.
        let p = plan(&blobs, &th(50, 2, 10));
        assert_eq!(p.groups, vec![vec![2, 3]]);
    }
}
