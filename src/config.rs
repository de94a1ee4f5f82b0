//! The worker configuration: connections by name, where policies and holds live, the evidence
//! key, report sinks and defaults. Secrets are never inline: a connection URL with a password and
//! every key come from an environment variable or a mounted file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::policy::{valid_identifier, valid_table_name};
use crate::yamlpos::Positions;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Named database connections referenced by policies.
    #[serde(deserialize_with = "crate::policy::unique_keys")]
    pub connections: BTreeMap<String, Connection>,
    /// Directory of policy files, relative to this file. Default `policies`.
    #[serde(default = "default_policies")]
    pub policies: PathBuf,
    /// Optional YAML file of legal holds, relative to this file.
    #[serde(default)]
    pub holds_file: Option<PathBuf>,
    /// The key for the keyed hashes (HMAC-SHA256) that identify records in evidence.
    pub evidence: SecretRef,
    /// Key for the `pseudonymize` strategy, if any policy uses it.
    #[serde(default)]
    pub pseudonymization: Option<SecretRef>,
    #[serde(default)]
    pub reports: Reports,
    #[serde(default)]
    pub defaults: Defaults,
    /// Prometheus metrics at the end of each run (textfile and/or Pushgateway).
    #[serde(default)]
    pub metrics: crate::metrics::MetricsConfig,
    /// Jobs for `lapse schedule` (cron expressions with time zones).
    #[serde(default)]
    pub schedule: Option<crate::schedule::Schedule>,
    /// Set by the loader: the directory of the config file.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub path: PathBuf,
    /// Set by the loader: SHA-256 (hex) of the bytes read (reports carry it keyed,
    /// `report::Inputs`).
    #[serde(skip)]
    pub sha256: String,
}

fn default_policies() -> PathBuf {
    PathBuf::from("policies")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// `sql` (default: PostgreSQL, MySQL/MariaDB or SQLite by URL), `s3` or `directory`.
    #[serde(default)]
    pub kind: ConnectionKind,
    /// S3: region (default: from the AWS environment, else us-east-1).
    #[serde(default)]
    pub region: Option<String>,
    /// S3: custom endpoint for S3-compatible stores (MinIO, Ceph, Garage).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3: path-style addressing (most S3-compatible stores need it).
    #[serde(default)]
    pub path_style: bool,
    /// S3: default bucket for policies that name none.
    #[serde(default)]
    pub bucket: Option<String>,
    /// Directory: the root directory (relative to this file).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// S3: seconds a run lock object lasts without renewal (default 600: a killed worker blocks
    /// the policy at most that long); 0 turns the S3 run lock off.
    #[serde(default = "default_lease")]
    pub run_lock_lease: u64,
    /// SQL: seconds a statement waits for a lock another session holds (a row the application
    /// has locked, a table being altered) before its batch fails (default 50, InnoDB's own;
    /// 1 to 3600): PostgreSQL's `lock_timeout`, MariaDB/MySQL's `innodb_lock_wait_timeout` and
    /// `lock_wait_timeout`, SQLite's busy timeout. Without it a run, and a scheduler's later
    /// ticks, could wait for ever.
    #[serde(default = "default_lock_wait")]
    pub lock_wait: u64,
    /// Objects: parallel requests (default 8).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Inline URL: allowed only without a password (e.g. `sqlite://data/app.db`).
    #[serde(default)]
    pub url: Option<String>,
    /// Name of an environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// Path of a file holding the URL (a mounted Kubernetes secret).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// A table of legal holds in this database, checked inside every destroying statement.
    #[serde(default)]
    pub holds_table: Option<HoldsTable>,
    /// Table where each committed batch records its evidence, in the same transaction.
    #[serde(default = "default_journal")]
    pub journal_table: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    #[default]
    Sql,
    S3,
    Directory,
}

fn default_lease() -> u64 {
    crate::objstore::s3::DEFAULT_LEASE.as_secs()
}

fn default_lock_wait() -> u64 {
    50
}

fn default_concurrency() -> usize {
    8
}

fn default_journal() -> String {
    "lapse_journal".into()
}

