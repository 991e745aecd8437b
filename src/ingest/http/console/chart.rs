//! The console's one chart: counts per minute as bars, drawn on the server as inline SVG (no
//! script, no style attribute, so the Content-Security-Policy stays strict). It draws; it does
//! not count.

use maud::{Markup, html};

const WIDTH: u32 = 600;
const HEIGHT: u32 = 100;
/// Room above the bars for the scale.
const TOP: u32 = 24;

/// Bars for `counts`, oldest first, with the busiest minute's count as the scale.
pub fn per_minute(label: &str, counts: &[u32]) -> Markup {
    let max = counts.iter().copied().max().unwrap_or(0);
    let n = u32::try_from(counts.len()).unwrap_or(u32::MAX).max(1);
    let slot = WIDTH / n;
    let bar = slot.saturating_sub(1).max(1);
    let room = HEIGHT - TOP;
    let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-label=(format!("{label}: {total} in the last hour, at most {max} a minute")) {
            title { (label) ": " (total) " in the last hour" }
            rect class="base" x="0" y=(HEIGHT - 1) width=(WIDTH) height="1" {}
            @for (i, c) in counts.iter().enumerate() {
                @if *c > 0 {
                    @let h = (u64::from(*c) * u64::from(room)).div_ceil(u64::from(max.max(1))).max(2);
                    rect class="bar"
                        x=(u32::try_from(i).unwrap_or(0) * slot)
                        y=(u64::from(HEIGHT) - h)
                        width=(bar)
                        height=(h) {}
                }
            }
            text x=(WIDTH) y="18" text-anchor="end" { "max " (max) "/min" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_minute_and_empty_minutes_draw_nothing() {
        let mut counts = vec![0u32; 60];
        counts[59] = 10;
        counts[0] = 5;
        let svg = per_minute("am <&>", &counts).into_string();
        assert_eq!(svg.matches("class=\"bar\"").count(), 2, "{svg}");
        // The busiest minute fills the room under the scale; half of it, half.
        assert!(svg.contains("x=\"590\" y=\"24\" width=\"9\" height=\"76\""), "{svg}");
        assert!(svg.contains("x=\"0\" y=\"62\" width=\"9\" height=\"38\""), "{svg}");
        assert!(svg.contains("max 10/min"));
        assert!(svg.contains("am &lt;&amp;&gt;: 15 in the last hour"), "labels are escaped: {svg}");
        assert!(!svg.contains("style="), "no style attribute: the CSP forbids inline styles");
    }

    #[test]
    fn an_idle_hour_is_a_flat_line() {
        let svg = per_minute("idle", &[0; 60]).into_string();
        assert_eq!(svg.matches("class=\"bar\"").count(), 0);
        assert!(svg.contains("max 0/min"));
    }
}
