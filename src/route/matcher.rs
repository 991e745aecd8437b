//! Alertmanager-style label matchers: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"`, parsed the way Alertmanager's current (UTF-8) parser does.
//!
//! - One string may hold one matcher or a comma-separated list, optionally in braces:
//!   `{severity="critical", team=~"db|infra"}`; a trailing comma is allowed.
//! - Names and values are double-quoted (escapes `\\ \" \n \t \r \a \b \f \v \xHH \uHHHH
//!   \UHHHHHHHH`, as Go's `strconv.Unquote`) or unquoted; an unquoted token ends at whitespace or
//!   at one of ``{ } ! = ~ , \ " ' ` ``.
//! - Regexes are fully anchored, as in Alertmanager: `service=~"db"` does not match `db-1`.
//! - A label the alert lacks has the empty value: `team!="db"` matches an alert without `team`.
//!
//! Parse errors name the column (counted in characters from 1) and what was expected there.

use std::fmt;

use regex::Regex;

use crate::alert::Labels;

/// The four matcher operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One parsed matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    /// `^(?:value)$`, compiled once at parse time for the two regex operators.
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Eq for Matcher {}

/// Why a matcher string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct MatcherError {
    /// 1-based character position of the problem in the string.
    pub column: usize,
    pub message: String,
}

impl Matcher {
    /// A matcher from its parts; fails only for an invalid regex.
    pub fn new(name: impl Into<String>, op: MatchOp, value: impl Into<String>) -> Result<Self, String> {
        let value = value.into();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(compile_anchored(&value)?),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Self { name: name.into(), op, value, regex })
    }

    /// Parses exactly one matcher.
    pub fn parse(s: &str) -> Result<Self, MatcherError> {
        let mut all = Self::parse_list(s)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            0 => Err(MatcherError { column: 1, message: "expected a matcher such as name=\"value\"".into() }),
            n => Err(MatcherError { column: 1, message: format!("expected one matcher, found {n}") }),
        }
    }

    /// Parses a comma-separated list, optionally in braces. An empty string (or `{}`) is an
    /// empty list.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, MatcherError> {
        Parser { lexer: Lexer::new(s) }.run()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn op(&self) -> MatchOp {
        self.op
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether `labels` satisfy this matcher; a missing label counts as the empty string.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            // `new` always compiles a regex for the regex operators.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

/// `name="value"` with the value quoted and escaped, so it parses back to the same matcher.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.name.is_empty() && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if plain {
            f.write_str(&self.name)?;
        } else {
            write!(f, "\"{}\"", escape(&self.name))?;
        }
        write!(f, "{}\"{}\"", self.op.as_str(), escape(&self.value))
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Compiles `^(?:pattern)$`. The error names the pattern as written, not the anchored form.
fn compile_anchored(pattern: &str) -> Result<Regex, String> {
    let describe = |e: regex::Error| {
        let detail = match &e {
            regex::Error::Syntax(s) => {
                s.lines().rev().find_map(|l| l.strip_prefix("error: ")).unwrap_or(s.as_str()).to_owned()
            }
            other => other.to_string(),
        };
        format!("invalid regex `{pattern}`: {detail}")
    };
    Regex::new(pattern).map_err(describe)?;
    Regex::new(&format!("^(?:{pattern})$")).map_err(describe)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    OpenBrace,
    CloseBrace,
    Comma,
    Op(MatchOp),
    Quoted(String),
    Unquoted(String),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::OpenBrace => "`{`".into(),
            Token::CloseBrace => "`}`".into(),
            Token::Comma => "`,`".into(),
            Token::Op(op) => format!("`{}`", op.as_str()),
            Token::Quoted(s) => format!("\"{}\"", escape(s)),
            Token::Unquoted(s) => format!("`{s}`"),
        }
    }
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    /// 1-based column of the next character.
    column: usize,
    peeked: Option<Option<(usize, Token)>>,
}

