//! `truncate_with_marker` on arbitrary text: the first two bytes are the limit. The result fits
//! the limit, is the text itself when the text fits, and else is a prefix of it and a marker (or empty for a limit of 0).
#![no_main]

use incident_bridge::verify::limits::{TRUNCATION_MARKER, truncate_with_marker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((limit, text)) = data.split_first_chunk::<2>() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let max = usize::from(u16::from_le_bytes(*limit) % 512);
    let out = truncate_with_marker(text, max);
    assert!(out.chars().count() <= max);
    if text.chars().count() <= max {
        assert_eq!(out, text);
    } else if max == 0 {
        // No room even for a marker.
        assert_eq!(out, "");
    } else {
        let kept = out.strip_suffix(TRUNCATION_MARKER).or_else(|| out.strip_suffix('…'));
        let kept = kept.unwrap_or_else(|| panic!("{out:?} has no marker"));
        assert!(text.starts_with(kept), "{kept:?} is not a prefix");
    }
});