/// Column names of a holds table. A row holds the records of `subject` (NULL: every subject)
/// under `policy` (NULL: every policy) until `expires` (NULL: until released).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldsTable {
    pub table: String,
    #[serde(default = "col_id")]
    pub id: String,
    #[serde(default = "col_subject")]
    pub subject: String,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub matter: Option<String>,
}

fn col_id() -> String {
    "id".into()
}
fn col_subject() -> String {
    "subject".into()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    #[serde(default)]
    pub key_env: Option<String>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    /// Directory for reports, relative to this file. Default `reports`.
    #[serde(default = "default_reports")]
    pub dir: PathBuf,
    /// Ed25519 signing key (64 hex characters, the 32-byte seed). Every report is signed with it;
    /// `lapse report verify` needs only the public key.
    #[serde(default)]
    pub signing_key: Option<SecretRef>,
    /// A second, tamper-resistant copy of every report on an S3 bucket (with Object Lock
    /// retention when configured). The local directory stays the working copy.
    #[serde(default)]
    pub s3: Option<ReportBucket>,
}

impl Default for Reports {
    fn default() -> Self {
        Reports { dir: default_reports(), signing_key: None, s3: None }
    }
}

/// `reports.s3`: where reports are archived.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBucket {
    /// An `s3` connection (its region, endpoint and addressing; credentials from the AWS chain).
    pub connection: String,
    pub bucket: String,
    /// Key prefix, e.g. `lapse/prod/` (default: the bucket root).
    #[serde(default)]
    pub prefix: String,
    /// Object Lock retention put on every report object; the bucket must have Object Lock enabled.
    #[serde(default)]
    pub retention: Option<ReportRetention>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRetention {
    pub mode: LockMode,
    /// Days each report object is kept locked (1 to 36500).
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// Nobody, root included, can delete or shorten it before it expires.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can.
    Governance,
}

fn default_reports() -> PathBuf {
    PathBuf::from("reports")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Rows per batch (one transaction each). Default 5000 (capped per statement by
    /// `Connector::max_batch`).
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// Largest share of a dataset one run may destroy before the guardrail stops the policy.
    /// Default 0.25.
    /// A fraction (`0.25`) or a percentage (`25%`), as a policy's `guardrail.max_share` (a
    /// percentage was refused here: "expected f64"; found by a README review).
    #[serde(default = "default_share", deserialize_with = "share")]
    pub max_share: f64,
    /// Seconds a run may go without progress (a stage begun, a batch done) before it is
    /// abandoned as stalled: a database or store that stops answering without closing the
    /// connection (a partition, a failover behind a stale address) leaves a statement waiting
    /// for ever. Default 1800 (1 to 86400); what was committed is accounted for by the next
    /// run, as for a killed one.
    #[serde(default = "default_stall")]
    pub stall_seconds: u64,
}

fn share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    // (Its range is checked with the config's other values.)
    crate::policy::share_value(&<serde_yaml_ng::Value as serde::Deserialize>::deserialize(d)?).ok_or_else(|| {
        serde::de::Error::custom("max_share must be a fraction from 0 to 1 or a percentage such as '25%'")
    })
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { batch_size: default_batch(), max_share: default_share(), stall_seconds: default_stall() }
    }
}

fn default_stall() -> u64 {
    1800
}

fn default_batch() -> u32 {
    5000
}
fn default_share() -> f64 {
    0.25
}

