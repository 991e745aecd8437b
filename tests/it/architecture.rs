//! The plan of the house, enforced: every file under `src/` imports only from its own room, from
//! rooms of a lower layer, or from rooms of its own layer without making a circle. The layer
//! map below is the one place that says which room stands where and why; `lib.rs` and
//! `ARCHITECTURE.md` describe the same map in words.
//!
//! What counts as an import: every `crate::<room>` path in code (in `use` declarations, braced
//! groups included, and inline), and every `super::` path that leaves the file's room. Comments,
//! doc comments, string literals and test modules (`tests.rs`, and what follows
//! `#[cfg(test)] mod ...` in a file) are not part of the house and are left out: a test may
//! reach into any room it tests.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The layers, bottom up. A room may import from its own layer and every layer below it, never
/// from one above; within a layer, rooms must not import each other in a circle.
const LAYERS: &[Layer] = &[
    Layer {
        name: "ground",
        // Vocabulary and plumbing every layer speaks: ids, secrets, headers and trace context,
        // the incident operations, metric names, the shared config checks. Nothing here knows
        // alerts, transports or SCWM's wire format, so anything may use it.
        rooms: &[
            "ids",
            "secret",
            "headers",
            "trace_context",
            "incident",
            "observe",
            "lenient",
            "settings",
            "health",
            "telemetry",
        ],
    },
    Layer {
        name: "model",
        // The alert model decoders produce and every later step reads; pure data and the pure
        // functions that name it (fingerprints, keys, episodes).
        rooms: &["alert"],
    },
    Layer {
        name: "pure steps",
        // Decisions and transformations without I/O or a clock: decode, verify, route, render,
        // decide, plan. The event lives here because it carries a route's target. Being pure,
        // these are what `explain` and the tests run unchanged.
        rooms: &["decode", "verify", "template", "route", "lifecycle", "event", "sources", "plan"],
    },
    Layer {
        name: "parts with I/O",
        // Each speaks to one outside thing (SCWM, the store, the result sinks) and decides
        // nothing about incidents; the simulator stands beside the client it answers.
        rooms: &["scwm", "sim", "store", "publish"],
    },
    Layer {
        name: "pipeline",
        // The imperative shell: loads, plans, calls, saves, publishes, returns an outcome. It
        // knows no transport.
        rooms: &["pipeline"],
    },
    Layer {
        name: "intake",
        // The one way in for every transport: read, verify, decode, submit, outcome tickets.
        rooms: &["intake"],
    },
    Layer {
        name: "transports and wiring",
        // HTTP and NATS in their own words, configuration gathering and the app that wires it
        // all: nothing below may know them.
        rooms: &["ingest", "config", "app", "operate"],
    },
];

struct Layer {
    name: &'static str,
    rooms: &'static [&'static str],
}

/// One reference from a file to a room other than its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Reference {
    file: String,
    line: usize,
    from: String,
    to: String,
    /// The path as written, for the message.
    text: String,
}

/// A source file: its path for messages and its module path (`["ingest", "nats", "core"]`).
struct SourceFile {
    shown: String,
    module: Vec<String>,
    text: String,
}

fn layer_of(room: &str) -> Option<(usize, &'static str)> {
    LAYERS.iter().enumerate().find(|(_, l)| l.rooms.contains(&room)).map(|(i, l)| (i + 1, l.name))
}

/// Every `.rs` file under `dir` except the binary's `main.rs` (a crate of its own, which speaks
/// to the library by its name) and test modules.
fn source_files(root: &Path) -> Vec<SourceFile> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                if rel == Path::new("main.rs") || rel.file_name().is_some_and(|n| n == "tests.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                out.push(SourceFile {
                    shown: format!("src/{}", rel.display()),
                    module: module_path(&rel),
                    text,
                });
            }
        }
    }
    out.sort_by(|a, b| a.shown.cmp(&b.shown));
    out
}

