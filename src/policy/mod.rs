//! Retention policies: the YAML files under `policies/`, parsed into a validated model.
//!
//! Loading is pure (no database): every syntax error, unknown key, bad period, bad identifier and
//! inconsistent declaration is collected as a [`Diagnostic`] with file, line and column. Checks
//! that need the live catalog live in [`crate::validate`].

pub mod condition;
pub mod strategy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::period::Period;
use crate::yamlpos::Positions;
use condition::Condition;
use strategy::Strategy;

/// Categories of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Name,
    Email,
    Phone,
    PostalAddress,
    Payment,
    AccountId,
    IpAddress,
    DateOfBirth,
    FreeText,
    GovernmentId,
    Location,
    Device,
}

/// Legal bases for processing (GDPR art. 6(1)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    Consent,
    Contract,
    LegalObligation,
    VitalInterests,
    PublicTask,
    LegitimateInterests,
}

/// What happens to a record once every purpose has lapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Delete,
    Anonymize,
}

/// What happens to rows of a table that references a deleted row by foreign key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    /// Delete the referencing rows in the same transaction (through the same hold checks).
    Cascade,
    /// Keep the parent (and report it) while any row references it.
    Restrict,
}

/// Whether a NULL anchor counts as lapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NullAnchor {
    /// Never destroy a row whose anchor is unknown (the default).
    #[default]
    Keep,
    /// Treat an anchor that says "no date" (NULL, MariaDB's zero date, PostgreSQL's `-infinity`,
    /// SQLite's blank text) as long past. Only for datasets where NULL means "no longer needed".
    /// A date lapse cannot place (partial, `infinity`, a shape it does not read) never lapses.
    Lapse,
}

// ---- the YAML shape -------------------------------------------------------------------------

/// A policy file's document, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// Unique name, used in reports, holds and CLI filters.
    name: String,
    #[serde(default)]
    description: Option<String>,
    dataset: RawDataset,
    /// Personal columns: name -> category and anonymization strategy.
    #[serde(deserialize_with = "unique_keys")]
    personal: BTreeMap<String, RawColumn>,
    purposes: Vec<RawPurpose>,
    on_lapse: Action,
    #[serde(default)]
    dependents: Vec<RawDependent>,
    #[serde(default)]
    guardrail: Option<RawGuardrail>,
    #[serde(default)]
    batch_size: Option<u32>,
    /// With `--shard i/n`: every shard processes this policy, each only the keys of its part
    /// (`key mod n = i`) instead of the whole policy going to one shard. For very large tables.
    #[serde(default)]
    shard_by_key: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    connection: String,
    /// A SQL table (`schema.table` allowed).
    #[serde(default)]
    table: Option<String>,
    /// Key column(s) of the table.
    #[serde(default)]
    key: Option<OneOrMany>,
    /// Tables: the data-subject column. Objects: `key` (from `key_pattern`), `metadata:<name>`
    /// or `tag:<name>`.
    #[serde(default)]
    subject: Option<String>,
    /// Objects: the bucket (S3 connections).
    #[serde(default)]
    bucket: Option<String>,
    /// Objects: the key prefix the policy governs (may be empty).
    #[serde(default)]
    prefix: Option<String>,
    /// Objects: a pattern such as `exports/{yyyy}/{mm}/{dd}/{subject}.csv`.
    #[serde(default)]
    key_pattern: Option<String>,
}

#[derive(Debug)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// By hand rather than `#[serde(untagged)]`, whose error ("data did not match any variant of
/// untagged enum OneOrMany") tells the user nothing.
impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde_yaml_ng::Value;
        let bad = || serde::de::Error::custom("key: expected a column name or a list of column names");
        match Value::deserialize(d)? {
            Value::String(s) => Ok(OneOrMany::One(s)),
            Value::Sequence(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()
                .map(OneOrMany::Many),
            _ => Err(bad()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    category: Category,
    #[serde(default)]
    anonymize: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    name: String,
    legal_basis: LegalBasis,
    /// How long after the anchor the purpose holds: `90d`, `18 months`, `7y`.
    retain: String,
    /// The anchor column (a date or timestamp).
    after: String,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    covers: Option<Vec<String>>,
    #[serde(default)]
    null_anchor: NullAnchor,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependent {
    table: String,
    #[serde(default)]
    foreign_key: Option<String>,
    on_delete: OnDelete,
    #[serde(default)]
    dependents: Vec<RawDependent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuardrail {
    max_share: serde_yaml_ng::Value,
}

// ---- the validated model --------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct PersonalColumn {
    pub name: String,
    pub category: Category,
    pub strategy: Option<Strategy>,
}

#[derive(Debug, Clone)]
pub struct Purpose {
    pub name: String,
    pub legal_basis: LegalBasis,
    pub period: Period,
    pub retain: String,
    pub anchor: String,
    pub condition: Option<Condition>,
    /// Personal columns this purpose needs, resolved (never empty).
    pub covers: Vec<String>,
    pub null_anchor: NullAnchor,
    /// Set when this purpose was borrowed from another policy on the same table.
    pub from_policy: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Dependent {
    pub table: String,
    pub foreign_key: Option<String>,
    pub on_delete: OnDelete,
    pub dependents: Vec<Dependent>,
    pub path: String,
}

/// A dataset of objects: a bucket (or directory) and a prefix.
#[derive(Debug, Clone)]
pub struct ObjectDataset {
    pub bucket: Option<String>,
    pub prefix: String,
    pub pattern: Option<crate::objstore::KeyPattern>,
}

/// A policy's name: letters, digits, `-` and `_`, at most 100.
pub fn valid_policy_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 100 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    /// Object-store dataset description; `None` for a SQL table.
    pub objects: Option<ObjectDataset>,
    pub description: Option<String>,
    pub file: PathBuf,
    pub doc: usize,
    pub connection: String,
    pub table: String,
    pub key: Vec<String>,
    pub subject: Option<String>,
    pub columns: Vec<PersonalColumn>,
    pub purposes: Vec<Purpose>,
    pub action: Action,
    pub dependents: Vec<Dependent>,
    pub max_share: Option<f64>,
    pub batch_size: Option<u32>,
    /// Split this policy's keys across shards instead of assigning it to one (see `shard`).
    pub shard_by_key: bool,
    pub positions: Arc<Positions>,
}

impl Policy {
    /// The policies whose holds keep this policy's records: itself first, then every other
    /// policy on its table (those whose purposes `check_set` lent it), each once.
    pub fn hold_policies(&self) -> Vec<&str> {
        let mut out = vec![self.name.as_str()];
        for from in self.purposes.iter().filter_map(|x| x.from_policy.as_deref()) {
            if !out.contains(&from) {
                out.push(from);
            }
        }
        out
    }

    /// The position of a path inside this policy's document, for diagnostics.
    pub fn at(&self, path: &str) -> Option<Location> {
        self.positions.value(self.doc, path).or_else(|| self.positions.nearest(self.doc, path))
    }

    pub fn key_at(&self, path: &str) -> Option<Location> {
        self.positions.key(self.doc, path)
    }

    pub fn error(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(message).policy(&self.name).at(self.at(path)).in_file(&self.file)
    }

    pub fn column(&self, name: &str) -> Option<&PersonalColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Every column name the policy refers to, with the path where it is written.
    pub fn referenced_columns(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, k) in self.key.iter().enumerate() {
            out.push((k.clone(), if self.key.len() == 1 { "dataset.key".into() } else { format!("dataset.key.{i}") }));
        }
        if let Some(s) = &self.subject {
            out.push((s.clone(), "dataset.subject".into()));
        }
        for c in &self.columns {
            out.push((c.name.clone(), format!("personal.{}", c.name)));
        }
        for (i, p) in self.purposes.iter().enumerate().filter(|(_, p)| p.from_policy.is_none()) {
            out.push((p.anchor.clone(), format!("purposes.{i}.after")));
            if let Some(c) = &p.condition {
                for col in c.columns() {
                    out.push((col.to_string(), format!("purposes.{i}.when")));
                }
            }
        }
        out
    }
}

/// A policy file and the SHA-256 of its bytes, recorded in every report.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyFile {
    pub path: PathBuf,
    pub sha256: String,
}

/// The diagnostic for a file nested deeper than `yamlpos::MAX_FLOW_DEPTH`.
pub fn deep_error() -> Diagnostic {
    Diagnostic::error(format!(
        "'[' and '{{' nested deeper than {} levels; refused before parsing",
        crate::yamlpos::MAX_FLOW_DEPTH
    ))
}

/// A mapping into a `BTreeMap` that refuses a key given twice. Plain serde keeps the last
/// entry silently, so `email` declared twice under `personal` (or a connection twice in the
/// config) would drop the first declaration without a word.
pub fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(k) = map.next_key::<String>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!("duplicate entry '{k}'")));
                }
                let v = map.next_value()?;
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique(std::marker::PhantomData))
}