fn is_reserved(c: char) -> bool {
    c.is_whitespace() || "{}!=~,\\\"'`".contains(c)
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Self { chars: s.char_indices().peekable(), column: 1, peeked: None }
    }

    fn bump(&mut self) -> Option<char> {
        let (_, c) = self.chars.next()?;
        self.column += 1;
        Some(c)
    }

    fn peek(&mut self) -> Result<Option<&(usize, Token)>, MatcherError> {
        if self.peeked.is_none() {
            let t = self.scan()?;
            self.peeked = Some(t);
        }
        Ok(self.peeked.as_ref().and_then(Option::as_ref))
    }

    fn next(&mut self) -> Result<Option<(usize, Token)>, MatcherError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.scan(),
        }
    }

    /// The next token and the column it starts at; `None` at the end.
    fn scan(&mut self) -> Result<Option<(usize, Token)>, MatcherError> {
        while self.chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            self.bump();
        }
        let start = self.column;
        let Some(c) = self.bump() else { return Ok(None) };
        let token = match c {
            '{' => Token::OpenBrace,
            '}' => Token::CloseBrace,
            ',' => Token::Comma,
            '=' if self.chars.peek().is_some_and(|(_, c)| *c == '~') => {
                self.bump();
                Token::Op(MatchOp::Regex)
            }
            '=' => Token::Op(MatchOp::Equal),
            '!' => match self.bump() {
                Some('=') => Token::Op(MatchOp::NotEqual),
                Some('~') => Token::Op(MatchOp::NotRegex),
                _ => {
                    return Err(MatcherError {
                        column: start,
                        message: "`!` must be followed by `=` or `~`".into(),
                    });
                }
            },
            '"' => Token::Quoted(self.quoted(start)?),
            '~' | '\\' | '\'' | '`' => {
                return Err(MatcherError {
                    column: start,
                    message: format!("unexpected `{c}`; quote the name or value that contains it"),
                });
            }
            c => {
                let mut s = String::from(c);
                while let Some((_, c)) = self.chars.peek() {
                    if is_reserved(*c) {
                        break;
                    }
                    s.push(*c);
                    self.bump();
                }
                Token::Unquoted(s)
            }
        };
        Ok(Some((start, token)))
    }

    /// The rest of a double-quoted string whose opening quote is at `start`.
    fn quoted(&mut self, start: usize) -> Result<String, MatcherError> {
        let mut out = String::new();
        loop {
            let col = self.column;
            match self.bump() {
                None => {
                    return Err(MatcherError { column: start, message: "unterminated quoted string".into() });
                }
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.escape(col)?),
                Some(c) => out.push(c),
            }
        }
    }

    /// One escape sequence after a backslash at column `col`.
    fn escape(&mut self, col: usize) -> Result<char, MatcherError> {
        let bad = |message: String| MatcherError { column: col, message };
        let c = self.bump().ok_or_else(|| bad("unterminated escape sequence".into()))?;
        let hex = |lexer: &mut Self, digits: usize| -> Result<char, MatcherError> {
            let mut n: u32 = 0;
            for _ in 0..digits {
                let d = lexer.bump().and_then(|c| c.to_digit(16));
                n = n * 16 + d.ok_or_else(|| bad(format!("`\\{c}` needs {digits} hex digits")))?;
            }
            char::from_u32(n).ok_or_else(|| bad(format!("`\\{c}` escape is not a valid character")))
        };
        Ok(match c {
            '\\' => '\\',
            '"' => '"',
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\u{07}',
            'b' => '\u{08}',
            'f' => '\u{0c}',
            'v' => '\u{0b}',
            'x' => {
                let ch = hex(self, 2)?;
                if !ch.is_ascii() {
                    return Err(bad("`\\x` escapes above 7f are not UTF-8; use `\\u`".into()));
                }
                ch
            }
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            other => {
                return Err(bad(format!(
                    "unknown escape `\\{other}`; a backslash inside quotes must be doubled (`\\\\{other}`)"
                )));
            }
        })
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
}