/// `lib.rs` → `[]`, `a.rs` and `a/mod.rs` → `["a"]`, `a/b.rs` → `["a", "b"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The text with comments and string and char literals blanked out (newlines kept, so line
/// numbers stay right) and test modules cut off.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                out.push(blank(chars[i]));
                i += 1;
            }
            out.push_str("  ");
            i += 2;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&chars, i) {
            // A raw string: r"...", r#"..."#, ...
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            chars[i..j.min(chars.len())].iter().for_each(|c| out.push(blank(*c)));
            i = j;
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            chars[i..(j + 1).min(chars.len())].iter().for_each(|c| out.push(blank(*c)));
            i = j + 1;
        } else if c == '\'' && next.is_some() && chars.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else if c == '\'' && next == Some('\\') {
            let mut j = i + 2;
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            chars[i..(j + 1).min(chars.len())].iter().for_each(|c| out.push(blank(*c)));
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    // What follows `#[cfg(test)]` and a `mod` is a test module, by the house's convention last
    // in its file.
    let lines: Vec<&str> = out.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if line.trim() == "#[cfg(test)]"
            && lines[n + 1..]
                .iter()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_start().starts_with("mod "))
        {
            return lines[..n].join("\n");
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every room the file refers to, other than its own.
fn references(file: &SourceFile) -> Vec<Reference> {
    let code = code_only(&file.text);
    let own = file.module.first().cloned().unwrap_or_default();
    let mut found = Vec::new();
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let mut add = |pos: usize, room: &str, text: String| {
        if room != own && !room.is_empty() && room != "self" {
            found.push(Reference {
                file: file.shown.clone(),
                line: line_of(pos),
                from: own.clone(),
                to: room.to_owned(),
                text,
            });
        }
    };
    let bytes: Vec<char> = code.chars().collect();
    let text: String = bytes.iter().collect();
    for (pos, _) in text.match_indices("crate::") {
        if pos > 0 && (is_ident(bytes[pos - 1]) || bytes[pos - 1] == ':') {
            continue;
        }
        let rest = &text[pos + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            for room in group_heads(group) {
                add(pos, &room, format!("crate::{{{room}…}}"));
            }
        } else {
            let room: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            add(pos, &room, format!("crate::{room}"));
        }
    }
    for (pos, _) in text.match_indices("super::") {
        if pos > 0 && (is_ident(bytes[pos - 1]) || bytes[pos - 1] == ':') {
            continue;
        }
        // Count the `super::`s and resolve against the file's module path.
        let mut depth = 0;
        let mut rest = &text[pos..];
        while let Some(r) = rest.strip_prefix("super::") {
            depth += 1;
            rest = r;
        }
        if depth > file.module.len() {
            continue;
        }
        let base = &file.module[..file.module.len() - depth];
        let heads: Vec<String> = match base.first() {
            Some(room) => vec![room.clone()],
            None => match rest.strip_prefix('{') {
                Some(group) => group_heads(group),
                None => vec![rest.chars().take_while(|c| is_ident(*c)).collect()],
            },
        };
        for room in heads {
            add(pos, &room, format!("{}{room}", "super::".repeat(depth)));
        }
    }
    found
}

/// The first path segment of every item of a braced `use` group (`{a::b, c, d::{e}}` → a, c, d).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_start = true,
            c if at_start && is_ident(c) => {
                heads.push(group[i..].chars().take_while(|c| is_ident(*c)).collect());
                at_start = false;
            }
            _ => {}
        }
    }
    heads
}

/// Every broken rule, as a line that names the file, the line and why.
fn problems(files: &[SourceFile]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeMap<String, Reference>> = BTreeMap::new();
    for file in files {
        let own = file.module.first().cloned().unwrap_or_default();
        if !own.is_empty() && layer_of(&own).is_none() {
            problems.push(format!(
                "{}: room `{own}` is in no layer: add it to LAYERS in tests/it/architecture.rs (and to ARCHITECTURE.md)",
                file.shown
            ));
        }
        for r in references(file) {
            let Some((to_layer, to_name)) = layer_of(&r.to) else {
                problems.push(format!(
                    "{}:{}: `{}` names room `{}`, which is in no layer",
                    r.file, r.line, r.text, r.to
                ));
                continue;
            };
            if let Some((from_layer, from_name)) = layer_of(&r.from)
                && to_layer > from_layer
            {
                problems.push(format!(
                    "{}:{}: `{}` imports upwards: `{}` is in layer {to_layer} ({to_name}), above `{}` in layer \
                     {from_layer} ({from_name}); data flows one way, so move the shared piece down or pass it in",
                    r.file, r.line, r.text, r.to, r.from
                ));
            }
            edges.entry(r.from.clone()).or_default().entry(r.to.clone()).or_insert(r);
        }
    }
    if let Some(circle) = find_circle(&edges) {
        let ties: Vec<String> = circle
            .windows(2)
            .map(|w| {
                let r = &edges[&w[0]][&w[1]];
                format!("{} -> {} ({}:{}: `{}`)", w[0], w[1], r.file, r.line, r.text)
            })
            .collect();
        problems.push(format!("rooms import each other in a circle: {}", ties.join(", ")));
    }
    problems
}