/// Identifiers are letters, digits and `_`, not starting with a digit, at most 63 characters.
/// Anything else (spaces, quotes, `;`, `--`) is refused before any database is involved; the
/// catalog check and quoting come on top.
pub fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

/// A table name, optionally schema-qualified (`billing.invoices`).
pub fn valid_table_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| valid_identifier(p))
}

fn ident_error(kind: &str, s: &str) -> String {
    format!("invalid {kind} '{s}': identifiers are letters, digits and '_' (not starting with a digit), at most 63 characters")
}

/// The policies of a directory (every `*.yaml` / `*.yml`, in name order).
#[derive(Debug, Default)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
    pub files: Vec<PolicyFile>,
}

pub fn load_dir(dir: &Path, diags: &mut Diagnostics) -> PolicySet {
    let mut set = PolicySet::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::error(format!("cannot read policy directory '{}': {e}", dir.display())));
            return set;
        }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut subdirs: Vec<PathBuf> = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if path.is_dir() {
            // Hidden directories are not policies: a Kubernetes ConfigMap mount keeps its
            // files in `..data` and a timestamped `..2024_…` beside the links it reads. Nor is
            // `lost+found` (the root of an ext4 volume), nor any directory without policy
            // files directly in it (`policies: .` beside other directories): only one with
            // policy files is refused, as those would be skipped without a word.
            let lost_found = path.file_name().is_some_and(|n| n == "lost+found");
            if !hidden && !lost_found && holds_policy_files(&path, 4) {
                subdirs.push(path);
            }
        } else if is_policy_file(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    subdirs.sort();
    for d in &subdirs {
        // Not read: a policy file in it would be skipped without a word.
        diags.push(Diagnostic::error(format!(
            "'{}' is a directory inside the policy directory with policy files (*.yaml) in it or below it (or that cannot be read); subdirectories are not read: move its policy files up into '{}'",
            d.display(),
            dir.display()
        )));
    }
    if paths.is_empty() {
        diags.push(Diagnostic::error(format!("no policy files (*.yaml) in '{}'", dir.display())));
    }
    for path in paths {
        load_file(&path, &mut set, diags);
    }
    check_set(&mut set, diags);
    set
}

/// Whether a directory has policy files in it or in its (not hidden) directories, `depth` levels
/// down; one that cannot be read may have (said, not passed over).
fn holds_policy_files(dir: &Path, depth: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return true };
    entries.filter_map(|e| e.ok().map(|e| e.path())).any(|p| {
        let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') || n == "lost+found");
        match p.is_dir() {
            true => depth > 0 && !hidden && holds_policy_files(&p, depth - 1),
            false => is_policy_file(&p),
        }
    })
}

/// A policy file's name ends in `.yaml` or `.yml`, in any case (`extra.YAML` too).
fn is_policy_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

pub fn load_file(path: &Path, set: &mut PolicySet, diags: &mut Diagnostics) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            diags.push(Diagnostic::error(format!("cannot read: {e}")).in_file(path));
            return;
        }
    };
    load_bytes(path, bytes, set, diags);
}

/// Parses and validates the policies of one file's content (`path` is only for diagnostics).
/// Whatever the bytes, this returns diagnostics and never panics: it is the fuzz target's entry
/// point (`fuzz/fuzz_targets/policy.rs`).
pub fn load_bytes(path: &Path, bytes: Vec<u8>, set: &mut PolicySet, diags: &mut Diagnostics) {
    set.files.push(PolicyFile { path: path.to_path_buf(), sha256: hex::encode(Sha256::digest(&bytes)) });
    let text = match crate::yamlpos::decode(path, bytes) {
        Ok(t) => t,
        Err(d) => {
            diags.push(d);
            return;
        }
    };
    if let Some((line, column)) = crate::yamlpos::too_deep(&text) {
        let at = Location { file: path.to_path_buf(), line, column };
        diags.push(deep_error().at(Some(at)));
        return;
    }
    let positions = Arc::new(Positions::index(path, &text));
    let mut last_error: Option<String> = None;
    // The documents again, for the sections of those that do not deserialise (the first few:
    // a file of thousands of broken documents gets one problem each).
    const SECTIONED_DOCUMENTS: usize = 20;
    let mut sectioned = 0;
    let mut again = serde_yaml_ng::Deserializer::from_str(&text).enumerate();
    for (doc, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let Some(parsed) = crate::yamlpos::no_panic(|| RawPolicy::deserialize(de)) else {
            diags.push(Diagnostic::error(crate::yamlpos::PARSER_FAILED).in_file(path));
            break;
        };
        match parsed {
            Ok(raw) => {
                // Said besides what `resolve` says of the same key (`retain:` is an empty period
                // there too); either error keeps the policy from running.
                diags.0.extend(positions.unread_values(doc));
                diags.0.extend(positions.unreadable(doc));
                if let Some(p) = resolve(raw, path, doc, positions.clone(), diags) {
                    set.policies.push(p);
                }
            }
            Err(e) => {
                // A syntax error ends the stream: the reader would repeat it forever.
                let repeated = last_error.as_deref() == Some(e.to_string().as_str());
                if repeated {
                    break;
                }
                last_error = Some(e.to_string());
                // Deserialising stops at the first problem: the document's sections are read
                // again one by one (each column, purpose and dependent alone), so that every
                // one's first problem is said.
                let whole = crate::yamlpos::serde_error(path, &e, doc, &positions, false);
                let each = match sectioned < SECTIONED_DOCUMENTS {
                    true => {
                        sectioned += 1;
                        let de = again.by_ref().find(|(i, _)| *i >= doc).filter(|(i, _)| *i == doc);
                        de.and_then(|(_, de)| section_errors(path, de, doc, &positions))
                    }
                    false => None,
                };
                match each {
                    Some(each) => diags.0.extend(each.with(whole)),
                    None => diags.push(whole),
                }
                if e.location().is_none() || doc > 10_000 {
                    break;
                }
            }
        }
    }
}

