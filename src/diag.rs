//! Diagnostics: what is wrong with the configuration, and exactly where.
//!
//! Validation collects every problem instead of stopping at the first, so a user fixes a policy
//! directory in one round. A diagnostic renders as
//! `policy 'crm-leads' (policies/crm.yaml:12:5): unknown column 'emial'`.

use std::fmt;
use std::path::PathBuf;

/// A place in a configuration file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    /// An error that is not the configuration's fault: the database or store could not be asked
    /// (connection lost, server error). Nothing is destroyed, but the exit is 1, not 2.
    Unavailable,
}

/// One finding of validation.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The policy concerned, when there is one.
    pub policy: Option<String>,
    /// Where in which file; a file without a position when only the file is known.
    pub location: Option<Location>,
    pub file: Option<PathBuf>,
    pub message: String,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, policy: None, location: None, file: None, message: message.into() }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(message) }
    }

    /// Marks an error as caused by an unreachable or failing backend, not by the configuration.
    pub fn unavailable(mut self) -> Self {
        self.severity = Severity::Unavailable;
        self
    }

    pub fn at(mut self, location: Option<Location>) -> Self {
        if let Some(loc) = &location {
            self.file = Some(loc.file.clone());
        }
        self.location = location;
        self
    }

    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }

    pub fn policy(mut self, name: impl Into<String>) -> Self {
        self.policy = Some(name.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity != Severity::Warning
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            write!(f, "warning: ")?;
        }
        let place = match (&self.location, &self.file) {
            (Some(loc), _) => Some(loc.to_string()),
            (None, Some(file)) => Some(file.display().to_string()),
            (None, None) => None,
        };
        match (&self.policy, place) {
            (Some(p), Some(place)) => write!(f, "policy '{p}' ({place}): ")?,
            (Some(p), None) => write!(f, "policy '{p}': ")?,
            (None, Some(place)) => write!(f, "{place}: ")?,
            (None, None) => {}
        }
        write!(f, "{}", self.message)
    }
}

/// A list of diagnostics that is an error when any of them is.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
    /// Every error is [`Severity::Unavailable`]: the configuration may well be valid.
    pub fn only_unavailable(&self) -> bool {
        self.has_errors() && self.errors().all(|d| d.severity == Severity::Unavailable)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}