/// A circle in the room graph, as its rooms with the first repeated at the end.
fn find_circle(edges: &BTreeMap<String, BTreeMap<String, Reference>>) -> Option<Vec<String>> {
    fn visit(
        room: &str,
        edges: &BTreeMap<String, BTreeMap<String, Reference>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|r| r == room) {
            let mut circle = path[at..].to_vec();
            circle.push(room.to_owned());
            return Some(circle);
        }
        if done.contains(room) {
            return None;
        }
        path.push(room.to_owned());
        for next in edges.get(room).into_iter().flat_map(|e| e.keys()) {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(room.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|room| visit(room, edges, &mut Vec::new(), &mut done))
}

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_import_goes_down_the_layers_and_no_rooms_import_each_other_in_a_circle() {
    let files = source_files(&src());
    assert!(files.len() > 50, "the source tree was read ({} files)", files.len());
    let problems = problems(&files);
    assert!(problems.is_empty(), "the house is out of plan:\n{}", problems.join("\n"));
}

#[test]
fn every_room_of_the_tree_has_a_layer_and_every_layer_room_exists() {
    let rooms: BTreeSet<String> =
        source_files(&src()).iter().filter_map(|f| f.module.first().cloned()).collect();
    for layer in LAYERS {
        for room in layer.rooms {
            assert!(
                rooms.contains(*room),
                "LAYERS names `{room}` ({}), which src/ does not have",
                layer.name
            );
        }
    }
}

/// A tree of its own with one file planted where it does not belong.
fn planted(files: &[(&str, &str)]) -> Vec<SourceFile> {
    files
        .iter()
        .map(|(path, text)| SourceFile {
            shown: format!("src/{path}"),
            module: module_path(Path::new(path)),
            text: (*text).to_owned(),
        })
        .collect()
}

#[test]
fn a_planted_upward_import_fails_naming_the_file_the_line_and_the_layers() {
    let files = planted(&[
        (
            "lifecycle/mod.rs",
            "//! pure\nuse crate::alert::AlertStatus;\n\nfn f() { crate::store::open(); }\n",
        ),
        ("alert.rs", "pub enum AlertStatus {}\n"),
        ("store/mod.rs", "pub fn open() {}\n"),
    ]);
    let problems = problems(&files);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert!(p.starts_with("src/lifecycle/mod.rs:4: `crate::store` imports upwards"), "{p}");
    assert!(p.contains("layer 4 (parts with I/O)") && p.contains("layer 3 (pure steps)"), "{p}");
}

#[test]
fn braced_groups_super_paths_and_circles_are_seen_while_comments_strings_and_tests_are_not() {
    let files = planted(&[
        (
            "route/mod.rs",
            "use crate::{\n    alert::X,\n    template::{Subject, TemplateSet},\n};\n// crate::pipeline in a comment\nconst S: &str = \"crate::app\";\n#[cfg(test)]\nmod tests {\n    use crate::app::App;\n}\n",
        ),
        ("template/mod.rs", "mod context;\n"),
        ("template/context.rs", "use super::super::route::Target;\nuse super::Subject;\n"),
        ("alert.rs", ""),
    ]);
    let problems = problems(&files);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("rooms import each other in a circle: route -> template"),
        "{}",
        problems[0]
    );
    assert!(problems[0].contains("src/template/context.rs:1: `super::super::route`"), "{}", problems[0]);
}