impl Parser<'_> {
    fn run(mut self) -> Result<Vec<Matcher>, MatcherError> {
        let mut out = Vec::new();
        let braced = matches!(self.lexer.peek()?, Some((_, Token::OpenBrace)));
        if braced {
            self.lexer.next()?;
        }
        loop {
            match self.lexer.next()? {
                None if braced => return Err(self.end_error("expected `}`")),
                None => return Ok(out),
                Some((_, Token::CloseBrace)) if braced => return self.expect_end(out),
                Some((col, Token::Quoted(name) | Token::Unquoted(name))) => {
                    out.push(self.matcher(col, name)?);
                    match self.lexer.next()? {
                        None if braced => return Err(self.end_error("expected `,` or `}`")),
                        None => return Ok(out),
                        Some((_, Token::Comma)) => {}
                        Some((_, Token::CloseBrace)) if braced => return self.expect_end(out),
                        Some((col, t)) => {
                            let want = if braced { "`,` or `}`" } else { "`,` or the end" };
                            return Err(MatcherError {
                                column: col,
                                message: format!("expected {want} after a matcher, found {}", t.describe()),
                            });
                        }
                    }
                }
                Some((col, t)) => {
                    return Err(MatcherError {
                        column: col,
                        message: format!("expected a label name, found {}", t.describe()),
                    });
                }
            }
        }
    }

    fn matcher(&mut self, name_col: usize, name: String) -> Result<Matcher, MatcherError> {
        if name.is_empty() {
            return Err(MatcherError { column: name_col, message: "the label name is empty".into() });
        }
        let op = match self.lexer.next()? {
            Some((_, Token::Op(op))) => op,
            Some((col, t)) => {
                return Err(MatcherError {
                    column: col,
                    message: format!("expected an operator such as =, !=, =~ or !~, found {}", t.describe()),
                });
            }
            None => return Err(self.end_error("expected an operator such as =, !=, =~ or !~")),
        };
        let (value_col, value) = match self.lexer.next()? {
            Some((col, Token::Quoted(v) | Token::Unquoted(v))) => (col, v),
            Some((col, t)) => {
                return Err(MatcherError {
                    column: col,
                    message: format!("expected a value after `{}`, found {}", op.as_str(), t.describe()),
                });
            }
            // Alertmanager requires a value; `name=""` says "empty" explicitly.
            None => return Err(self.end_error(&format!("expected a value after `{}`", op.as_str()))),
        };
        Matcher::new(name, op, value).map_err(|message| MatcherError { column: value_col, message })
    }

    fn expect_end(&mut self, out: Vec<Matcher>) -> Result<Vec<Matcher>, MatcherError> {
        match self.lexer.next()? {
            None => Ok(out),
            Some((col, t)) => Err(MatcherError {
                column: col,
                message: format!("expected the end after `}}`, found {}", t.describe()),
            }),
        }
    }

    fn end_error(&self, expected: &str) -> MatcherError {
        MatcherError { column: self.lexer.column, message: format!("unexpected end: {expected}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn one(s: &str) -> Matcher {
        Matcher::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn each_operator_parses_and_matches() {
        let l = labels(&[("severity", "critical"), ("service", "postgres")]);
        assert!(one(r#"severity="critical""#).matches(&l));
        assert!(!one(r#"severity="warning""#).matches(&l));
        assert!(one(r#"severity!="warning""#).matches(&l));
        assert!(!one(r#"severity!="critical""#).matches(&l));
        assert!(one(r#"service=~"postgres|mysql""#).matches(&l));
        assert!(!one(r#"service=~"mysql""#).matches(&l));
        assert!(one(r#"service!~"mysql|oracle""#).matches(&l));
        assert!(!one(r#"service!~"post.*""#).matches(&l));
        let m = one(r#"service=~"post.*""#);
        assert_eq!((m.name(), m.op(), m.value()), ("service", MatchOp::Regex, "post.*"));
    }

    #[test]
    fn regexes_are_anchored_at_both_ends() {
        let l = labels(&[("service", "db-primary")]);
        assert!(!one(r#"service=~"db""#).matches(&l));
        assert!(!one(r#"service=~"primary""#).matches(&l));
        assert!(one(r#"service=~"db.*""#).matches(&l));
        assert!(one(r#"service!~"db""#).matches(&l));
        // Anchoring wraps the whole alternation, not its first branch.
        assert!(!one(r#"service=~"x|db""#).matches(&l));
    }

    #[test]
    fn a_missing_label_is_the_empty_string() {
        let l = labels(&[]);
        assert!(one(r#"team!="db""#).matches(&l));
        assert!(one(r#"team="""#).matches(&l));
        assert!(one(r#"team=~".*""#).matches(&l));
        assert!(!one(r#"team=~".+""#).matches(&l));
    }

    #[test]
    fn quoted_values_take_escapes() {
        let m = one(r#"msg="say \"hi\"\\ \n \u00e9\x41""#);
        assert_eq!(m.value(), "say \"hi\"\\ \n éA");
        let m = one(r#"path=~"a\\.b""#);
        assert!(m.matches(&labels(&[("path", "a.b")])));
        assert!(!m.matches(&labels(&[("path", "axb")])));
        assert_eq!(one(r#""weird name"="v""#).name(), "weird name");
    }

    #[test]
    fn unquoted_values_are_accepted_as_alertmanager_does() {
        let m = one("severity=critical");
        assert_eq!(m.value(), "critical");
        let m = one("  service =~ postgres|mysql  ");
        assert_eq!((m.name(), m.value()), ("service", "postgres|mysql"));
        assert!(m.matches(&labels(&[("service", "mysql")])));
        assert_eq!(one("instance!=10.0.0.1:9100").value(), "10.0.0.1:9100");
        assert_eq!(one("name=Grüße").value(), "Grüße");
    }

    #[test]
    fn lists_and_braces() {
        let all = Matcher::parse_list(r#"{severity="critical", team=~"db|infra",}"#).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(Matcher::parse_list("a=1,b!=2").unwrap().len(), 2);
        assert!(Matcher::parse_list("").unwrap().is_empty());
        assert!(Matcher::parse_list(" { } ").unwrap().is_empty());
        assert_eq!(Matcher::parse("a=1,b=2").unwrap_err().message, "expected one matcher, found 2");
    }

    #[test]
    fn display_round_trips() {
        for s in [r#"a="1""#, r#"b!="x \"y\"""#, r#"c=~"a\\.b|c""#, r#"d!~".*""#, r#""odd name"="v""#] {
            let m = one(s);
            assert_eq!(m.to_string(), s);
            assert_eq!(one(&m.to_string()), m);
        }
    }

    #[test]
    fn errors_are_precise() {
        let cases: &[(&str, usize, &str)] = &[
            ("severity", 9, "unexpected end: expected an operator such as =, !=, =~ or !~"),
            ("severity critical", 10, "expected an operator such as =, !=, =~ or !~, found `critical`"),
            ("severity=", 10, "unexpected end: expected a value after `=`"),
            (r#"severity="critical"#, 10, "unterminated quoted string"),
            (r#"a="x\.y""#, 5, "unknown escape `\\.`; a backslash inside quotes must be doubled (`\\\\.`)"),
            (r#"a=~"(unclosed""#, 4, "invalid regex `(unclosed`: unclosed group"),
            ("a!b", 2, "`!` must be followed by `=` or `~`"),
            (r#"{a="1""#, 7, "unexpected end: expected `,` or `}`"),
            (r#"a="1" b="2""#, 7, "expected `,` or the end after a matcher, found `b`"),
            (r#"a="1"}"#, 6, "expected `,` or the end after a matcher, found `}`"),
            (r#"{a="1"} x"#, 9, "expected the end after `}`, found `x`"),
            (r#"="1""#, 1, "expected a label name, found `=`"),
            (r#"""="1""#, 1, "the label name is empty"),
            ("a='1'", 3, "unexpected `'`; quote the name or value that contains it"),
            (r#"a="\u12""#, 4, "`\\u` needs 4 hex digits"),
        ];
        for (input, column, message) in cases {
            let e = Matcher::parse_list(input).unwrap_err();
            assert_eq!((e.column, e.message.as_str()), (*column, *message), "{input}");
        }
        assert_eq!(
            Matcher::parse("a=").unwrap_err().to_string(),
            "column 3: unexpected end: expected a value after `=`"
        );
    }
}