/// The top-level keys of a policy (`section_errors` reads each alone).
const SECTIONS: [&str; 10] = [
    "name",
    "description",
    "dataset",
    "personal",
    "purposes",
    "on_lapse",
    "dependents",
    "guardrail",
    "batch_size",
    "shard_by_key",
];

/// The first problem of each section of policy document `doc` (which did not deserialise), each
/// personal column, purpose and dependent read alone ([`crate::yamlpos::Sections`]). None when
/// the document is no YAML mapping (the whole-document error says why).
fn section_errors<'a>(
    path: &'a Path,
    de: serde_yaml_ng::Deserializer,
    doc: usize,
    positions: &'a Positions,
) -> Option<crate::yamlpos::Sections<'a>> {
    use serde_yaml_ng::Value;
    if !positions.sectionable(doc) {
        return None;
    }
    let Some(Ok(Value::Mapping(top))) = crate::yamlpos::no_panic(|| Value::deserialize(de)) else {
        return None;
    };
    let required = ["name", "dataset", "personal", "purposes", "on_lapse"];
    let mut s = crate::yamlpos::Sections::new(path, positions, doc);
    s.top(&top, &SECTIONS, &required, |s, k, at, v| match k {
        "name" => s.read::<String>(at, v),
        "description" => s.read::<Option<String>>(at, v),
        "dataset" => s.read::<RawDataset>(at, v),
        "personal" => s.each_entry::<RawColumn, BTreeMap<String, RawColumn>>(at, v),
        "purposes" => s.each_item::<RawPurpose, Vec<RawPurpose>>(at, v),
        "on_lapse" => s.read::<Action>(at, v),
        "dependents" => s.each_item::<RawDependent, Vec<RawDependent>>(at, v),
        "guardrail" => s.read::<Option<RawGuardrail>>(at, v),
        "batch_size" => s.read::<Option<u32>>(at, v),
        _ => s.read::<bool>(at, v),
    });
    Some(s)
}

