//! Subject templates for result events and dead letters: `scwm.results.{op}` with the
//! placeholders `{op}` and `{source}`. Parsed once at start-up; rendering is a few string copies.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Op,
    Source,
}

#[derive(Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    parts: Vec<Part>,
}

impl SubjectTemplate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let Some(len) = rest[start..].find('}') else {
                return Err(format!("`{text}`: unclosed `{{`"));
            };
            parts.push(match &rest[start + 1..start + len] {
                "op" => Part::Op,
                "source" => Part::Source,
                other => {
                    return Err(format!(
                        "`{text}`: unknown placeholder `{{{other}}}` (known: {{op}}, {{source}})"
                    ));
                }
            });
            rest = &rest[start + len + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let template = Self { parts };
        // Placeholders render to single tokens, so checking a sample rendering checks the shape.
        let sample = template.render("op", "source");
        if sample.is_empty()
            || sample
                .split('.')
                .any(|t| t.is_empty() || t == "*" || t == ">" || t.contains(char::is_whitespace))
        {
            return Err(format!("`{text}` does not make a valid NATS subject for publishing"));
        }
        Ok(template)
    }

    /// The subject for one message. Characters a subject cannot hold in a token are replaced by
    /// `_` so a source name can never split or widen the subject.
    pub fn render(&self, op: &str, source: &str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Op => push_token(&mut out, op),
                Part::Source => push_token(&mut out, source),
            }
        }
        out
    }
}

fn push_token(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('_');
    }
    out.extend(
        value.chars().map(|c| if c == '.' || c == '*' || c == '>' || c.is_whitespace() { '_' } else { c }),
    );
}

impl fmt::Debug for SubjectTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectTemplate(")?;
        for part in &self.parts {
            match part {
                Part::Text(t) => f.write_str(t)?,
                Part::Op => f.write_str("{op}")?,
                Part::Source => f.write_str("{source}")?,
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_as_single_tokens() {
        let t = SubjectTemplate::parse("scwm.results.{source}.{op}").unwrap();
        assert_eq!(t.render("add", "native"), "scwm.results.native.add");
        assert_eq!(t.render("add", "a.b *>"), "scwm.results.a_b___.add");
        assert_eq!(t.render("", "x"), "scwm.results.x._");
        assert_eq!(SubjectTemplate::parse("plain").unwrap().render("add", "s"), "plain");
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for bad in ["scwm.{nope}", "scwm.{op", "scwm..{op}", "scwm.*", "scwm.>", "", "a b.{op}"] {
            assert!(SubjectTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