impl Config {
    /// Reads and checks the config offline. Every problem is a diagnostic.
    pub fn load(path: &Path, diags: &mut Diagnostics) -> Option<Config> {
        let (text, sha256) = match std::fs::read(path) {
            Ok(b) => {
                let sha256 = crate::integrity::sha256_hex(&b);
                match crate::yamlpos::decode(path, b) {
                    Ok(t) => (t, sha256),
                    Err(d) => {
                        diags.push(d);
                        return None;
                    }
                }
            }
            Err(e) => {
                diags.push(Diagnostic::error(format!("cannot read config: {e}")).in_file(path));
                return None;
            }
        };
        if let Some((line, column)) = crate::yamlpos::too_deep(&text) {
            diags.push(crate::policy::deep_error().at(Some(Location { file: path.to_path_buf(), line, column })));
            return None;
        }
        let pos = Positions::index(path, &text);
        let mut cfg: Config = match crate::yamlpos::no_panic(|| serde_yaml_ng::from_str::<Config>(&text))
            .unwrap_or_else(|| Err(serde::de::Error::custom(crate::yamlpos::PARSER_FAILED)))
        {
            Ok(c) => c,
            Err(e) => {
                // Deserialising stops at the first problem: the sections are read again one by
                // one (each connection alone), so that every section's first problem is said.
                let whole = crate::yamlpos::serde_error(path, &e, 0, &pos, false);
                match section_errors(path, &text, &pos) {
                    Some(each) => diags.0.extend(each.with(whole)),
                    None => diags.push(whole),
                }
                return None;
            }
        };
        let mut nulls = pos.unread_values(0);
        nulls.extend(pos.unreadable(0));
        if !nulls.is_empty() {
            diags.0.extend(nulls);
            return None;
        }
        cfg.path = path.to_path_buf();
        cfg.sha256 = sha256;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let at = |p: &str| pos.nearest(0, p);
        let before = diags.0.iter().filter(|d| d.is_error()).count();
        for (name, c) in &cfg.connections {
            let base = format!("connections.{name}");
            let sources = c.url.is_some() as u8 + c.url_env.is_some() as u8 + c.url_file.is_some() as u8;
            let objects = c.kind != ConnectionKind::Sql;
            if objects && sources > 0 {
                diags.push(
                    Diagnostic::error(format!("connection '{name}': an object-store connection takes no url"))
                        .at(at(&base)),
                );
            }
            if c.kind == ConnectionKind::Directory && c.path.is_none() {
                diags.push(
                    Diagnostic::error(format!("connection '{name}': a directory connection needs 'path'"))
                        .at(at(&base)),
                );
            }
            if c.concurrency == 0 || c.concurrency > 256 {
                diags.push(
                    Diagnostic::error(format!("connection '{name}': concurrency must be from 1 to 256")).at(at(&base)),
                );
            }
            // Past a day a killed worker would block its policies that long; a lease near
            // u64::MAX overflowed the lock's expiry (a panic before anything was done).
            if c.run_lock_lease > 86_400 {
                diags.push(
                    Diagnostic::error(format!(
                        "connection '{name}': run_lock_lease must be from 0 (no run lock) to 86400 seconds, not {}",
                        c.run_lock_lease
                    ))
                    .at(at(&format!("{base}.run_lock_lease"))),
                );
            }
            if !(1..=3600).contains(&c.lock_wait) {
                diags.push(
                    Diagnostic::error(format!(
                        "connection '{name}': lock_wait must be from 1 to 3600 seconds, not {}",
                        c.lock_wait
                    ))
                    .at(at(&format!("{base}.lock_wait"))),
                );
            }
            if !objects && sources != 1 {
                diags.push(
                    Diagnostic::error(format!("connection '{name}' needs exactly one of url, url_env, url_file"))
                        .at(at(&base)),
                );
            }
            if c.url_env.as_deref().is_some_and(|v| !env_name(v)) {
                diags.push(
                    Diagnostic::error(format!("connection '{name}': {NOT_AN_ENV_NAME}"))
                        .at(at(&format!("{base}.url_env"))),
                );
            }
            if c.url_file.as_deref().is_some_and(path_is_url) {
                diags.push(
                    Diagnostic::error(format!("connection '{name}': url_file {PATH_IS_A_URL}"))
                        .at(at(&format!("{base}.url_file"))),
                );
            }
            if let Some(u) = &c.url {
                if url_has_password(u) {
                    diags.push(Diagnostic::error(format!(
                        "connection '{name}': the inline url carries a password; put it in an environment variable (url_env) or a mounted file (url_file)"
                    )).at(at(&format!("{base}.url"))));
                }
            }
            if !valid_table_name(&c.journal_table) {
                diags.push(
                    Diagnostic::error(format!("connection '{name}': invalid journal_table '{}'", c.journal_table))
                        .at(at(&format!("{base}.journal_table"))),
                );
            } else if let Some(m) = temporary_schema(&c.journal_table) {
                diags.push(
                    Diagnostic::error(format!("connection '{name}': journal_table '{}' {m}", c.journal_table))
                        .at(at(&format!("{base}.journal_table"))),
                );
            }
            if let Some(h) = &c.holds_table {
                let hb = format!("{base}.holds_table");
                if !valid_table_name(&h.table) {
                    diags.push(
                        Diagnostic::error(format!("connection '{name}': invalid holds table '{}'", h.table))
                            .at(at(&format!("{hb}.table"))),
                    );
                } else if let Some(m) = temporary_schema(&h.table) {
                    diags.push(
                        Diagnostic::error(format!("connection '{name}': holds table '{}' {m}", h.table))
                            .at(at(&format!("{hb}.table"))),
                    );
                }
                let columns = [
                    ("id", Some(&h.id)),
                    ("subject", Some(&h.subject)),
                    ("policy", h.policy.as_ref()),
                    ("expires", h.expires.as_ref()),
                    ("matter", h.matter.as_ref()),
                ];
                for (field, col) in columns.into_iter().filter_map(|(f, c)| Some((f, c?))) {
                    if !valid_identifier(col) {
                        diags.push(
                            Diagnostic::error(format!("connection '{name}': invalid holds table column '{col}'"))
                                .at(at(&format!("{hb}.{field}"))),
                        );
                    }
                }
                // A hold's id goes into every report, its subject never: one column for both
                // wrote the held subjects into the reports (found by a review).
                if h.id.eq_ignore_ascii_case(&h.subject) {
                    diags.push(
                        Diagnostic::error(format!(
                            "connection '{name}': the holds table's id column is its subject column '{}': hold ids are written into the reports, subjects never; name a column of its own for the id",
                            h.subject
                        ))
                        .at(at(&format!("{hb}.id"))),
                    );
                }
            }
        }
        let secrets = [
            ("evidence", Some(&cfg.evidence)),
            ("pseudonymization", cfg.pseudonymization.as_ref()),
            ("reports.signing_key", cfg.reports.signing_key.as_ref()),
        ];
        for (what, r) in secrets.into_iter().filter_map(|(w, r)| Some((w, r?))) {
            if r.key_env.as_deref().is_some_and(|v| !env_name(v)) {
                diags.push(
                    Diagnostic::error(format!("{what}: key_env {NOT_AN_ENV_NAME}")).at(at(&format!("{what}.key_env"))),
                );
            }
            if r.key_file.as_deref().is_some_and(path_is_url) {
                diags.push(
                    Diagnostic::error(format!("{what}: key_file {PATH_IS_A_URL}")).at(at(&format!("{what}.key_file"))),
                );
            }
            if r.key_env.is_some() && r.key_file.is_some() {
                // Before, key_env won without a word: the key file named was not the key used.
                diags.push(
                    Diagnostic::error(format!("{what}: both key_env and key_file are set; give one of them"))
                        .at(at(what)),
                );
            }
        }
        if cfg.evidence.key_env.is_none() && cfg.evidence.key_file.is_none() {
            diags.push(
                Diagnostic::error(
                    "evidence needs key_env or key_file (the HMAC key that identifies records in reports)",
                )
                .at(at("evidence")),
            );
        }
        if let Some(r) = &cfg.reports.s3 {
            match cfg.connections.get(&r.connection) {
                None => diags.push(
                    Diagnostic::error(format!("reports.s3: unknown connection '{}'", r.connection))
                        .at(at("reports.s3.connection")),
                ),
                Some(c) if c.kind != ConnectionKind::S3 => diags.push(
                    Diagnostic::error(format!("reports.s3: connection '{}' is not of kind s3", r.connection))
                        .at(at("reports.s3.connection")),
                ),
                Some(_) => {}
            }
            if !crate::objstore::valid_bucket(&r.bucket) {
                diags.push(
                    Diagnostic::error(format!("reports.s3: invalid bucket name '{}'", r.bucket))
                        .at(at("reports.s3.bucket")),
                );
            }
            if r.prefix.starts_with('/') || r.prefix.contains("..") || r.prefix.chars().any(char::is_control) {
                diags.push(
                    Diagnostic::error("reports.s3.prefix must be a relative key prefix without '..'")
                        .at(at("reports.s3.prefix")),
                );
            }
            if let Some(ret) = &r.retention {
                if ret.days == 0 || ret.days > 36_500 {
                    diags.push(
                        Diagnostic::error("reports.s3.retention.days must be from 1 to 36500")
                            .at(at("reports.s3.retention.days")),
                    );
                }
            }
        }
        if let Some(sch) = &cfg.schedule {
            for (path, msg) in sch.problems() {
                diags.push(Diagnostic::error(msg).at(at(&path)));
            }
            for (path, msg) in sch.finished(chrono::Utc::now()) {
                diags.push(Diagnostic::warning(msg).at(at(&path)));
            }
        }
        if !(0.0..=1.0).contains(&cfg.defaults.max_share) {
            diags.push(Diagnostic::error("defaults.max_share must be from 0 to 1").at(at("defaults.max_share")));
        }
        if cfg.defaults.batch_size == 0 || cfg.defaults.batch_size > 50_000 {
            diags.push(Diagnostic::error("defaults.batch_size must be from 1 to 50000").at(at("defaults.batch_size")));
        }
        if !(1..=86_400).contains(&cfg.defaults.stall_seconds) {
            diags.push(
                Diagnostic::error("defaults.stall_seconds must be from 1 to 86400").at(at("defaults.stall_seconds")),
            );
        }
        // A statement may wait `lock_wait` for a lock, and a run that waits is not stalled.
        if let Some((name, c)) = cfg.connections.iter().find(|(_, c)| c.lock_wait >= cfg.defaults.stall_seconds) {
            diags.push(
                Diagnostic::error(format!(
                    "defaults.stall_seconds ({}) must be longer than connection '{name}''s lock_wait ({}): a run waiting for a lock would be taken for stalled",
                    cfg.defaults.stall_seconds, c.lock_wait
                ))
                .at(at("defaults.stall_seconds")),
            );
        }
        for (p, m) in cfg.metrics.problems() {
            diags.push(Diagnostic::error(m).at(at(&p)));
        }
        if let Some(m) = cfg.metrics.textfile.as_deref().and_then(|t| crate::engine::textfile_overwrites(&cfg, t)) {
            diags.push(Diagnostic::error(m).at(at("metrics.textfile")));
        }
        for d in diags.0.iter_mut().skip(before) {
            if d.file.is_none() {
                d.file = Some(path.to_path_buf());
            }
        }
        let after = diags.0.iter().filter(|d| d.is_error()).count();
        (after == before).then_some(cfg)
    }

