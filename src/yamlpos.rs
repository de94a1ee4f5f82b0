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
}
