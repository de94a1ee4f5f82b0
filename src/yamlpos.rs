//! Source positions for YAML documents.
//!
//! `serde_yaml_ng` reports syntax errors and unknown keys with a position, but a typed value
//! carries none, so semantic errors ("unknown column 'emial'") would have no line. This module
//! walks the same text with `yaml-rust2`'s marked event stream and records, for every node, the
//! path that leads to it (`purposes.0.after`) and where it starts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::diag::Location;

/// Positions of the nodes of one YAML file, per document.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    file: PathBuf,
    /// (document index, path) -> position of the value node.
    values: HashMap<(usize, String), (usize, usize)>,
    /// (document index, path) -> position of the mapping key that leads to the node.
    keys: HashMap<(usize, String), (usize, usize)>,
}

impl Positions {
    /// Indexes `text`. A text the scanner cannot read yields an empty index; the serde pass
    /// reports that syntax error with its own position.
    pub fn index(file: &Path, text: &str) -> Positions {
        let mut walker = Walker {
            doc: 0,
            stack: Vec::new(),
            out: Positions { file: file.to_path_buf(), ..Default::default() },
            started: false,
        };
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut walker, true);
        walker.out
    }

    /// Where the value at `path` (dot-separated, sequence items by index) starts.
    pub fn value(&self, doc: usize, path: &str) -> Option<Location> {
        self.values.get(&(doc, path.to_string())).map(|&(line, column)| self.loc(line, column))
    }

    /// Where the key leading to `path` starts; falls back to the value.
    pub fn key(&self, doc: usize, path: &str) -> Option<Location> {
        self.keys
            .get(&(doc, path.to_string()))
            .map(|&(line, column)| self.loc(line, column))
            .or_else(|| self.value(doc, path))
    }

    /// The most precise position known for `path`, walking up to its parents.
    pub fn nearest(&self, doc: usize, path: &str) -> Option<Location> {
        let mut p = path.to_string();
        loop {
            if let Some(l) = self.value(doc, &p) {
                return Some(l);
            }
            match p.rfind('.') {
                Some(i) => p.truncate(i),
                None => return self.value(doc, ""),
            }
        }
    }

    fn loc(&self, line: usize, column: usize) -> Location {
        Location { file: self.file.clone(), line, column }
    }
}

/// Flow collections (`[`, `{`) nested deeper than this are refused before any YAML parser sees
/// the text: the parsers take quadratic time on deep flow nesting (50,000 nested `[` ran for
/// minutes), and no configuration needs more than a few levels.
pub const MAX_FLOW_DEPTH: usize = 100;

/// Where flow nesting first goes deeper than `MAX_FLOW_DEPTH` (1-based line and column), by a
/// cheap scan that skips quoted strings and comments.
pub fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    for c in text.chars() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
            comment = false;
            prev = c;
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if comment => {}
            None => match c {
                '#' if prev.is_whitespace() => comment = true,
                // A quoted scalar starts after a separator, not inside a word (`don't`).
                '\'' | '"' if prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':' | '-' | '?') => {
                    quote = Some(c)
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some((line, col));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    None
}

/// Runs a YAML deserialization, turning a panic of the parser into `None`. `serde_yaml_ng`
/// 0.10 panics ("unexpected end of sequence") on some inputs with an undefined alias inside a
/// sequence (found by the fuzz target); a broken file must be a diagnostic, not a crash. The
/// panic message is not printed.
pub fn no_panic<T>(f: impl FnOnce() -> T) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    std::panic::set_hook(hook);
    out
}

/// The diagnostic message when the YAML parser gave up with a panic.
pub const PARSER_FAILED: &str = "the YAML parser failed on this file (an undefined alias?)";

enum Frame {
    Map { path: String, pending_key: Option<(String, Marker)>, expecting_key: bool },
    Seq { path: String, next: usize },
}

struct Walker {
    doc: usize,
    stack: Vec<Frame>,
    out: Positions,
    started: bool,
}

/// Nodes deeper than this are not indexed: diagnostics never point that deep, and a path per
/// node of a pathologically nested document would cost quadratic time and memory (50,000
/// nested `[` took minutes and gigabytes before this limit).
const MAX_DEPTH: usize = 64;

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

impl Walker {
    /// Claims the path of the node that starts now, advancing the parent container.
    fn node_path(&mut self, mark: Marker) -> Option<String> {
        if self.stack.len() >= MAX_DEPTH {
            return None;
        }
        let (line, col) = (mark.line(), mark.col() + 1);
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Seq { path, next }) => {
                let p = join(path, &next.to_string());
                *next += 1;
                p
            }
            Some(Frame::Map { path, pending_key, expecting_key }) => {
                if *expecting_key {
                    return None; // this node is a key
                }
                *expecting_key = true;
                let (key, kmark) = pending_key.take()?;
                let p = join(path, &key);
                self.out.keys.insert((self.doc, p.clone()), (kmark.line(), kmark.col() + 1));
                p
            }
        };
        self.out.values.insert((self.doc, path.clone()), (line, col));
        Some(path)
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                if self.started {
                    self.doc += 1;
                }
                self.started = true;
                self.stack.clear();
            }
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map { pending_key, expecting_key, .. }) = self.stack.last_mut() {
                    if *expecting_key {
                        *pending_key = Some((value, mark));
                        *expecting_key = false;
                        return;
                    }
                }
                self.node_path(mark);
            }
            Event::Alias(_) => {
                self.node_path(mark);
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(mark).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingStart(..) => {
                let path = self.node_path(mark).unwrap_or_default();
                self.stack.push(Frame::Map { path, pending_key: None, expecting_key: true });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values_and_keys() {
        let text = "name: a\npurposes:\n  - name: p1\n    after: created_at\npersonal:\n  emial:\n    category: email\n---\nname: b\n";
        let pos = Positions::index(Path::new("x.yaml"), text);
        let v = pos.value(0, "purposes.0.after").unwrap();
        assert_eq!((v.line, v.column), (4, 12));
        let k = pos.key(0, "personal.emial").unwrap();
        assert_eq!((k.line, k.column), (6, 3));
        assert_eq!(pos.value(1, "name").unwrap().line, 9);
        assert_eq!(pos.nearest(0, "purposes.0.missing").unwrap().line, 3);
    }

    #[test]
    fn deep_flow_nesting_is_found() {
        assert_eq!(too_deep("a: [[1], {b: [2]}]\n# [[[[\nc: '[[[['\n"), None);
        let hidden = format!("a: don't\nb: {}{}\n", "[".repeat(101), "]".repeat(101));
        assert_eq!(too_deep(&hidden), Some((2, 104)));
        let deep = format!("a: 1\nb: {}{}\n", "[".repeat(101), "]".repeat(101));
        assert_eq!(too_deep(&deep), Some((2, 104)));
    }

    #[test]
    fn deep_nesting_is_indexed_only_near_the_top() {
        let n = 50_000;
        let text = format!("a: {}{}\nb: 1\n", "[".repeat(n), "]".repeat(n));
        let started = std::time::Instant::now();
        let pos = Positions::index(Path::new("x.yaml"), &text);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(pos.values.len() < 100, "{} nodes indexed", pos.values.len());
        assert_eq!(pos.value(0, "a").unwrap().line, 1);
    }
}