    /// `reports.s3.prefix` normalised to end with `/` (or empty).
    pub fn report_prefix(&self) -> String {
        match &self.reports.s3 {
            Some(r) if !r.prefix.is_empty() && !r.prefix.ends_with('/') => format!("{}/", r.prefix),
            Some(r) => r.prefix.clone(),
            None => String::new(),
        }
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// The top-level keys of [`Config`] (`section_errors` reads each alone).
const SECTIONS: [&str; 9] = [
    "connections",
    "policies",
    "holds_file",
    "evidence",
    "pseudonymization",
    "reports",
    "defaults",
    "metrics",
    "schedule",
];

/// The first problem of each top-level section of a config that does not deserialise, each
/// connection read alone ([`crate::yamlpos::Sections`]). None when the text is no YAML mapping
/// (the whole-file error says why).
fn section_errors<'a>(path: &'a Path, text: &str, pos: &'a Positions) -> Option<crate::yamlpos::Sections<'a>> {
    use serde_yaml_ng::Value;
    if !pos.sectionable(0) {
        return None;
    }
    let Ok(Some(Value::Mapping(top))) = crate::yamlpos::no_panic(|| serde_yaml_ng::from_str::<Value>(text)).transpose()
    else {
        return None;
    };
    let mut s = crate::yamlpos::Sections::new(path, pos, 0);
    s.top(&top, &SECTIONS, &["connections", "evidence"], |s, k, at, v| match k {
        "connections" => s.each_entry::<Connection, BTreeMap<String, Connection>>(at, v),
        "policies" => s.read::<PathBuf>(at, v),
        "holds_file" => s.read::<Option<PathBuf>>(at, v),
        "evidence" => s.read::<SecretRef>(at, v),
        "pseudonymization" => s.read::<Option<SecretRef>>(at, v),
        "reports" => s.read::<Reports>(at, v),
        "defaults" => s.read::<Defaults>(at, v),
        "metrics" => s.read::<crate::metrics::MetricsConfig>(at, v),
        _ => s.read::<Option<crate::schedule::Schedule>>(at, v),
    });
    Some(s)
}

/// An environment variable's name: `[A-Za-z_][A-Za-z0-9_]*`.
fn env_name(v: &str) -> bool {
    let mut chars = v.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What is said of a `url_env` or `key_env` that is no variable name. Not what it is: a URL or
/// key pasted in the name's place is a secret.
const NOT_AN_ENV_NAME: &str = "the value is not an environment variable name (letters, digits and '_', not starting with a digit), and is not shown: it may be a secret written in the name's place";

/// Whether a variable name may be printed: a conventional name (`[A-Z_][A-Z0-9_]*`, at most 64
/// characters) that is not hex digits alone. A name `env_name` admits may be a key pasted in its
/// place (a hex key starts with a letter more than a third of the time): such a name is not
/// printed, the config path that names it is.
fn env_name_shown(v: &str) -> bool {
    let mut chars = v.chars();
    v.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !v.chars().all(|c| c.is_ascii_hexdigit())
}

/// How an unset variable is named in an error: by its name when that cannot be a secret, else
/// by the config path (`evidence.key_env`) that holds it.
fn unset_var(var: &str, config_path: &str) -> String {
    match env_name_shown(var) {
        true => format!("environment variable '{var}' is not set"),
        false => format!(
            "the environment variable named by {config_path} is not set (its name is not shown: it may be a secret)"
        ),
    }
}

/// What is said of a `url_file` or `key_file` that is a URL: it is likely the secret itself.
const PATH_IS_A_URL: &str = "contains '://': it is not a file path, and is not shown: it may be a secret written in the path's place (name a file that holds it)";

fn path_is_url(p: &Path) -> bool {
    p.to_string_lossy().contains("://")
}

/// A path as a read error prints it: not one that could carry a secret (`://`, `@`).
fn shown_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    match s.contains("://") || s.contains('@') {
        true => "(not shown: it may hold a secret)".to_string(),
        false => format!("'{}'", p.display()),
    }
}

/// The config section a secret `read_secret` reads (named by `what`) is configured in.
fn secret_section(what: &str) -> &'static str {
    match what {
        "evidence key" => "evidence",
        "pseudonymization key" => "pseudonymization",
        "report signing key" => "reports.signing_key",
        _ => "its section",
    }
}

fn url_has_password(url: &str) -> bool {
    let in_userinfo = url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or_default())
        .and_then(|auth| auth.rsplit_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    // The drivers also take one as a query parameter (`?password=…`; PostgreSQL's
    // `sslpassword` unlocks a client key).
    let in_query = url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            // The drivers decode the names (`pass%77ord` is `password`).
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy().to_ascii_lowercase();
            !value.is_empty() && ["password", "pass", "passwd", "pwd", "sslpassword"].contains(&name.as_str())
        })
    });
    in_userinfo || in_query
}