fn resolve(
    raw: RawPolicy,
    file: &Path,
    doc: usize,
    positions: Arc<Positions>,
    diags: &mut Diagnostics,
) -> Option<Policy> {
    let start = diags.0.len();
    let mut p = Policy {
        name: raw.name.clone(),
        description: raw.description,
        file: file.to_path_buf(),
        doc,
        objects: None,
        connection: raw.dataset.connection,
        table: raw.dataset.table.clone().unwrap_or_default(),
        key: match raw.dataset.key {
            Some(OneOrMany::One(k)) => vec![k],
            Some(OneOrMany::Many(ks)) => ks,
            None => vec![],
        },
        subject: raw.dataset.subject,
        columns: Vec::new(),
        purposes: Vec::new(),
        action: raw.on_lapse,
        dependents: Vec::new(),
        max_share: None,
        batch_size: raw.batch_size,
        shard_by_key: raw.shard_by_key,
        positions,
    };
    let mut errs: Vec<Diagnostic> = Vec::new();
    if !valid_policy_name(&raw.name) {
        errs.push(p.error(
            "name",
            format!("invalid policy name '{}': use letters, digits, '-' and '_' (at most 100)", raw.name),
        ));
    }
    let is_objects = raw.dataset.prefix.is_some() || raw.dataset.bucket.is_some() || raw.dataset.key_pattern.is_some();
    if is_objects {
        if raw.dataset.table.is_some() || !p.key.is_empty() {
            errs.push(p.error(
                "dataset",
                "a dataset is either a table (table, key) or objects (bucket, prefix, key_pattern), not both",
            ));
        }
        let pattern = match raw.dataset.key_pattern.as_deref().map(crate::objstore::KeyPattern::parse) {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => {
                errs.push(p.error("dataset.key_pattern", e));
                None
            }
        };
        let prefix = raw
            .dataset
            .prefix
            .clone()
            .unwrap_or_else(|| pattern.as_ref().map(|k| k.literal_prefix()).unwrap_or_default());
        // A prefix and a pattern no key can meet govern nothing, without a word (found by a
        // review: `prefix: files/` with `key_pattern: exports/…` counted 0 objects, exit 0).
        if let (Some(given), Some(k)) = (&raw.dataset.prefix, &pattern) {
            let lp = k.literal_prefix();
            if !(lp.starts_with(given.as_str()) || given.starts_with(lp.as_str())) {
                errs.push(p.error(
                    "dataset.prefix",
                    format!("no key under prefix '{given}' can match the key_pattern, whose keys begin '{lp}'"),
                ));
            }
        }
        if let Some(b) = &raw.dataset.bucket {
            if !crate::objstore::valid_bucket(b) {
                errs.push(p.error("dataset.bucket", format!("invalid bucket name '{b}'")));
            }
        }
        p.table = match &raw.dataset.bucket {
            Some(b) => format!("{b}/{prefix}"),
            None => prefix.clone(),
        };
        p.key = vec!["key".into()];
        p.objects = Some(ObjectDataset { bucket: raw.dataset.bucket.clone(), prefix, pattern });
    } else if raw.dataset.table.is_none() || p.key.is_empty() {
        errs.push(p.error(
            "dataset",
            "the dataset needs 'table' and 'key' (a SQL table), or 'prefix' / 'key_pattern' (objects)",
        ));
    } else if !valid_table_name(&p.table) {
        errs.push(p.error("dataset.table", ident_error("table name", &p.table)));
    }
    for (i, k) in p.key.iter().enumerate().filter(|_| !is_objects) {
        if !valid_identifier(k) {
            let path = if p.key.len() == 1 { "dataset.key".to_string() } else { format!("dataset.key.{i}") };
            errs.push(p.error(&path, ident_error("key column", k)));
        }
    }
    if let (Some(s), true) = (&p.subject, is_objects) {
        match crate::objstore::Fact::parse(s, true) {
            // Without `{subject}` in a key pattern, no object's subject could be read: every
            // object would be unreadable, for good.
            Ok(crate::objstore::Fact::KeySubject)
                if p.objects.as_ref().is_some_and(|o| o.pattern.as_ref().is_none_or(|k| !k.has_subject())) =>
            {
                errs.push(p.error("dataset.subject", "subject 'key' needs a key_pattern with {subject}"));
            }
            Ok(_) => {}
            Err(e) => errs.push(p.error("dataset.subject", e)),
        }
    } else if let Some(s) = &p.subject {
        if !valid_identifier(s) {
            errs.push(p.error("dataset.subject", ident_error("subject column", s)));
        }
    }
    if let Some(b) = p.batch_size {
        if b == 0 || b > 50_000 {
            errs.push(p.error("batch_size", format!("batch_size {b} is out of range (1 to 50000)")));
        }
    }
    if raw.personal.is_empty() {
        errs.push(p.error("personal", "a policy must declare at least one personal column"));
    }
    for (name, col) in raw.personal {
        let path = format!("personal.{name}");
        if !valid_identifier(&name) {
            errs.push(Diagnostic::error(ident_error("column", &name)).policy(&p.name).at(p.key_at(&path)));
            continue;
        }
        if is_objects && col.anonymize.is_some() {
            errs.push(p.error(&format!("{path}.anonymize"), "objects cannot be anonymized; an object policy deletes"));
        }
        let strategy = match &col.anonymize {
            None => None,
            Some(v) => match Strategy::from_yaml(v) {
                Ok(s) => Some(s),
                Err(e) => {
                    errs.push(p.error(&format!("{path}.anonymize"), format!("column '{name}': {e}")));
                    None
                }
            },
        };
        p.columns.push(PersonalColumn { name, category: col.category, strategy });
    }
    if raw.purposes.is_empty() {
        errs.push(p.error("purposes", "a policy must declare at least one purpose"));
    }
    let all_columns: Vec<String> = p.columns.iter().map(|c| c.name.clone()).collect();
    let mut purpose_names = BTreeSet::new();
    for (i, rp) in raw.purposes.into_iter().enumerate() {
        let path = format!("purposes.{i}");
        // Names differing only in case are one name to a reader, and to a case-insensitive
        // collation.
        if !purpose_names.insert(rp.name.to_lowercase()) {
            errs.push(p.error(&format!("{path}.name"), format!("duplicate purpose '{}'", rp.name)));
        }
        let period = match Period::parse(&rp.retain) {
            Ok(x) => x,
            Err(e) => {
                errs.push(p.error(&format!("{path}.retain"), format!("purpose '{}': {e}", rp.name)));
                Period::default()
            }
        };
        if is_objects {
            match crate::objstore::Fact::parse(&rp.after, false) {
                Ok(crate::objstore::Fact::KeyDate)
                    if p.objects.as_ref().is_some_and(|o| o.pattern.as_ref().is_none_or(|k| !k.has_date())) =>
                {
                    errs.push(p.error(&format!("{path}.after"), "anchor 'key_date' needs a key_pattern with {yyyy}"));
                }
                Ok(_) => {}
                Err(e) => errs.push(p.error(&format!("{path}.after"), e)),
            }
            if rp.when.is_some() {
                errs.push(p.error(&format!("{path}.when"), "conditions ('when') are not supported on objects"));
            }
        } else if !valid_identifier(&rp.after) {
            errs.push(p.error(&format!("{path}.after"), ident_error("anchor column", &rp.after)));
        }
        let condition = match rp.when.as_deref().map(condition::parse) {
            None => None,
            Some(Ok(c)) => {
                for col in c.columns() {
                    if !valid_identifier(col) {
                        errs.push(p.error(&format!("{path}.when"), ident_error("column", col)));
                    }
                }
                Some(c)
            }
            Some(Err(e)) => {
                errs.push(p.error(&format!("{path}.when"), format!("purpose '{}': {e}", rp.name)));
                None
            }
        };
        let covers = match rp.covers {
            None => all_columns.clone(),
            Some(list) => {
                for (j, c) in list.iter().enumerate() {
                    if list[..j].contains(c) {
                        errs.push(
                            p.error(&format!("{path}.covers.{j}"), format!("purpose '{}' covers '{c}' twice", rp.name)),
                        );
                    }
                    if !all_columns.contains(c) {
                        errs.push(p.error(
                            &format!("{path}.covers.{j}"),
                            format!("purpose '{}' covers '{c}', which is not declared under 'personal'", rp.name),
                        ));
                    }
                }
                if list.is_empty() {
                    errs.push(p.error(&format!("{path}.covers"), format!("purpose '{}' covers no column", rp.name)));
                }
                list
            }
        };
        p.purposes.push(Purpose {
            name: rp.name,
            legal_basis: rp.legal_basis,
            period,
            retain: rp.retain,
            anchor: rp.after,
            condition,
            covers,
            null_anchor: rp.null_anchor,
            from_policy: None,
        });
    }
    // Every personal column must be needed by some purpose, or it is held with no reason at all.
    for c in &p.columns {
        if !p.purposes.iter().any(|pu| pu.covers.contains(&c.name)) {
            errs.push(p.error(
                &format!("personal.{}", c.name),
                format!("personal column '{}' is covered by no purpose", c.name),
            ));
        }
    }
    // A column a purpose counts from is a date or timestamp: text compared with it must be a
    // full date, whatever the database (validation checks the other temporal columns).
    for (i, pu) in p.purposes.iter().enumerate() {
        let Some(cond) = &pu.condition else { continue };
        for anchor in p.purposes.iter().map(|x| x.anchor.as_str()).collect::<BTreeSet<_>>() {
            for t in cond.texts_for(anchor).filter(|t| !condition::is_time_literal(t)) {
                errs.push(p.error(&format!("purposes.{i}.when"), time_literal_error(&pu.name, t, "anchor", anchor)));
            }
        }
    }
    p.dependents = resolve_dependents(&p, raw.dependents, "dependents", &mut errs);
    if let Some(g) = raw.guardrail {
        match parse_share(&g.max_share) {
            Ok(s) => p.max_share = Some(s),
            Err(e) => errs.push(p.error("guardrail.max_share", e)),
        }
    }
    if is_objects {
        if p.action != Action::Delete {
            errs.push(p.error("on_lapse", "objects cannot be anonymized: use on_lapse: delete"));
        }
        if !p.dependents.is_empty() {
            errs.push(p.error("dependents", "objects have no dependents"));
        }
        if p.purposes.iter().any(|x| x.covers.len() != p.columns.len()) {
            errs.push(p.error("purposes", "purposes of an object policy cover the whole object (no 'covers')"));
        }
    } else {
        check_anonymization(&p, &mut errs);
    }
    diags.0.extend(errs);
    (diags.0.len() == start).then_some(p)
}

