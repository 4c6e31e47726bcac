//! Where a prune step cuts: pure functions over the oldest rows' heights and timestamps.

/// The first height to keep when `excess` rows should go: below it lie at most `excess` rows
/// in whole heights, or the oldest height alone when it holds more.
pub(super) fn count_cut(oldest: &[(u64, u64)], excess: u64) -> Option<u64> {
    let (first, _) = *oldest.first()?;
    let n = usize::try_from(excess).unwrap_or(usize::MAX);
    let cut = match oldest.get(n) {
        Some((height, _)) => *height,
        // Every row of the chain was read: the last height goes too.
        None => oldest.last().map_or(first, |(height, _)| height + 1),
    };
    Some(cut.max(first + 1))
}

/// The first height to keep by age: the first row at or after `before`. When every row read
/// has expired, the last height read is kept (it may have more rows than were read) unless
/// every row of the chain was read.
pub(super) fn age_cut(oldest: &[(u64, u64)], before: u64, max_rows: u64) -> Option<u64> {
    let (first, first_ts) = *oldest.first()?;
    if first_ts >= before {
        return None;
    }
    let cut = match oldest.iter().find(|(_, ts)| *ts >= before) {
        Some((height, _)) => *height,
        None if (oldest.len() as u64) > max_rows => oldest.last().map_or(first, |(h, _)| *h),
        None => oldest.last().map_or(first, |(h, _)| h + 1),
    };
    Some(cut.max(first + 1))
}

/// Distinct heights below `cut` among the rows read.
pub(super) fn heights_below(oldest: &[(u64, u64)], cut: u64) -> u64 {
    let mut heights = 0;
    let mut last = None;
    for (height, _) in oldest.iter().take_while(|(h, _)| *h < cut) {
        if last != Some(*height) {
            heights += 1;
            last = Some(*height);
        }
    }
    heights
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as (height, timestamp): heights 10, 10, 11, 12, 12, 12, 13.
    fn rows() -> Vec<(u64, u64)> {
        [10, 10, 11, 12, 12, 12, 13]
            .into_iter()
            .map(|h| (h, h * 100))
            .collect()
    }

    #[test]
    fn a_count_cut_deletes_whole_heights_and_at_most_the_excess() {
        let rows = rows();
        assert_eq!(
            count_cut(&rows, 1),
            Some(11),
            "the oldest height goes whole"
        );
        assert_eq!(count_cut(&rows, 2), Some(11));
        assert_eq!(count_cut(&rows, 3), Some(12));
        assert_eq!(count_cut(&rows, 4), Some(12), "height 12 would overshoot");
        assert_eq!(count_cut(&rows, 6), Some(13));
        assert_eq!(count_cut(&rows, 100), Some(14), "every row read: all go");
        assert_eq!(count_cut(&[], 5), None);
    }

    #[test]
    fn an_age_cut_keeps_the_first_unexpired_height() {
        let rows = rows();
        assert_eq!(age_cut(&rows, 1000, 100), None, "nothing expired");
        assert_eq!(age_cut(&rows, 1100, 100), Some(11));
        assert_eq!(age_cut(&rows, 1250, 100), Some(13));
        assert_eq!(age_cut(&rows, 9999, 100), Some(14), "all expired, all read");
        // Seven rows read of a limit of six: the last height read may have more rows.
        assert_eq!(age_cut(&rows, 9999, 6), Some(13));
    }

    #[test]
    fn heights_are_counted_once() {
        assert_eq!(heights_below(&rows(), 13), 3);
        assert_eq!(heights_below(&rows(), 10), 0);
    }
}