/// Why a table named so would not outlive its session, if it would not: in PostgreSQL's
/// `pg_temp` (or `pg_temp_N`) schema, or SQLite's `temp`. A journal there vanished with the
/// connection that made it, and with it the record of committed batches a killed run's
/// successor reconciles (found by a read-only review).
fn temporary_schema(table: &str) -> Option<&'static str> {
    let schema = table.split_once('.')?.0.to_ascii_lowercase();
    (schema == "temp" || schema == "pg_temp" || schema.starts_with("pg_temp_") || schema.starts_with("pg_toast_temp"))
        .then_some(
        "is in a temporary schema: it would vanish with the session that made it; name a table of a permanent schema",
    )
}

/// Reads a secret. Errors name the variable or file, never the content.
pub fn read_secret(r: &SecretRef, base: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = if let Some(var) = &r.key_env {
        let named_by = format!("{}.key_env", secret_section(what));
        std::env::var(var).map_err(|_| anyhow::anyhow!("{what}: {}", unset_var(var, &named_by)))?.into_bytes()
    } else if let Some(file) = &r.key_file {
        let path = if file.is_absolute() { file.clone() } else { base.join(file) };
        std::fs::read(&path).map_err(|e| anyhow::anyhow!("{what}: cannot read key file {}: {e}", shown_path(&path)))?
    } else {
        anyhow::bail!("{what}: no key_env or key_file configured");
    };
    let trimmed: Vec<u8> = bytes.trim_ascii().to_vec();
    if trimmed.len() < 16 {
        anyhow::bail!("{what}: the key is shorter than 16 bytes");
    }
    Ok(trimmed)
}

