//! The `Range` request header, single ranges only (RFC 9110 §14).
//!
//! Blob readers ask for one byte range at a time, so that is all this
//! server answers with a 206. A header it cannot honour as one byte range
//! (another unit, a malformed spec, a list of ranges) is ignored, as the
//! RFC allows, and the whole blob is served.

/// What to send for a request, given the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The whole blob, 200.
    Whole,
    /// Bytes `start..=end`, 206 with `Content-Range: bytes start-end/size`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Nothing of the blob is in the range: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// A syntactically valid single byte range, before it meets the blob size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `a-b` (`b` inclusive) or `a-` (`b` = None).
    From(u64, Option<u64>),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

fn parse_spec(header: &str) -> Option<Spec> {
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let set = set.trim();
    if set.contains(',') {
        return None;
    }
    let (a, b) = set.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => None,
        (true, false) => Some(Spec::Suffix(num(b)?)),
        (false, true) => Some(Spec::From(num(a)?, None)),
        (false, false) => {
            let (a, b) = (num(a)?, num(b)?);
            (a <= b).then_some(Spec::From(a, Some(b)))
        }
    }
}

/// Decide what to send for `header` (the `Range` value, if any) on a blob
/// of `size` bytes.
pub fn select(header: Option<&str>, size: u64) -> Selection {
    let Some(spec) = header.and_then(parse_spec) else {
        return Selection::Whole;
    };
    match spec {
        Spec::From(start, _) if start >= size => Selection::Unsatisfiable,
        Spec::From(start, end) => {
            let last = size - 1;
            Selection::Part { start, end: end.map_or(last, |e| e.min(last)) }
        }
        Spec::Suffix(0) => Selection::Unsatisfiable,
        Spec::Suffix(_) if size == 0 => Selection::Unsatisfiable,
        Spec::Suffix(n) => Selection::Part { start: size.saturating_sub(n), end: size - 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Selection::*;

    #[test]
    fn single_ranges() {
        let s = |h: &str| select(Some(h), 100);
        assert_eq!(s("bytes=0-0"), Part { start: 0, end: 0 });
        assert_eq!(s("bytes=0-99"), Part { start: 0, end: 99 });
        assert_eq!(s("bytes=99-99"), Part { start: 99, end: 99 }); // the last byte
        assert_eq!(s("bytes=50-1000"), Part { start: 50, end: 99 }); // clamped
        assert_eq!(s("bytes=10-"), Part { start: 10, end: 99 });
        assert_eq!(s("bytes=-1"), Part { start: 99, end: 99 });
        assert_eq!(s("bytes=-30"), Part { start: 70, end: 99 });
        assert_eq!(s("bytes=-1000"), Part { start: 0, end: 99 }); // suffix longer than the blob
        assert_eq!(s("Bytes = 5 - 6 "), Part { start: 5, end: 6 });
    }

    #[test]
    fn unsatisfiable() {
        let s = |h: &str| select(Some(h), 100);
        assert_eq!(s("bytes=100-"), Unsatisfiable); // just past the end
        assert_eq!(s("bytes=100-200"), Unsatisfiable);
        assert_eq!(s(&format!("bytes={}-", u64::MAX)), Unsatisfiable);
        assert_eq!(s("bytes=-0"), Unsatisfiable);
        assert_eq!(select(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(select(Some("bytes=-5"), 0), Unsatisfiable);
    }

    #[test]
    fn ignored_headers_mean_the_whole_blob() {
        assert_eq!(select(None, 100), Whole);
        for h in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=5-4",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(select(Some(h), 100), Whole, "{h:?}");
        }
    }
}