/// A condition's text literal that is no full date or time, compared with a date or timestamp column.
/// `what` names the column's kind (`date`, `timestamp`, or `anchor` where the catalog is not read).
pub fn time_literal_error(purpose: &str, literal: &str, what: &str, column: &str) -> String {
    format!(
        "purpose '{purpose}': the condition compares {what} column '{column}' with '{literal}', which is not a full date or time: write {}",
        condition::TIME_LITERAL_SHAPES
    )
}

fn resolve_dependents(p: &Policy, raw: Vec<RawDependent>, base: &str, errs: &mut Vec<Diagnostic>) -> Vec<Dependent> {
    raw.into_iter()
        .enumerate()
        .map(|(i, d)| {
            let path = format!("{base}.{i}");
            if !valid_table_name(&d.table) {
                errs.push(p.error(&format!("{path}.table"), ident_error("table name", &d.table)));
            }
            if let Some(fk) = &d.foreign_key {
                if !valid_identifier(fk) {
                    errs.push(p.error(&format!("{path}.foreign_key"), ident_error("constraint name", fk)));
                }
            }
            if d.on_delete == OnDelete::Restrict && !d.dependents.is_empty() {
                errs.push(p.error(
                    &format!("{path}.dependents"),
                    "a 'restrict' dependent deletes nothing, so it cannot have dependents of its own",
                ));
            }
            let nested = resolve_dependents(p, d.dependents, &format!("{path}.dependents"), errs);
            Dependent { table: d.table, foreign_key: d.foreign_key, on_delete: d.on_delete, dependents: nested, path }
        })
        .collect()
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Delete => "delete",
        Action::Anonymize => "anonymize",
    }
}

/// A share as written: a fraction (`0.25`) or a percentage (`25%`), whatever its range.
pub(crate) fn share_value(v: &serde_yaml_ng::Value) -> Option<f64> {
    match v {
        serde_yaml_ng::Value::Number(n) => n.as_f64(),
        serde_yaml_ng::Value::String(s) => {
            s.trim().strip_suffix('%').and_then(|x| x.trim().parse::<f64>().ok()).map(|x| x / 100.0)
        }
        _ => None,
    }
}

/// A share is a number from 0 to 1 or a percentage (`25%`).
fn parse_share(v: &serde_yaml_ng::Value) -> Result<f64, String> {
    match share_value(v) {
        Some(s) if (0.0..=1.0).contains(&s) => Ok(s),
        _ => Err("max_share must be a fraction from 0 to 1 or a percentage such as '25%'".into()),
    }
}

/// A purpose, as a diagnostic names it: with its policy when another policy on the table lent it.
fn purpose_name(pu: &Purpose) -> String {
    match &pu.from_policy {
        Some(other) => format!("purpose '{}' of policy '{other}'", pu.name),
        None => format!("purpose '{}'", pu.name),
    }
}

/// The checks of a policy's anonymization, on its own purposes (`resolve`) and again on those
/// merged with the other policies' on its table (`check_set`), where more can lapse apart.
fn check_anonymization(p: &Policy, errs: &mut Vec<Diagnostic>) {
    check_strategies(p, errs);
    check_anchors_kept(p, errs);
    check_subject_kept(p, errs);
}

/// Anonymization must be complete: every column that may be anonymized needs an irreversible
/// strategy, or the record would keep personal data while being reported as anonymized.
fn check_strategies(p: &Policy, errs: &mut Vec<Diagnostic>) {
    for c in &p.columns {
        // Any prefix of an e-mail address is its local part (`jane.doe`), which names the
        // person; and a prefix as long as most addresses changes none of them, each then
        // counted done (found by a review).
        if let (Category::Email, Some(Strategy::KeepPrefix(n))) = (c.category, &c.strategy) {
            errs.push(p.error(
                &format!("personal.{}.anonymize", c.name),
                format!(
                    "column '{}' is an e-mail address: keep_prefix: {n} keeps its local part, which names the person (use random_token, pseudonymize or nullify)",
                    c.name
                ),
            ));
        }
        // By purpose, not by name: a purpose lent by another policy on the table may have the
        // name of one of this policy's (both `retention`), and compared by name, a column
        // covered by one only passed for covered by both.
        let covering: Vec<&Purpose> = p.purposes.iter().filter(|x| x.covers.contains(&c.name)).collect();
        let field_level = covering.len() != p.purposes.len(); // may lapse before the record does
        let needs = p.action == Action::Anonymize || field_level;
        if needs && c.strategy.is_none() {
            let why = if p.action == Action::Anonymize {
                "the policy anonymizes on lapse".to_string()
            } else {
                // Purposes lent by another policy on the table keep the record, not the column.
                let lent: Vec<String> = p
                    .purposes
                    .iter()
                    .filter(|x| x.from_policy.is_some() && !x.covers.contains(&c.name))
                    .map(purpose_name)
                    .collect();
                let kept = match lent.is_empty() {
                    true => String::new(),
                    false => format!("; the record is kept by {}", lent.join(", ")),
                };
                let names: Vec<String> = covering
                    .iter()
                    .map(|x| match x.from_policy {
                        Some(_) => purpose_name(x),
                        None => x.name.clone(),
                    })
                    .collect();
                format!("it lapses before the record does (covered only by {}{kept})", names.join(", "))
            };
            errs.push(p.error(
                &format!("personal.{}", c.name),
                format!(
                    "personal column '{}' has no 'anonymize' strategy, but {why}: the record would keep it",
                    c.name
                ),
            ));
        }
    }
}

/// Whether `strategy` on a purpose's anchor leaves a lapsed purpose lapsed: a date moved only
/// earlier, or a NULL that counts as lapsed under its `null_anchor: lapse`.
fn anchor_stays_lapsed(strategy: Option<&Strategy>, pu: &Purpose) -> bool {
    match strategy {
        Some(Strategy::GeneralizeDate(_)) => true,
        Some(Strategy::Nullify) => pu.null_anchor == NullAnchor::Lapse,
        _ => false,
    }
}