/// Why a key read by [`read_secret`] is guessable, if it looks so: shorter than 32 bytes, or of
/// fewer than 12 distinct characters (a word, a date, a repeated pattern). An evidence key that
/// can be guessed lets anyone holding a report recover small record and subject ids from their
/// keyed hashes (the hash of one known id confirms a guess; found by a read-only review).
/// `lapse keygen` writes 64 random hex digits.
pub fn weak_key(key: &[u8]) -> Option<String> {
    let distinct = key.iter().collect::<std::collections::BTreeSet<_>>().len();
    if key.len() < 32 {
        Some(format!("the key is {} bytes long; use at least 32 random bytes (lapse keygen writes one)", key.len()))
    } else if distinct < 12 {
        Some(format!(
            "the key is made of only {distinct} distinct characters, which looks guessable; use random bytes (lapse keygen writes one)"
        ))
    } else {
        None
    }
}

impl Connection {
    /// The connection URL. Errors name the source, never the URL (it may hold a password).
    pub fn url(&self, name: &str, base: &Path) -> anyhow::Result<String> {
        let raw = if let Some(u) = &self.url {
            u.clone()
        } else if let Some(var) = &self.url_env {
            let named_by = format!("connections.{name}.url_env");
            std::env::var(var).map_err(|_| anyhow::anyhow!("connection '{name}': {}", unset_var(var, &named_by)))?
        } else if let Some(f) = &self.url_file {
            let path = if f.is_absolute() { f.clone() } else { base.join(f) };
            std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("connection '{name}': cannot read url file {}: {e}", shown_path(&path)))?
        } else {
            anyhow::bail!("connection '{name}' has no url")
        };
        // (A variable's value trimmed too: a trailing newline made SQLite's path another file.)
        Ok(sqlite_relative_to(raw.trim(), base))
    }
}

