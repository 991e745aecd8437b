//! Pure limits for hostile input, used before a body reaches a parser or a log line: a JSON
//! nesting-depth check, truncation of text (for logs, and of every string a payload sends on
//! to SCWM), and a token-bucket rate limiter. Nothing
//! here allocates per call (except a truncated copy), reads a clock or performs I/O.

use serde_json::Value;

use crate::incident::Payload;

use std::{
    borrow::Cow,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Whether `body` nests arrays and objects no deeper than `max_depth` (`{}` and `[]` are depth
/// 1, a bare scalar depth 0). A single pass over the bytes that skips string contents, escapes
/// included, so a 1 MB body nested 100 000 deep is refused before serde recurses into it. It
/// does not validate JSON otherwise: unbalanced or invalid input is left for the parser to
/// refuse, and never makes this panic.
pub fn json_depth_within(body: &[u8], max_depth: usize) -> bool {
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// What [`truncate_with_marker`] appends.
pub const TRUNCATION_MARKER: &str = "…[truncated]";

/// `s` when it has at most `max_chars` characters; else its start and [`TRUNCATION_MARKER`],
/// `max_chars` characters in all. Cuts only between characters (a combining mark may still be
/// parted from its base). When the marker does not fit, a bare `…` marks the cut.
pub fn truncate_with_marker(s: &str, max_chars: usize) -> Cow<'_, str> {
    // The byte offset of the character after the first `max_chars`: None when `s` fits.
    let Some((cut_all, _)) = s.char_indices().nth(max_chars) else {
        return Cow::Borrowed(s);
    };
    let marker_len = TRUNCATION_MARKER.chars().count();
    let marker = if max_chars >= marker_len {
        TRUNCATION_MARKER
    } else if max_chars >= 1 {
        "…"
    } else {
        return Cow::Borrowed("");
    };
    let keep = max_chars - marker.chars().count();
    let cut = s.char_indices().nth(keep).map_or(cut_all, |(i, _)| i);
    let mut out = String::with_capacity(cut + marker.len());
    out.push_str(&s[..cut]);
    out.push_str(marker);
    Cow::Owned(out)
}

/// A token bucket: `burst` requests at once, refilled at `rate` per second. Lock-free: one
/// atomic word, updated with compare-and-swap (the generic cell rate algorithm, which behaves
/// exactly as a token bucket). The clock is injected: every check takes `now`.
#[derive(Debug)]
pub struct RateLimiter {
    origin: Instant,
    /// Nanoseconds between two tokens.
    interval_ns: u64,
    /// How far ahead of now the bucket's schedule may run: `burst` intervals.
    capacity_ns: u64,
    /// The theoretical arrival time of the next request, in nanoseconds since `origin`.
    tat_ns: AtomicU64,
}

impl RateLimiter {
    /// `rate` per second (fractions allowed, such as 0.5), up to `burst` at once, starting full
    /// at `origin`. None when `rate` is not a positive finite number, or so small that `burst`
    /// tokens would take centuries to refill (the schedule would not fit in 64 bits).
    pub fn new(rate_per_second: f64, burst: NonZeroU32, origin: Instant) -> Option<Self> {
        if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
            return None;
        }
        let interval = (1e9 / rate_per_second).max(1.0);
        if interval >= (1u64 << 62) as f64 {
            return None;
        }
        let interval_ns = interval as u64;
        let capacity_ns = interval_ns.checked_mul(u64::from(burst.get())).filter(|&c| c < 1 << 62)?;
        Some(Self { origin, interval_ns, capacity_ns, tat_ns: AtomicU64::new(0) })
    }

    /// Takes one token at `now`, or says how long until one is available. A `now` before the
    /// previous one (clocks of several threads read a moment apart) is treated as that moment.
    pub fn check(&self, now: Instant) -> Result<(), Duration> {
        let now_ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now_ns).saturating_add(self.interval_ns);
            let ahead = next - now_ns;
            if ahead > self.capacity_ns {
                return Err(Duration::from_nanos(ahead - self.capacity_ns));
            }
            match self.tat_ns.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

/// Cuts every string in the payload (nested ones too), object keys included, to `max`
/// characters with a visible marker, so no field sent on to SCWM is unbounded. Alert labels
/// travel as an object, so a label's name is as much sender-controlled text as its value.
pub fn truncate_strings(payload: &mut Payload, max: usize) {
    fn walk(v: &mut Value, max: usize) {
        match v {
            Value::String(s) => {
                if let Cow::Owned(cut) = truncate_with_marker(s, max) {
                    *s = cut;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, max)),
            Value::Object(map) => {
                map.values_mut().for_each(|i| walk(i, max));
                truncate_keys(map, max);
            }
            _ => {}
        }
    }
    payload.values_mut().for_each(|v| walk(v, max));
    truncate_keys(payload, max);
}

/// Cuts the keys of `map` longer than `max` characters. Two long keys may share their first
/// characters; a cut key that is already taken gets a numbered marker instead, so no entry is
/// lost to another.
fn truncate_keys(map: &mut serde_json::Map<String, Value>, max: usize) {
    // Bytes bound characters from above: most maps have no key that long and stay untouched.
    if map.keys().all(|k| k.len() <= max) {
        return;
    }
    let (long, short): (Vec<_>, Vec<_>) =
        std::mem::take(map).into_iter().partition(|(k, _)| k.chars().nth(max).is_some());
    map.extend(short);
    for (key, value) in long {
        let mut cut = truncate_with_marker(&key, max).into_owned();
        let mut n = 1;
        while map.contains_key(&cut) {
            n += 1;
            let marker = format!("…[truncated {n}]");
            let keep = max.saturating_sub(marker.chars().count());
            cut = key.chars().take(keep).chain(marker.chars()).collect();
        }
        map.insert(cut, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert!(json_depth_within(b"1", 0));
        assert!(!json_depth_within(b"[]", 0));
        assert!(json_depth_within(b"[]", 1));
        assert!(json_depth_within(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(!json_depth_within(br#"{"a":[1,{"b":2}]}"#, 2));
        assert!(json_depth_within(b"[[]][[]][[]]", 2), "siblings do not add up");
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        assert!(json_depth_within(br#"{"a":"[[[[{{{{"}"#, 1));
        assert!(json_depth_within(br#"["\"[[[[", "\\", "]]]"]"#, 1));
        // An escaped backslash ends before the quote, so the quote closes the string.
        assert!(!json_depth_within(br#"["\\", [[ ]] ]"#, 2));
        assert!(json_depth_within(br#"["\\\"[[", "x"]"#, 1));
    }

    #[test]
    fn a_megabyte_of_nesting_is_refused_quickly() {
        let deep = vec![b'['; 1_000_000];
        assert!(!json_depth_within(&deep, 128));
        let mut balanced = vec![b'['; 100_000];
        balanced.extend(vec![b']'; 100_000]);
        assert!(!json_depth_within(&balanced, 128));
        assert!(json_depth_within(&balanced, 100_000));
    }

    #[test]
    fn garbage_does_not_confuse_the_scanner() {
        assert!(json_depth_within(b"]]]]}}}}[", 1));
        assert!(json_depth_within(b"\"unterminated [[[[", 0));
        assert!(json_depth_within(&[0xff, 0xfe, b'[', 0x80], 1));
    }

    #[test]
    fn short_text_is_borrowed_unchanged() {
        assert!(matches!(truncate_with_marker("héllo", 5), Cow::Borrowed("héllo")));
        assert!(matches!(truncate_with_marker("", 0), Cow::Borrowed("")));
    }

    #[test]
    fn truncation_keeps_whole_characters_and_fits_the_limit() {
        let s = "ééééééééééééééééééééé✓✓✓"; // 24 characters, all multi-byte
        for max in 0..30 {
            let t = truncate_with_marker(s, max);
            assert!(t.chars().count() <= max, "{max}: {t}");
            if max < 24 && max > 0 {
                assert!(t.ends_with('…') || t.ends_with(TRUNCATION_MARKER), "{max}: {t}");
            }
        }
        assert_eq!(truncate_with_marker(s, 15), "ééé…[truncated]");
        assert_eq!(truncate_with_marker(s, 3), "éé…");
        assert_eq!(truncate_with_marker("🦀🦀🦀🦀", 2), "🦀…");
        assert_eq!(truncate_with_marker("abc", 0), "");
    }

    #[test]
    fn a_limit_of_zero_leaves_no_room_even_for_the_marker() {
        // Found by the `truncate` fuzz target (input 00 22 28 78 22: limit 0, text `(x"`); the
        // target expected a marker where none fits.
        assert_eq!(truncate_with_marker("(x\"", 0), "");
    }

    fn limiter(rate: f64, burst: u32, origin: Instant) -> RateLimiter {
        RateLimiter::new(rate, NonZeroU32::new(burst).unwrap(), origin).unwrap()
    }

    #[test]
    fn a_full_bucket_allows_a_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let rl = limiter(2.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(rl.check(t0), Ok(()));
        }
        assert_eq!(rl.check(t0), Err(Duration::from_millis(500)));
        assert_eq!(rl.check(t0 + Duration::from_millis(200)), Err(Duration::from_millis(300)));
        assert_eq!(rl.check(t0 + Duration::from_millis(500)), Ok(()));
        assert!(rl.check(t0 + Duration::from_millis(500)).is_err());
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(rl.check(later), Ok(()));
        }
        assert!(rl.check(later).is_err());
    }

    #[test]
    fn fractional_rates_and_clocks_that_step_back_work() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let rl = limiter(0.5, 1, t0);
        assert_eq!(rl.check(t0), Ok(()));
        assert_eq!(rl.check(t0 + Duration::from_secs(1)), Err(Duration::from_secs(1)));
        assert!(rl.check(t0 - Duration::from_secs(5)).is_err(), "before the origin counts as the origin");
        assert_eq!(rl.check(t0 + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn invalid_rates_are_refused() {
        let b = NonZeroU32::new(1).unwrap();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(RateLimiter::new(rate, b, Instant::now()).is_none());
        }
        assert!(RateLimiter::new(1e-12, b, Instant::now()).is_none(), "one token per 30 000 years");
        assert!(RateLimiter::new(1e-3, NonZeroU32::MAX, Instant::now()).is_none());
        assert!(RateLimiter::new(1e-6, b, Instant::now()).is_some());
        assert!(RateLimiter::new(1e12, NonZeroU32::MAX, Instant::now()).is_some());
    }

    #[test]
    fn concurrent_checks_never_grant_more_than_the_burst() {
        let t0 = Instant::now();
        let rl = std::sync::Arc::new(limiter(1.0, 100, t0));
        let granted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let rl = rl.clone();
                    s.spawn(move || (0..100).filter(|_| rl.check(t0).is_ok()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, 100);
    }
    #[test]
    fn long_strings_are_cut_with_a_marker() {
        let mut p: Payload = serde_json::from_str(r#"{"a":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","b":{"c":["yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"]},"n":1}"#).unwrap();
        truncate_strings(&mut p, 40);
        let a = p["a"].as_str().unwrap();
        assert_eq!(a.chars().count(), 40);
        assert!(a.ends_with("[truncated]") || a.ends_with('…'), "{a}");
        assert_eq!(p["b"]["c"][0].as_str().unwrap().chars().count(), 40);
        assert_eq!(p["n"], 1);
    }

    #[test]
    fn long_keys_are_cut_too_and_never_collide() {
        let long = "k".repeat(100);
        let mut p: Payload = serde_json::from_value(serde_json::json!({
            "labels": {&long: "1", format!("{long}x"): "2", "short": "3"},
            format!("top{long}"): "4",
        }))
        .unwrap();
        truncate_strings(&mut p, 40);
        let labels = p["labels"].as_object().unwrap();
        assert_eq!(labels.len(), 3, "{labels:?}");
        assert_eq!(labels["short"], "3");
        let mut values: Vec<_> = labels.values().filter_map(Value::as_str).collect();
        values.sort_unstable();
        assert_eq!(values, ["1", "2", "3"], "no label lost to another");
        for key in labels.keys().chain(p.keys()) {
            assert!(key.chars().count() <= 40, "{key}");
        }
        assert!(labels.keys().any(|k| k.ends_with("…[truncated 2]")), "{labels:?}");
        assert_eq!(p.len(), 2);
        assert!(p.keys().any(|k| k.starts_with("topkkk") && k.ends_with("…[truncated]")));
    }
}