/// A column a purpose counts its lapse from (`after`), or whose condition reads it (`when`), is
/// anonymized only together with the whole record: a changed value moves that purpose's lapse
/// (a `constant: 1900-01-01` birth date, a year-generalized one, lapses earlier, and a second
/// run with the same cutoff would destroy more), or undoes it (a nulled anchor under
/// `null_anchor: keep`, a later constant, a condition no longer true): a purpose that lapsed
/// runs again. A purpose covering the column is not enough: once the column is anonymized
/// (when the purposes covering it have lapsed), the reading purpose may run again while another
/// purpose keeps the record, and then the record never lapses (nor do the columns only both
/// cover). So every purpose of the (merged) policy must cover the column: it is then anonymized
/// only with the whole record, where nothing is left to lapse.
fn check_anchors_kept(p: &Policy, errs: &mut Vec<Diagnostic>) {
    for c in p.columns.iter().filter(|c| c.strategy.is_some()) {
        let Some(open) = p.purposes.iter().find(|pu| !pu.covers.contains(&c.name)) else { continue };
        let path = format!("personal.{}.anonymize", c.name);
        let reads_when = |pu: &&Purpose| pu.condition.as_ref().is_some_and(|k| k.columns().any(|x| x == c.name));
        // Name the purpose that does not cover the column itself when it is the reader.
        let pick = |f: &dyn Fn(&&Purpose) -> bool| {
            p.purposes.iter().filter(|pu| f(pu)).min_by_key(|pu| pu.covers.contains(&c.name))
        };
        // A strategy that only moves a date earlier, or a NULL that counts as lapsed, leaves a
        // purpose that covers the column (so has lapsed when it is anonymized) lapsed.
        let keeps_lapsed = |pu: &Purpose| pu.covers.contains(&c.name) && anchor_stays_lapsed(c.strategy.as_ref(), pu);
        let anchored = |pu: &&Purpose| pu.anchor == c.name && !keeps_lapsed(pu);
        let (reader, how) = if let Some(pu) = pick(&anchored) {
            (pu, format!("counts its lapse from it (after: {})", c.name))
        } else if let Some(pu) = pick(&reads_when) {
            (pu, "reads it in its condition (when)".to_string())
        } else {
            continue;
        };
        let open_words = match reader.covers.contains(&c.name) {
            false => "does not cover it".to_string(),
            true => format!("{} does not cover it", purpose_name(open)),
        };
        errs.push(p.error(
            &path,
            format!(
                "column '{}' cannot be anonymized: {} {how} and {open_words}, so the column may be anonymized while the record is kept, and a changed value would move or undo that lapse (the record then kept past it); let every purpose cover '{}', or do not anonymize it",
                c.name,
                purpose_name(reader),
                c.name
            ),
        ));
    }
}

/// The subject column is what a legal hold names: anonymized while the record keeps other
/// personal data, a hold added later would no longer find the record, which is then destroyed.
fn check_subject_kept(p: &Policy, errs: &mut Vec<Diagnostic>) {
    let Some(subject) = p.subject.as_deref() else { return };
    let Some(c) = p.column(subject).filter(|c| c.strategy.is_some()) else { return };
    // A purpose that does not cover the subject column keeps the record (and the columns it
    // covers) after the subject column is anonymized.
    let Some(pu) = p.purposes.iter().find(|pu| !pu.covers.contains(&c.name)) else { return };
    let keeps = match pu.covers.is_empty() {
        true => String::new(),
        false => format!(" and its {}", pu.covers.iter().map(|x| format!("'{x}'")).collect::<Vec<_>>().join(", ")),
    };
    errs.push(p.error(
        &format!("personal.{}.anonymize", c.name),
        format!(
            "subject column '{}' cannot be anonymized before the record: {} keeps the record{keeps} longer, and a legal hold on the subject could no longer find it; let every purpose cover '{}', or do not anonymize it",
            c.name,
            purpose_name(pu),
            c.name
        ),
    ));
}

/// How two policies' dependents (of one table) differ, if they do: the first difference, said
/// of the first list ("'orders' is cascade here, restrict"), by table and foreign key.
fn dependents_differ(a: &[Dependent], b: &[Dependent]) -> Option<String> {
    let word = |o: OnDelete| match o {
        OnDelete::Cascade => "cascade",
        OnDelete::Restrict => "restrict",
    };
    let same = |x: &Dependent, y: &Dependent| x.table == y.table && x.foreign_key == y.foreign_key;
    let name = |d: &Dependent| match &d.foreign_key {
        Some(fk) => format!("'{}' (foreign key '{fk}')", d.table),
        None => format!("'{}'", d.table),
    };
    for x in a {
        let Some(y) = b.iter().find(|y| same(x, y)) else {
            return Some(format!("dependent {} is declared here, not", name(x)));
        };
        if x.on_delete != y.on_delete {
            return Some(format!("dependent {} is {} here, {}", name(x), word(x.on_delete), word(y.on_delete)));
        }
        if let Some(why) = dependents_differ(&x.dependents, &y.dependents) {
            return Some(format!("under dependent {}, {why}", name(x)));
        }
    }
    b.iter().find(|y| !a.iter().any(|x| same(x, y))).map(|y| format!("dependent {} is not declared here, but", name(y)))
}