/// A SQLite URL's relative path, `sqlite://db.sqlite` or `sqlite:db.sqlite`, made relative to
/// the config file's directory, however the URL is given (inline, `url_env`, `url_file`):
/// before, only the inline `sqlite://` form was, and the same config run from another
/// directory read another database (found by a review). Other URLs as they are.
pub fn sqlite_relative_to(u: &str, base: &Path) -> String {
    let rest = u.strip_prefix("sqlite://").or_else(|| u.strip_prefix("sqlite:").filter(|r| !r.starts_with("//")));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !rest.starts_with(':') => {
            format!("sqlite://{}", base.join(rest).display())
        }
        _ => u.to_string(),
    }
}

#[cfg(test)]
mod tests {
    /// A guessable evidence key is warned of (found by a review: `password12345678` was taken,
    /// and its key id let a guess of it be tested offline); keygen's is not.
    #[test]
    fn guessable_evidence_keys_are_warned_of() {
        assert!(super::weak_key(b"password12345678").unwrap().contains("16 bytes long"));
        assert!(super::weak_key(b"passwordpasswordpasswordpassword").unwrap().contains("distinct characters"));
        assert!(super::weak_key(b"test-evidence-key-0123456789abcdef").is_none());
        let keygen = "5f0c1e9a7b3d24e6a8c0f1d2b3e4a5c6d7e8f90112233445566778899aabbccd";
        assert!(super::weak_key(keygen.as_bytes()).is_none());
    }