/// Checks across policies: unique names; policies on the same table must agree on what happens
/// to shared columns; and they share their purposes, because keeping wins over destroying.
pub fn check_set(set: &mut PolicySet, diags: &mut Diagnostics) {
    // Names differing only in case are one name to a reader, to a case-insensitive file system
    // (report files) and to a case-insensitive collation (a holds table's policy column).
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, p) in set.policies.iter().enumerate() {
        if let Some(&j) = names.get(&p.name.to_lowercase()) {
            let other = &set.policies[j];
            diags.push(p.error(
                "name",
                format!(
                    "duplicate policy name '{}' (also in {})",
                    p.name,
                    other.at("name").map(|l| l.to_string()).unwrap_or_default()
                ),
            ));
        } else {
            names.insert(p.name.to_lowercase(), i);
        }
    }
    let n = set.policies.len();
    let mut borrowed: Vec<Vec<Purpose>> = vec![Vec::new(); n];
    #[allow(clippy::needless_range_loop)] // pairs of policies, by index on both sides
    for i in 0..n {
        for j in 0..n {
            let (a, b) = (&set.policies[i], &set.policies[j]);
            if i == j || a.connection != b.connection || a.table != b.table {
                continue;
            }
            if i < j {
                // Their holds are shared as their purposes are (a hold of either keeps the
                // records from both, `engine::stages`), and a hold names subjects: both must
                // find a subject in the same column.
                if a.subject != b.subject {
                    let name = |s: &Option<String>| s.as_ref().map_or("none".to_string(), |c| format!("'{c}'"));
                    diags.push(a.error(
                        "dataset",
                        format!(
                            "policies on table '{}' name different subject columns: {} here, {} in policy '{}' ({}); their holds are shared, so they must find subjects alike",
                            a.table,
                            name(&a.subject),
                            name(&b.subject),
                            b.name,
                            b.at("dataset").map(|l| l.to_string()).unwrap_or_default()
                        ),
                    ));
                }
                // Objects under one prefix read with different key patterns: each policy counts
                // the objects of the other's shape as unreadable, and the purposes they share keep
                // an object until the other's anchor, which its own objects may not have (a CSV
                // kept for ever by a `metadata:` anchor only the PDFs carry; found by a review).
                let pattern = |p: &Policy| p.objects.as_ref().and_then(|o| o.pattern.as_ref()).map(|k| k.to_string());
                if a.objects.is_some() && b.objects.is_some() && pattern(a) != pattern(b) {
                    let name = |k: Option<String>| k.map_or("none".to_string(), |k| format!("'{k}'"));
                    diags.push(a.error(
                        "dataset",
                        format!(
                            "policies on the objects under '{}' read their keys with different key patterns: {} here, {} in policy '{}' ({}); each would count the other's objects as unreadable, and their shared purposes would keep an object until an anchor it may not have; give them one key pattern, or prefixes that do not overlap",
                            a.table,
                            name(pattern(a)),
                            name(pattern(b)),
                            b.name,
                            b.at("dataset").map(|l| l.to_string()).unwrap_or_default()
                        ),
                    ));
                }
                if a.action != b.action {
                    diags.push(a.error(
                        "on_lapse",
                        format!(
                            "conflicting actions on table '{}': this policy says '{}', policy '{}' ({}) says '{}'",
                            a.table,
                            action_word(a.action),
                            b.name,
                            b.at("on_lapse").map(|l| l.to_string()).unwrap_or_default(),
                            action_word(b.action)
                        ),
                    ));
                }
                // They find the same records due, and each deletes them with its own
                // dependents: a child one keeps its parent for (`restrict`) that the other
                // deletes with it (`cascade`) would be deleted all the same (found by a
                // read-only review).
                if a.action == Action::Delete && b.action == Action::Delete {
                    if let Some(why) = dependents_differ(&a.dependents, &b.dependents) {
                        diags.push(a.error(
                            "dependents",
                            format!(
                                "policies on table '{}' treat its dependents differently: {why} in policy '{}' ({}); they delete the same records, so their dependents must be declared alike",
                                a.table,
                                b.name,
                                b.at("dependents").or_else(|| b.at("name")).map(|l| l.to_string()).unwrap_or_default()
                            ),
                        ));
                    }
                }
                for c in &a.columns {
                    if let Some(bc) = b.column(&c.name) {
                        if let (Some(sa), Some(sb)) = (&c.strategy, &bc.strategy) {
                            if sa != sb {
                                diags.push(a.error(
                                    &format!("personal.{}", c.name),
                                    format!(
                                        "conflicting strategies for column '{}': {} here, {} in policy '{}'",
                                        c.name, sa, sb, b.name
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
            // Precedence: a record of this table is destroyed only when the purposes of every
            // policy on the table have lapsed.
            for pu in &b.purposes {
                if pu.from_policy.is_none() {
                    let mut borrowed_purpose = pu.clone();
                    borrowed_purpose.from_policy = Some(b.name.clone());
                    borrowed_purpose.covers.retain(|c| a.column(c).is_some());
                    if borrowed_purpose.covers.is_empty() {
                        // Covers none of this policy's columns: still keeps the record alive.
                        borrowed_purpose.covers = Vec::new();
                    }
                    borrowed[i].push(borrowed_purpose);
                }
            }
        }
    }
    for (p, extra) in set.policies.iter_mut().zip(borrowed) {
        p.purposes.extend(extra);
    }
    // Merged, a column may lapse before the record (another policy keeps it), and another
    // policy's purpose may count from a column this one anonymizes: checked again (each policy
    // passed them alone, so only what the merge brought is said).
    for p in set.policies.iter().filter(|p| p.objects.is_none() && p.purposes.iter().any(|x| x.from_policy.is_some())) {
        let mut errs = Vec::new();
        check_anonymization(p, &mut errs);
        check_read_by_the_table(p, &set.policies, &mut errs);
        diags.0.extend(errs);
    }
}

/// Policies that anonymize one table each anonymize their own columns, one record stage after
/// another, and each finds a record due by the purposes of all of them: a column one changes that
/// a purpose reads (`when`, or `after` with a strategy that can undo the lapse) made the next
/// policy find nothing due, so its other columns were kept for ever and counted nowhere, or not,
/// by the order of the files (found by a read-only review of multi-policy runs). Such a column
/// is refused unless every policy on the table anonymizes no column this one leaves.
fn check_read_by_the_table(p: &Policy, all: &[Policy], errs: &mut Vec<Diagnostic>) {
    if p.action != Action::Anonymize {
        return;
    }
    let mine = |q: &Policy| -> Vec<String> {
        q.columns.iter().filter(|c| c.strategy.is_some()).map(|c| c.name.clone()).collect()
    };
    let own = mine(p);
    // The other anonymizing policies on the table, with a column this one does not anonymize.
    let left: Vec<(&Policy, Vec<String>)> = all
        .iter()
        .filter(|q| q.name != p.name && q.connection == p.connection && q.table == p.table && q.objects.is_none())
        .filter(|q| q.action == Action::Anonymize)
        .map(|q| (q, mine(q).into_iter().filter(|c| !own.contains(c)).collect::<Vec<_>>()))
        .filter(|(_, cols)| !cols.is_empty())
        .collect();
    let Some((q, cols)) = left.first() else { return };
    for c in p.columns.iter().filter(|c| c.strategy.is_some()) {
        let reader = p.purposes.iter().find_map(|pu| {
            if pu.condition.as_ref().is_some_and(|k| k.columns().any(|x| x == c.name)) {
                Some((pu, "reads it in its condition (when)".to_string()))
            } else if pu.anchor == c.name && !anchor_stays_lapsed(c.strategy.as_ref(), pu) {
                Some((pu, format!("counts its lapse from it (after: {})", c.name)))
            } else {
                None
            }
        });
        let Some((pu, how)) = reader else { continue };
        let named = cols.iter().map(|x| format!("'{x}'")).collect::<Vec<_>>().join(", ");
        errs.push(p.error(
            &format!("personal.{}.anonymize", c.name),
            format!(
                "column '{}' cannot be anonymized: {} {how}, and policy '{}' on the same table anonymizes {named}, which this policy does not; \
                 once this policy has changed '{}', that purpose would no longer lapse and {named} would be kept for ever. \
                 Let the policies on this table anonymize the same columns, or do not anonymize '{}'",
                c.name,
                purpose_name(pu),
                q.name,
                c.name,
                c.name
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    /// `SECTIONS` is `RawPolicy`'s fields, as serde lists them.
    #[test]
    fn sections_are_the_policy_fields() {
        let e = serde_yaml_ng::from_str::<super::RawPolicy>("zzz: 1").unwrap_err().to_string();
        let listed: Vec<&str> = e.split('`').skip(3).step_by(2).collect();
        assert_eq!(listed, super::SECTIONS, "{e}");
    }

    use super::*;

    fn load(text: &str) -> (PolicySet, Diagnostics) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, text).unwrap();
        let mut d = Diagnostics::default();
        let set = load_dir(dir.path(), &mut d);
        (set, d)
    }

    const GOOD: &str = r#"
name: crm-leads
dataset:
  connection: app
  table: leads
  key: id
  subject: customer_id
personal:
  email: { category: email, anonymize: nullify }
  ip: { category: ip_address, anonymize: generalize_ip }
purposes:
  - name: sales
    legal_basis: legitimate_interests
    retain: 18 months
    after: created_at
    when: "status = 'closed'"
on_lapse: delete
"#;

    /// The diagnostics of two policy files, `a.yaml` and `b.yaml`, loaded together.
    fn load_two(a: &str, b: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), a).unwrap();
        std::fs::write(dir.path().join("b.yaml"), b).unwrap();
        let mut d = Diagnostics::default();
        load_dir(dir.path(), &mut d);
        d.to_string()
    }

    /// Two policies on one table that delete with different dependents (found by a read-only
    /// review: one's `cascade` deleted the records and children the other's `restrict` kept).
    #[test]
    fn policies_on_one_table_declare_their_dependents_alike() {
        let a = format!("{GOOD}dependents:\n  - table: orders\n    on_delete: restrict\n");
        let msg = load_two(&a, &a.replace("crm-leads", "marketing").replace("restrict", "cascade"));
        assert!(msg.contains("policies on table 'leads' treat its dependents differently: dependent 'orders' is restrict here, cascade in policy 'marketing' (") && msg.contains("b.yaml:19:3)"), "{msg}");
        let msg = load_two(&a, &GOOD.replace("crm-leads", "marketing"));
        assert!(msg.contains("dependent 'orders' is declared here, not in policy 'marketing'"), "{msg}");
        let c = a.replace("restrict", "cascade");
        let nested = |o: &str| format!("{c}    dependents:\n      - table: lines\n        on_delete: {o}\n");
        let msg = load_two(&nested("cascade"), &nested("restrict").replace("crm-leads", "marketing"));
        assert!(
            msg.contains("under dependent 'orders', dependent 'lines' is cascade here, restrict in policy 'marketing'"),
            "{msg}"
        );
        let msg = load_two(&nested("cascade"), &nested("cascade").replace("crm-leads", "marketing"));
        assert!(!msg.contains("dependents differently"), "{msg}");
        // Another table: nothing to agree on.
        let msg = load_two(&a, &GOOD.replace("crm-leads", "marketing").replace("table: leads", "table: prospects"));
        assert!(!msg.contains("dependents differently"), "{msg}");
    }

    /// Two policies anonymizing one table, one changing a column a purpose reads: the second
    /// found nothing due after the first and kept its own column for ever, by the files' order
    /// (found by a read-only review of multi-policy runs).
    #[test]
    fn a_column_read_by_the_table_is_anonymized_by_none_of_several_policies() {
        let policy = |name: &str, cols: &str, retain: &str, when: &str| {
            format!(
                "name: {name}\ndataset:\n  connection: app\n  table: users\n  key: id\npersonal:\n{cols}purposes:\n  - name: service\n    legal_basis: contract\n    retain: {retain}\n    after: created_at\n{when}on_lapse: anonymize\n"
            )
        };
        let status = "  status: { category: free_text, anonymize: { constant: x } }\n";
        let a = policy("a", &format!("  email: {{ category: email, anonymize: nullify }}\n{status}"), "30d", "");
        let b = policy(
            "b",
            &format!("  phone: {{ category: phone, anonymize: nullify }}\n{status}"),
            "7d",
            "    when: \"status = 'closed'\"\n",
        );
        let msg = load_two(&a, &b);
        assert!(
            msg.contains("policy 'a'") && msg.contains("column 'status' cannot be anonymized: purpose 'service' of policy 'b' reads it in its condition (when), and policy 'b' on the same table anonymizes 'phone', which this policy does not"),
            "{msg}"
        );
        assert!(msg.contains("policy 'a' on the same table anonymizes 'email'"), "{msg}");
        // The same columns in both: the first record stage leaves nothing to the second.
        let both = format!("  email: {{ category: email, anonymize: nullify }}\n  phone: {{ category: phone, anonymize: nullify }}\n{status}");
        let msg =
            load_two(&policy("a", &both, "30d", ""), &policy("b", &both, "7d", "    when: \"status = 'closed'\"\n"));
        assert!(!msg.contains("cannot be anonymized"), "{msg}");
        // A condition on a column no policy changes.
        let msg = load_two(&a, &b.replace(status, "").replace("status = 'closed'", "phone = 'x'"));
        assert!(!msg.contains("'status' cannot be anonymized"), "{msg}");
    }

    #[test]
    fn a_good_policy_loads() {
        let (set, d) = load(GOOD);
        assert!(!d.has_errors(), "{d}");
        let p = &set.policies[0];
        assert_eq!(p.purposes[0].covers, vec!["email", "ip"]);
        assert_eq!(p.purposes[0].period.months, 18);
    }

    #[test]
    fn unknown_keys_are_located() {
        let (_, d) = load(&GOOD.replace("on_lapse: delete", "on_lapse: delete\nretension: 5y"));
        let msg = d.to_string();
        assert!(msg.contains("unknown field `retension`"), "{msg}");
        assert!(msg.contains("p.yaml:18:1"), "{msg}");
    }

    #[test]
    fn semantic_errors_are_all_reported_with_positions() {
        let bad = GOOD.replace("18 months", "18 moons").replace("after: created_at", "after: created_at; DROP TABLE x");
        let (set, d) = load(&bad);
        assert!(set.policies.is_empty());
        let msg = d.to_string();
        assert!(
            msg.contains("policy 'crm-leads' (")
                && msg.contains("p.yaml:14:13): purpose 'sales': invalid period '18 moons'"),
            "{msg}"
        );
        assert!(msg.contains("invalid anchor column 'created_at; DROP TABLE x'"), "{msg}");
    }

    #[test]
    fn partial_anonymization_is_rejected() {
        let bad = GOOD
            .replace("on_lapse: delete", "on_lapse: anonymize")
            .replace("{ category: ip_address, anonymize: generalize_ip }", "{ category: ip_address }");
        let (_, d) = load(&bad);
        assert!(d.to_string().contains("personal column 'ip' has no 'anonymize' strategy"), "{d}");
    }
}