    /// `SECTIONS` is `Config`'s fields, as serde lists them.
    #[test]
    fn sections_are_the_config_fields() {
        let e = serde_yaml_ng::from_str::<super::Config>("zzz: 1").unwrap_err().to_string();
        let listed: Vec<&str> = e.split('`').skip(3).step_by(2).collect();
        assert_eq!(listed, super::SECTIONS, "{e}");
    }

    use super::*;

    /// A SQLite URL's relative path is relative to the config's directory in both spellings
    /// sqlx reads, and from a variable or a file too (before, `sqlite:demo.db` and any URL from
    /// a variable or file were relative to the working directory; found by a review).
    #[test]
    fn sqlite_paths_are_relative_to_the_config() {
        let base = Path::new("/etc/lapse");
        assert_eq!(sqlite_relative_to("sqlite:demo.db", base), "sqlite:///etc/lapse/demo.db");
        assert_eq!(sqlite_relative_to("sqlite://demo.db?mode=ro", base), "sqlite:///etc/lapse/demo.db?mode=ro");
        assert_eq!(sqlite_relative_to("sqlite:///var/db.sqlite", base), "sqlite:///var/db.sqlite");
        assert_eq!(sqlite_relative_to("sqlite::memory:", base), "sqlite::memory:");
        assert_eq!(sqlite_relative_to("postgres://h/db", base), "postgres://h/db");
        let c: Connection = serde_yaml_ng::from_str("url_env: LAPSE_TEST_URL_WITH_NEWLINE").unwrap();
        std::env::set_var("LAPSE_TEST_URL_WITH_NEWLINE", "sqlite:shop.db\n");
        assert_eq!(c.url("db", base).unwrap(), "sqlite:///etc/lapse/shop.db");
    }

    #[test]
    fn variable_names_that_may_be_secrets_are_not_shown() {
        for shown in ["DB_URL", "_X", "LAPSE_TEST_NO_SUCH_KEY_VAR", "Z1"] {
            assert!(env_name_shown(shown), "{shown}");
        }
        // Hex keys (lower or upper case), lower-case or mixed names, and overlong ones.
        let long = "A".repeat(65);
        for hidden in ["deadbeef0123456789abcdef", "DEADBEEF0123", "ABC", "db_url", "S3cret", long.as_str()] {
            assert!(!env_name_shown(hidden), "{hidden}");
            let said = unset_var(hidden, "evidence.key_env");
            assert!(!said.contains(hidden) && said.contains("evidence.key_env"), "{said}");
        }
        assert!(shown_path(Path::new("/run/secrets/postgres://app:pw@db/app")).contains("not shown"));
        assert!(shown_path(Path::new("/run/app@x/key")).contains("not shown"));
        assert_eq!(shown_path(Path::new("/run/secrets/db.url")), "'/run/secrets/db.url'");
    }

    #[test]
    fn environment_variable_names() {
        for ok in ["DB_URL", "_x", "a1"] {
            assert!(env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "postgres://app:S3CRETpw@db.internal/app", "A-B", "A B", "ÄX"] {
            assert!(!env_name(bad), "{bad}");
        }
    }

    #[test]
    fn detects_inline_passwords() {
        assert!(url_has_password("postgres://app:s3cret@db:5432/app"));
        assert!(!url_has_password("postgres://app@db:5432/app"));
        assert!(!url_has_password("sqlite://data/app.db"));
        assert!(!url_has_password("mysql://db:3306/app?x=a:b@c"));
        assert!(url_has_password("postgres://app@db/app?password=s3cret"));
        assert!(url_has_password("postgres://app@db/app?sslmode=require&PassWord=s3cret"));
        assert!(url_has_password("postgres://app@db/app?sslpassword=s3cret"));
        // Percent-encoded names, which the drivers decode (a review found them passed).
        assert!(url_has_password("postgres://app@127.0.0.1:1/app?pass%77ord=S3cretPw"));
        assert!(url_has_password("mysql://app@db/app?%50ASSWORD=S3cretPw"));
        assert!(!url_has_password("postgres://app@db/app?password="));
        assert!(!url_has_password("postgres://app@db/app?application_name=password"));
    }
}
