//! The Helm chart (`helm/lapse`) and the `Dockerfile`: what a platform team deploys.
//!
//! The chart is rendered by a real `helm` (from `LAPSE_TEST_HELM`, which `scripts/testbed.sh start`
//! exports; `scripts/helm.sh` installs one) with representative values, and the manifests are
//! parsed and checked: a `Forbid` CronJob, a hardened pod with a read-only root filesystem and an
//! `emptyDir` at /tmp, secrets only by reference, `plan` in dry-run mode, and a worker config and
//! policies that `lapse validate` itself accepts. The schema must reject unknown keys and wrong
//! types, and the checks are shown to fail on a broken copy of the chart. Without a cluster, what a
//! kube-apiserver would add (admission, defaulting) is out of reach.
//!
//! The Dockerfile cannot be built here (no Docker engine): its test only checks its structure.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_yaml_ng::Value;

const RELEASE: &str = "retention";
const NAMESPACE: &str = "privacy";
/// `<release>-<chart>`: the CronJob's name and the default Secret name.
const FULLNAME: &str = "retention-lapse";
const CONFIG_PATH: &str = "/etc/lapse/lapse.yaml";
const SECRETS_DIR: &str = "/var/run/secrets/lapse";
const UID: i64 = 65532;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("helm/lapse")
}

// ------------------------------------------------------------------------------------- helm ---

struct Helm(PathBuf);

/// The helm binary from `LAPSE_TEST_HELM`. Unset: a failure under CI, a skip otherwise.
fn helm() -> Option<Helm> {
    match std::env::var_os("LAPSE_TEST_HELM").filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "LAPSE_TEST_HELM={} is not a file: run scripts/helm.sh", path.display());
            Some(Helm(path))
        }
        None if std::env::var_os("CI").is_some() => panic!(
            "LAPSE_TEST_HELM is not set: run the suite with scripts/test.sh (scripts/testbed.sh start exports it), \
             or export LAPSE_TEST_HELM=\"$(scripts/helm.sh)\""
        ),
        None => {
            eprintln!("skipped: LAPSE_TEST_HELM is not set (export LAPSE_TEST_HELM=\"$(scripts/helm.sh)\")");
            None
        }
    }
}

impl Helm {
    fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        // No user config, cache or plugins: the render depends on the chart and values only.
        let home = tempfile::tempdir().unwrap();
        Command::new(&self.0)
            .args(args)
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_DATA_HOME", home.path().join("data"))
            .env_remove("KUBECONFIG")
            .output()
            .expect("run helm")
    }

    /// `helm template` with values files given as YAML text, then `extra` arguments (`--set`, ...).
    fn template_with(&self, chart: &Path, values: &[&str], extra: &[&str]) -> Result<Rendered, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec![
            "template".into(),
            RELEASE.into(),
            chart.display().to_string(),
            "--namespace".into(),
            NAMESPACE.into(),
        ];
        // Most tests render connections without a claim for the reports, which the chart
        // refuses unless told to accept an emptyDir (`chart_refuses_to_enforce_without_a_reports_claim`).
        let base = dir.path().join("values-base.yaml");
        std::fs::write(&base, "reports:\n  ephemeral: true\n").unwrap();
        args.extend(["-f".into(), base.display().to_string()]);
        for (i, v) in values.iter().enumerate() {
            let path = dir.path().join(format!("values-{i}.yaml"));
            std::fs::write(&path, v).unwrap();
            args.extend(["-f".into(), path.display().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = self.run(&args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Rendered::parse(String::from_utf8(out.stdout).unwrap()))
    }

    fn template(&self, values: &[&str]) -> Rendered {
        self.template_with(&chart_dir(), values, &[]).unwrap_or_else(|e| panic!("helm template failed:\n{e}"))
    }

    /// Renders values that must be refused; returns helm's error.
    fn refused(&self, values: &str) -> String {
        match self.template_with(&chart_dir(), &[values], &[]) {
            Ok(_) => panic!("helm template accepted values it must refuse:\n{values}"),
            Err(e) => e,
        }
    }
}

// --------------------------------------------------------------------------- the manifests ---

/// The manifests `helm template` printed, parsed (one YAML document each).
struct Rendered {
    text: String,
    docs: Vec<Value>,
}

impl Rendered {
    fn parse(text: String) -> Rendered {
        let docs = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("helm printed invalid YAML: {e}\n{text}")))
            .filter(|v| !v.is_null())
            .collect();
        Rendered { text, docs }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect()
    }

    fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind).into_iter().find(|d| d["metadata"]["name"].as_str() == Some(name))
    }

    fn cronjob(&self) -> &Value {
        let all = self.of_kind("CronJob");
        assert_eq!(all.len(), 1, "expected exactly one CronJob");
        all[0]
    }

    fn pod(&self) -> &Value {
        &self.cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        &self.pod()["containers"][0]
    }

    fn args(&self) -> Vec<String> {
        strings(&self.container()["args"])
    }

    fn volume(&self, name: &str) -> Option<&Value> {
        seq(&self.pod()["volumes"]).iter().find(|v| v["name"].as_str() == Some(name))
    }

    /// The volume mounted at `path`, if any.
    fn volume_at(&self, path: &str) -> Option<&Value> {
        let mount = seq(&self.container()["volumeMounts"]).iter().find(|m| m["mountPath"].as_str() == Some(path))?;
        self.volume(mount["name"].as_str()?)
    }

    fn env(&self, name: &str) -> Option<&Value> {
        seq(&self.container()["env"]).iter().find(|e| e["name"].as_str() == Some(name))
    }

    /// The data of a ConfigMap the chart rendered.
    fn configmap(&self, name: &str) -> BTreeMap<String, String> {
        let cm = self.named("ConfigMap", name).unwrap_or_else(|| panic!("no ConfigMap {name}"));
        serde_yaml_ng::from_value(cm["data"].clone()).unwrap_or_default()
    }

    /// The data of a Secret the chart rendered (its `stringData`).
    fn secret(&self, name: &str) -> BTreeMap<String, String> {
        let s = self.named("Secret", name).unwrap_or_else(|| panic!("no Secret {name}"));
        serde_yaml_ng::from_value(s["stringData"].clone()).unwrap_or_default()
    }

    /// The worker config (`lapse.yaml` of the config ConfigMap), parsed.
    fn config(&self) -> Value {
        let data = self.configmap(&format!("{FULLNAME}-config"));
        serde_yaml_ng::from_str(&data["lapse.yaml"]).expect("lapse.yaml is YAML")
    }
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    seq(v).iter().map(|x| x.as_str().unwrap_or_else(|| panic!("not a string: {x:?}")).to_string()).collect()
}

/// Does `text` contain a URL whose user info carries a password (`scheme://user:pass@host`)?
fn has_url_with_password(text: &str) -> bool {
    text.match_indices("://").any(|(i, _)| {
        let authority: String =
            text[i + 3..].chars().take_while(|c| !matches!(c, '/' | '?' | '#' | '"' | '\'' | ' ' | '\n')).collect();
        authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

/// Violations found so far.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }
}

/// What must hold whatever the values: the guarantees the chart gives. Returns every violation,
/// so a test can also show that a broken chart is caught.
fn guarantees(r: &Rendered) -> Vec<String> {
    let mut p = Problems::default();
    let cronjobs = r.of_kind("CronJob");
    if cronjobs.len() != 1 {
        return vec![format!("expected one CronJob, found {}", cronjobs.len())];
    }
    let spec = &cronjobs[0]["spec"];
    p.check(spec["concurrencyPolicy"].as_str() == Some("Forbid"), "concurrencyPolicy must be Forbid");
    p.check(spec["schedule"].as_str().is_some_and(|s| !s.is_empty()), "schedule must be set");
    let job = &spec["jobTemplate"]["spec"];
    p.check(
        job["backoffLimit"].as_i64().is_some() || job["backoffLimitPerIndex"].as_i64().is_some(),
        "backoffLimit (or, sharded, backoffLimitPerIndex) must be set",
    );
    p.check(job["activeDeadlineSeconds"].as_i64().is_some_and(|s| s > 0), "activeDeadlineSeconds must be set");
    let pod = r.pod();
    p.check(pod["restartPolicy"].as_str() == Some("Never"), "restartPolicy must be Never");
    let containers = seq(&pod["containers"]);
    p.check(containers.len() == 1, "exactly one container");

    // Hardening.
    let psc = &pod["securityContext"];
    p.check(psc["runAsNonRoot"].as_bool() == Some(true), "pod runAsNonRoot must be true");
    p.check(psc["runAsUser"].as_i64() == Some(UID), "pod runAsUser must be 65532");
    p.check(
        psc["seccompProfile"]["type"].as_str() == Some("RuntimeDefault"),
        "pod seccompProfile must be RuntimeDefault",
    );
    let csc = &r.container()["securityContext"];
    p.check(csc["runAsNonRoot"].as_bool() == Some(true), "container runAsNonRoot must be true");
    p.check(csc["readOnlyRootFilesystem"].as_bool() == Some(true), "readOnlyRootFilesystem must be true");
    p.check(csc["allowPrivilegeEscalation"].as_bool() == Some(false), "allowPrivilegeEscalation must be false");
    p.check(csc["privileged"].as_bool() != Some(true), "the container must not be privileged");
    p.check(strings(&csc["capabilities"]["drop"]).iter().any(|c| c == "ALL"), "capabilities must drop ALL");
    p.check(strings(&csc["capabilities"]["add"]).is_empty(), "no capability may be added");
    p.check(
        r.volume_at("/tmp").is_some_and(|v| v["emptyDir"].is_mapping()),
        "/tmp must be an emptyDir (the root filesystem is read-only)",
    );

    // The command: run --yes or plan, on the mounted config, JSON logs.
    let args = r.args();
    p.check(
        args.starts_with(&["run".to_string(), "--yes".to_string()]) || args.first().map(String::as_str) == Some("plan"),
        "args must start with `run --yes` or `plan`",
    );
    p.check(args.windows(2).any(|w| w == ["-c", CONFIG_PATH]), "args must pass -c /etc/lapse/lapse.yaml");
    p.check(args.iter().any(|a| a == "--log-format"), "args must set --log-format");
    let config_volume = r.volume_at(CONFIG_PATH);
    p.check(
        config_volume.is_some_and(|v| v["configMap"]["name"].as_str() == Some(format!("{FULLNAME}-config").as_str())),
        "lapse.yaml must be mounted from the config ConfigMap",
    );
    p.check(
        r.volume_at("/etc/lapse/policies").is_some_and(|v| v["configMap"].is_mapping()),
        "policies must be mounted",
    );

    // Secrets only by reference: no Secret object of credentials, no literal secret, every key
    // from the Secret. The one Secret the chart may render is the holds file of `holds.entries`
    // (it names data subjects, which a ConfigMap would show to the view role): that file only.
    let secrets = r.of_kind("Secret");
    let holds_only = secrets.iter().all(|s| {
        s["metadata"]["name"].as_str() == Some(format!("{FULLNAME}-holds").as_str())
            && s["stringData"].as_mapping().is_some_and(|m| m.len() == 1 && m.contains_key("holds.yaml"))
            && s.get("data").is_none()
    });
    p.check(holds_only, "the chart must not render a Secret but the holds file's");
    p.check(r.text.matches("stringData").count() == secrets.len(), "no stringData but the holds file's");
    p.check(!has_url_with_password(&r.text), "no URL with a password in any manifest");
    if r.named("ConfigMap", &format!("{FULLNAME}-config")).is_none() {
        p.check(false, "no config ConfigMap");
        return p.0;
    }
    let config = r.config();
    let reports = config["reports"]["dir"].as_str().unwrap_or_default().to_string();
    p.check(r.volume_at(&reports).is_some(), "the reports directory must be a volume");
    let mut sources: Vec<(String, &Value)> = vec![("evidence".into(), &config["evidence"])];
    p.check(config["evidence"].is_mapping(), "the config must name the evidence key");
    if !config["pseudonymization"].is_null() {
        sources.push(("pseudonymization".into(), &config["pseudonymization"]));
    }
    if !config["reports"]["signing_key"].is_null() {
        sources.push(("reports.signing_key".into(), &config["reports"]["signing_key"]));
    }
    if let Some(conns) = config["connections"].as_mapping() {
        for (name, c) in conns {
            sources.push((format!("connections.{}", name.as_str().unwrap_or("?")), c));
        }
    }
    let secret_items: BTreeSet<String> = r
        .volume_at(SECRETS_DIR)
        .map(|v| seq(&v["secret"]["items"]).iter().filter_map(|i| i["key"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    for (what, source) in sources {
        for field in ["key_file", "url_file"] {
            if let Some(path) = source[field].as_str() {
                let key = path.strip_prefix(&format!("{SECRETS_DIR}/")).unwrap_or_default();
                p.check(
                    secret_items.contains(key),
                    format!("{what}.{field} {path} must be an item of the secret volume at {SECRETS_DIR}"),
                );
            }
        }
        for field in ["key_env", "url_env"] {
            if let Some(var) = source[field].as_str() {
                let env = r.env(var);
                p.check(
                    env.is_some_and(|e| e["value"].is_null() && e["valueFrom"]["secretKeyRef"]["key"].is_string()),
                    format!("{what}.{field} {var} must come from a secretKeyRef"),
                );
            }
        }
        if let Some(url) = source["url"].as_str() {
            p.check(!has_url_with_password(url), format!("{what}.url must not carry a password"));
        }
    }
    p.0
}

fn assert_guarantees(r: &Rendered) {
    let bad = guarantees(r);
    assert!(bad.is_empty(), "the rendered chart breaks its guarantees:\n  {}\n\n{}", bad.join("\n  "), r.text);
}

// ------------------------------------------------------------------------- representative values ---

/// A production-like deployment: two connections (one by Secret, one inline without a
/// password), signed reports, holds, a PVC for reports, IRSA, extra env and volumes.
const FULL: &str = r#"
image:
  repository: registry.example.com/privacy/lapse
  tag: "0.1.0-rc1"
  pullPolicy: Always
  pullSecrets: [registry-creds]
cronjob:
  schedule: "15 1 * * 1-5"
  timeZone: Europe/Berlin
  backoffLimit: 1
  activeDeadlineSeconds: 7200
existingSecret: shop-lapse
secretKeys:
  evidenceKey: evidence-hmac
  signingKey: report-signing
  pseudonymizationKey: pseudonym
config:
  connections:
    shop:
      urlSecretKey: shop-url
      holdsTable: { table: legal_holds, id: id, subject: customer_id, policy: policy,
                    expires: expires_at, matter: matter }
    analytics:
      url: "postgres://analytics-db.data:5432/app?sslmode=verify-full"
      journalTable: lapse_journal_analytics
  defaults: { batchSize: 500, maxShare: 0.1 }
holds:
  entries:
    - id: LH-2026-014
      matter: "Doe v. Example Shop Ltd"
      subjects: ["17", "1234567890123456789"]
      policies: [customers]
      expires: 2027-06-30
reports:
  existingClaim: lapse-reports
  mountPath: /var/lib/lapse/reports
serviceAccount:
  annotations:
    eks.amazonaws.com/role-arn: arn:aws:iam::123456789012:role/lapse
extraEnvVars:
  - name: RUST_BACKTRACE
    value: "1"
  - name: PGSSLROOTCERT
    value: /etc/ssl/corp/ca.pem
extraVolumes:
  - name: corp-ca
    configMap: { name: corp-ca }
extraVolumeMounts:
  - name: corp-ca
    mountPath: /etc/ssl/corp
    readOnly: true
podAnnotations:
  cluster-autoscaler.kubernetes.io/safe-to-evict: "false"
podLabels:
  team: privacy
nodeSelector:
  kubernetes.io/os: linux
tolerations:
  - { key: batch, operator: Equal, value: "true", effect: NoSchedule }
resources:
  requests: { cpu: 250m, memory: 256Mi }
  limits: { memory: 1Gi }
"#;

/// `lapse validate --skip-secrets` of a rendered config laid out as the pod mounts it (secrets
/// are mounted only at run time): asserts it passes, returns its stdout and stderr.
fn lapse_validates(config: &Path) -> (String, String) {
    let out = Command::new(crate::common::lapse_bin())
        .args(["validate", "--skip-secrets", "-c"])
        .arg(config)
        .env_remove("LAPSE_CONFIG")
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(
        out.status.success(),
        "lapse validate refused the chart's config:\n{stdout}{stderr}\n{}",
        std::fs::read_to_string(config).unwrap_or_default()
    );
    (stdout, stderr)
}

/// The demo's policies, as `--set-file` arguments (how a team ships its repository's files).
fn demo_policy_args() -> Vec<String> {
    ["customers", "orders", "support", "leads"]
        .iter()
        .flat_map(|p| {
            let path = repo().join(format!("examples/demo/policies/{p}.yaml"));
            ["--set-file".to_string(), format!("policies.files.{p}\\.yaml={}", path.display())]
        })
        .collect()
}

// ------------------------------------------------------------------------------------- tests ---

#[test]
fn chart_lints_strict() {
    let Some(helm) = helm() else { return };
    for values in [None, Some(FULL)] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["lint".to_string(), "--strict".into(), chart_dir().display().to_string()];
        if let Some(v) = values {
            std::fs::write(dir.path().join("values.yaml"), v).unwrap();
            args.extend(["-f".into(), dir.path().join("values.yaml").display().to_string()]);
        }
        let out = helm.run(&args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "helm lint --strict failed:\n{text}");
        assert!(text.contains("0 chart(s) failed"), "{text}");
    }
}

#[test]
fn chart_defaults_render_a_hardened_forbid_cronjob() {
    let Some(helm) = helm() else { return };
    let r = helm.template(&[]);
    assert_guarantees(&r);
    let cj = r.cronjob();
    assert_eq!(cj["metadata"]["name"].as_str(), Some(FULLNAME));
    assert_eq!(cj["metadata"]["namespace"].as_str(), Some(NAMESPACE));
    assert_eq!(cj["spec"]["schedule"].as_str(), Some("30 2 * * *"));
    assert_eq!(cj["spec"]["timeZone"].as_str(), Some("Etc/UTC"));
    assert_eq!(cj["spec"]["suspend"].as_bool(), Some(false));
    assert_eq!(r.args(), ["run", "--yes", "-c", CONFIG_PATH, "--log-format", "json", "--shutdown-grace", "105"]);
    assert_eq!(r.container()["image"].as_str(), Some(format!("lapse:{}", env!("CARGO_PKG_VERSION")).as_str()));
    // The reports are on an emptyDir; the keys come from the Secret named after the release.
    assert!(r.volume("reports").unwrap()["emptyDir"].is_mapping());
    let secrets = r.volume_at(SECRETS_DIR).expect("secret volume");
    assert_eq!(secrets["secret"]["secretName"].as_str(), Some(FULLNAME));
    assert_eq!(r.config()["evidence"]["key_file"].as_str(), Some("/var/run/secrets/lapse/evidence.key"));
    // Exit codes 2 and 3 fail the Job at once; retries cannot fix them.
    let rules = seq(&cj["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]);
    assert_eq!(rules[0]["action"].as_str(), Some("FailJob"));
    assert_eq!(rules[0]["onExitCodes"]["values"], serde_yaml_ng::from_str::<Value>("[2, 3]").unwrap());
    // No API token: lapse never calls the API server.
    assert_eq!(r.pod()["automountServiceAccountToken"].as_bool(), Some(false));
    let sa = r.named("ServiceAccount", FULLNAME).expect("ServiceAccount");
    assert_eq!(sa["automountServiceAccountToken"].as_bool(), Some(false));
    assert_eq!(r.pod()["serviceAccountName"].as_str(), Some(FULLNAME));
    for doc in &r.docs {
        let labels = &doc["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"].as_str(), Some("lapse"), "{doc:?}");
        assert_eq!(labels["app.kubernetes.io/instance"].as_str(), Some(RELEASE));
    }
}

#[test]
fn chart_dry_run_runs_plan_and_schedule_comes_from_values() {
    let Some(helm) = helm() else { return };
    let values = r#"
dryRun: true
cronjob:
  schedule: "0 4 * * 0"
  timeZone: America/New_York
  suspend: true
logFormat: text
extraArgs: [--policy, customers]
"#;
    let r = helm.template(&[values]);
    assert_guarantees(&r);
    assert_eq!(
        r.args(),
        ["plan", "-c", CONFIG_PATH, "--log-format", "text", "--shutdown-grace", "105", "--policy", "customers"]
    );
    let spec = &r.cronjob()["spec"];
    assert_eq!(spec["schedule"].as_str(), Some("0 4 * * 0"));
    assert_eq!(spec["timeZone"].as_str(), Some("America/New_York"));
    assert_eq!(spec["suspend"].as_bool(), Some(true));
    assert_eq!(spec["concurrencyPolicy"].as_str(), Some("Forbid"));
}

#[test]
fn chart_secrets_are_mounted_files_from_the_existing_secret() {
    let Some(helm) = helm() else { return };
    let r = helm.template(&[FULL]);
    assert_guarantees(&r);
    let secret = &r.volume_at(SECRETS_DIR).expect("secret volume")["secret"];
    assert_eq!(secret["secretName"].as_str(), Some("shop-lapse"));
    let items: Vec<(String, String)> = seq(&secret["items"])
        .iter()
        .map(|i| (i["key"].as_str().unwrap().into(), i["path"].as_str().unwrap().into()))
        .collect();
    let keys = ["evidence-hmac", "report-signing", "pseudonym", "shop-url"];
    assert_eq!(items, keys.map(|k| (k.to_string(), k.to_string())), "only the keys lapse reads are projected");
    assert_eq!(secret["defaultMode"].as_i64(), Some(0o440), "readable by the owner and the pod's fsGroup only");
    let config = r.config();
    assert_eq!(config["evidence"]["key_file"].as_str(), Some("/var/run/secrets/lapse/evidence-hmac"));
    assert_eq!(config["reports"]["signing_key"]["key_file"].as_str(), Some("/var/run/secrets/lapse/report-signing"));
    assert_eq!(config["pseudonymization"]["key_file"].as_str(), Some("/var/run/secrets/lapse/pseudonym"));
    assert_eq!(config["connections"]["shop"]["url_file"].as_str(), Some("/var/run/secrets/lapse/shop-url"));
    assert_eq!(
        config["connections"]["analytics"]["url"].as_str(),
        Some("postgres://analytics-db.data:5432/app?sslmode=verify-full")
    );
    assert_eq!(config["connections"]["analytics"]["journal_table"].as_str(), Some("lapse_journal_analytics"));
    assert_eq!(config["connections"]["shop"]["holds_table"]["subject"].as_str(), Some("customer_id"));
    assert_eq!(config["defaults"]["batch_size"].as_i64(), Some(500));
    // No secret is passed as an environment variable in file mode.
    assert!(seq(&r.container()["env"]).iter().all(|e| e["valueFrom"]["secretKeyRef"].is_null()));
}

#[test]
fn chart_secrets_as_env_use_secret_key_refs() {
    let Some(helm) = helm() else { return };
    let r = helm.template(&[FULL, "secretsMountAs: env\n"]);
    assert_guarantees(&r);
    assert!(r.volume_at(SECRETS_DIR).is_none(), "no secret volume in env mode");
    let config = r.config();
    for (var, key, source) in [
        ("LAPSE_EVIDENCE_KEY", "evidence-hmac", &config["evidence"]["key_env"]),
        ("LAPSE_SIGNING_KEY", "report-signing", &config["reports"]["signing_key"]["key_env"]),
        ("LAPSE_PSEUDONYMIZATION_KEY", "pseudonym", &config["pseudonymization"]["key_env"]),
        ("LAPSE_URL_SHOP", "shop-url", &config["connections"]["shop"]["url_env"]),
    ] {
        assert_eq!(source.as_str(), Some(var));
        let env = r.env(var).unwrap_or_else(|| panic!("no env {var}"));
        assert!(env["value"].is_null(), "{var} must not have a literal value");
        assert_eq!(env["valueFrom"]["secretKeyRef"]["name"].as_str(), Some("shop-lapse"));
        assert_eq!(env["valueFrom"]["secretKeyRef"]["key"].as_str(), Some(key));
    }
}

/// The install notes say where the reports go: lost with the pod on the default emptyDir, kept on
/// a claim, or kept on a report bucket set through `config.extra` (the chain continues from it;
/// only a killed object-store run's intents are lost without a claim).
/// An enforcing chart with connections and no claim for the reports is refused, with what would
/// be lost and the two ways out: the next run needs what a killed one left in that directory
/// (its committed SQL batches reach a report only from there). A claim, `reports.ephemeral`,
/// a dry run (`plan` leaves nothing the next run needs) or no connections render.
#[test]
fn chart_refuses_to_enforce_without_a_reports_claim() {
    let Some(helm) = helm() else { return };
    let connections = "config:\n  connections:\n    crm:\n      urlSecretKey: crm-url\n";
    let refused = |extra: &[&str]| {
        let mut args = vec!["--set", "reports.ephemeral=false"];
        args.extend(extra);
        helm.template_with(&chart_dir(), &[connections], &args)
    };
    let Err(e) = refused(&[]) else { panic!("an enforcing chart without a claim renders") };
    assert!(e.contains("reports.existingClaim is empty") && e.contains("reports.ephemeral=true"), "{e}");
    assert!(e.contains("committed SQL batches"), "{e}");
    for ok in [&["--set", "reports.existingClaim=lapse-reports"][..], &["--set", "dryRun=true"][..]] {
        refused(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
    helm.template_with(&chart_dir(), &[connections], &["--set", "reports.ephemeral=true"]).unwrap();
    helm.template_with(&chart_dir(), &[], &["--set", "reports.ephemeral=false"]).expect("no connections: renders");
    // Connections given through config.extra count too.
    let extra = "config:\n  extra:\n    connections:\n      crm:\n        url: sqlite:///data/crm.db\n";
    let Err(e) = helm.template_with(&chart_dir(), &[extra], &["--set", "reports.ephemeral=false"]) else {
        panic!("connections in config.extra, no claim: renders")
    };
    assert!(e.contains("reports.existingClaim is empty"), "{e}");
    // The reports moved off the claim (config.extra, --report-dir), or metrics written to the
    // read-only root: refused (before, rendered; the reports then lost with the pod, or every
    // run failing; found by a review).
    let claimed = ["--set", "reports.existingClaim=lapse-reports"];
    for (values, expected) in [
        ("config:\n  extra:\n    reports:\n      dir: /tmp/reports\n", "config.extra.reports.dir /tmp/reports"),
        ("extraArgs: [--report-dir, /tmp/reports]\n", "extraArgs: --report-dir is set by the chart"),
        ("metrics:\n  textfile: /var/lib/node-exporter/textfile/lapse.prom\n", "is on the read-only root file system"),
        // The same through config.extra.
        ("config:\n  extra:\n    metrics:\n      textfile: /opt/x.prom\n", "is on the read-only root file system"),
        (
            "config:\n  extra:\n    metrics:\n      pushgateway:\n        url: http://g:9091\n        grouping: { shard: \"1\" }\n",
            "grouping label 'shard'",
        ),
    ] {
        let Err(e) = helm.template_with(&chart_dir(), &[connections, values], &claimed) else {
            panic!("rendered:\n{values}")
        };
        assert!(e.contains(expected), "{values}: {e}");
    }
    helm.template_with(
        &chart_dir(),
        &[connections, "config:\n  extra:\n    reports:\n      dir: /var/lib/lapse/reports/\n"],
        &claimed,
    )
    .expect("the mount path itself");
    helm.template_with(
        &chart_dir(),
        &[connections, "metrics:\n  textfile: /var/lib/lapse/reports/lapse.prom\n"],
        &claimed,
    )
    .expect("a textfile on the reports volume");
}

#[test]
fn chart_notes_say_whether_the_reports_are_kept() {
    let Some(helm) = helm() else { return };
    let chart = chart_dir();
    let notes = |set: &[&str]| {
        let mut args = vec!["install", RELEASE, "--dry-run=client", "--namespace", NAMESPACE];
        args.push(chart.to_str().unwrap());
        args.extend(set);
        let out = helm.run(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "helm install --dry-run failed: {}", String::from_utf8_lossy(&out.stderr));
        text[text.find("NOTES:").expect("no NOTES section")..].to_string()
    };
    let lost = "the destruction reports are written to an emptyDir and are lost with the pod";
    // An enforcing release without a signing key says its reports are unsigned (a review found
    // it silent); a dry run, or a key, says nothing of it.
    let unsigned = "the destruction reports are not signed";
    assert!(notes(&[]).contains(unsigned));
    assert!(!notes(&["--set", "secretKeys.signingKey=signing.key"]).contains(unsigned));
    assert!(!notes(&["--set", "dryRun=true"]).contains(unsigned));
    let bucket = "The reports are stored on the report bucket";
    let n = notes(&[]);
    assert!(n.contains(lost) && !n.contains(bucket), "{n}");
    let n = notes(&["--set", "reports.existingClaim=lapse-reports"]);
    assert!(!n.contains(lost) && !n.contains(bucket), "{n}");
    let n =
        notes(&["--set-json", r#"config.extra={"reports":{"s3":{"connection":"archive","bucket":"acme-reports"}}}"#]);
    assert!(!n.contains(lost) && n.contains(bucket) && n.contains("set reports.existingClaim"), "{n}");
    let n = notes(&[
        "--set-json",
        r#"config.connections={"archive":{"kind":"s3","region":"eu-west-1"}}"#,
        "--set",
        "reports.bucket.name=acme-reports,reports.bucket.connection=archive,reports.ephemeral=true",
    ]);
    assert!(!n.contains(lost) && n.contains("The reports are stored on the report bucket acme-reports"), "{n}");
}

/// `reports.bucket` becomes the config's `reports.s3` (connection, bucket, prefix, retention);
/// a bucket without an s3 connection, a retention without days or mode, or bucket settings
/// without a name are refused at render time.
#[test]
fn chart_report_bucket_becomes_reports_s3() {
    let Some(helm) = helm() else { return };
    let values = r#"
config:
  connections:
    archive:
      kind: s3
      region: eu-west-1
reports:
  bucket:
    name: acme-reports
    connection: archive
    prefix: prod/lapse
    retention:
      mode: compliance
      days: 2555
"#;
    let r = helm.template(&[values]);
    assert_guarantees(&r);
    let s3 = &r.config()["reports"]["s3"];
    assert_eq!(s3["bucket"].as_str(), Some("acme-reports"), "{s3:?}");
    assert_eq!(s3["connection"].as_str(), Some("archive"));
    assert_eq!(s3["prefix"].as_str(), Some("prod/lapse"));
    assert_eq!(s3["retention"]["mode"].as_str(), Some("compliance"));
    assert_eq!(s3["retention"]["days"].as_u64(), Some(2555));
    // lapse accepts it.
    let etc = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(etc.path().join("policies")).unwrap();
    std::fs::write(etc.path().join("lapse.yaml"), &r.configmap(&format!("{FULLNAME}-config"))["lapse.yaml"]).unwrap();
    std::fs::write(
        etc.path().join("policies/exports.yaml"),
        "name: exports\ndataset: { connection: archive, bucket: acme-exports, key_pattern: \"exports/{yyyy}/{mm}/{dd}/{subject}.csv\", subject: key }\npersonal: { content: { category: free_text } }\npurposes:\n  - { name: sar, legal_basis: legal_obligation, retain: 90d, after: key_date }\non_lapse: delete\n",
    )
    .unwrap();
    lapse_validates(&etc.path().join("lapse.yaml"));
    // A connection given through config.extra is one too.
    let r = helm.template(&[
        "config:\n  extra:\n    connections:\n      vault: { kind: s3 }\nreports:\n  bucket:\n    name: acme-reports\n    connection: vault\n",
    ]);
    assert_eq!(r.config()["reports"]["s3"]["connection"].as_str(), Some("vault"));
    // Without the optional parts: only what is set.
    let r = helm.template(&[
        values,
        "reports:\n  bucket:\n    prefix: \"\"\n    retention:\n      mode: \"\"\n      days: 0\n",
    ]);
    let s3 = &r.config()["reports"]["s3"];
    assert!(s3["prefix"].is_null() && s3["retention"].is_null(), "{s3:?}");
    // Refused.
    for (bad, says) in [
        ("reports:\n  bucket:\n    name: acme-reports\n", "reports.bucket.connection: name the kind: s3 connection"),
        (
            "config:\n  connections:\n    db:\n      url: sqlite:///data/shop.db\nreports:\n  bucket:\n    name: acme-reports\n    connection: db\n",
            "reports.bucket.connection 'db' is not a kind: s3 connection",
        ),
        (
            "config:\n  connections:\n    archive:\n      kind: s3\nreports:\n  bucket:\n    name: acme-reports\n    connection: archive\n    retention:\n      mode: governance\n",
            "reports.bucket.retention.days",
        ),
        ("reports:\n  bucket:\n    connection: archive\n", "reports.bucket.name"),
        (
            "config:\n  connections:\n    archive:\n      kind: s3\nreports:\n  bucket:\n    name: acme-reports\n    connection: archive\n    prefix: /prod\n",
            "reports.bucket.prefix '/prod' must be a relative key prefix",
        ),
        (
            "config:\n  connections:\n    archive:\n      kind: s3\n  extra:\n    reports:\n      s3: { connection: archive, bucket: old-reports }\nreports:\n  bucket:\n    name: acme-reports\n    connection: archive\n",
            "reports.bucket and config.extra.reports.s3 both set a report bucket",
        ),
    ] {
        let e = helm.refused(bad);
        assert!(e.contains(says), "{bad}\n{e}");
    }
}

#[test]
fn chart_uses_existing_configmaps_and_claim() {
    let Some(helm) = helm() else { return };
    let values = r#"
policies:
  existingConfigMap: retention-policies
holds:
  existingConfigMap: legal-holds
  existingConfigMapKey: current.yaml
reports:
  existingClaim: lapse-reports
"#;
    let r = helm.template(&[values]);
    assert_guarantees(&r);
    // The chart renders only its config ConfigMap; it mounts the team's.
    let names: Vec<&str> = r.of_kind("ConfigMap").iter().filter_map(|c| c["metadata"]["name"].as_str()).collect();
    assert_eq!(names, [format!("{FULLNAME}-config")]);
    assert_eq!(r.volume_at("/etc/lapse/policies").unwrap()["configMap"]["name"].as_str(), Some("retention-policies"));
    let holds = &r.volume_at("/etc/lapse/holds").expect("holds volume")["configMap"];
    assert_eq!(holds["name"].as_str(), Some("legal-holds"));
    assert_eq!(holds["items"][0]["key"].as_str(), Some("current.yaml"));
    assert_eq!(holds["items"][0]["path"].as_str(), Some("holds.yaml"));
    assert_eq!(r.config()["holds_file"].as_str(), Some("holds/holds.yaml"));
    // Or an existing Secret (recommended), by its key; never two sources.
    let t = helm.template(&["holds:\n  existingSecret: legal-holds\n  existingSecretKey: current.yaml\n"]);
    assert_guarantees(&t);
    assert!(t.named("Secret", &format!("{FULLNAME}-holds")).is_none(), "the team's Secret is mounted, none rendered");
    let holds = &t.volume_at("/etc/lapse/holds").expect("holds volume")["secret"];
    assert_eq!(holds["secretName"].as_str(), Some("legal-holds"));
    assert_eq!(holds["items"][0]["key"].as_str(), Some("current.yaml"));
    assert_eq!(holds["items"][0]["path"].as_str(), Some("holds.yaml"));
    let both = "holds:\n  existingSecret: a\n  existingConfigMap: b\n";
    let e = helm.refused(both);
    assert!(e.contains("set one of existingSecret, existingConfigMap or entries"), "{e}");
    let reports = r.volume("reports").unwrap();
    assert_eq!(reports["persistentVolumeClaim"]["claimName"].as_str(), Some("lapse-reports"));
    assert!(reports["emptyDir"].is_null());
}

#[test]
fn chart_passes_extra_env_volumes_and_pod_settings() {
    let Some(helm) = helm() else { return };
    let r = helm.template(&[FULL]);
    let pod = r.pod();
    let c = r.container();
    assert_eq!(c["image"].as_str(), Some("registry.example.com/privacy/lapse:0.1.0-rc1"));
    assert_eq!(c["imagePullPolicy"].as_str(), Some("Always"));
    assert_eq!(pod["imagePullSecrets"][0]["name"].as_str(), Some("registry-creds"));
    assert_eq!(r.env("RUST_BACKTRACE").unwrap()["value"].as_str(), Some("1"));
    assert_eq!(r.env("PGSSLROOTCERT").unwrap()["value"].as_str(), Some("/etc/ssl/corp/ca.pem"));
    assert_eq!(r.volume_at("/etc/ssl/corp").unwrap()["configMap"]["name"].as_str(), Some("corp-ca"));
    let template = &r.cronjob()["spec"]["jobTemplate"]["spec"]["template"]["metadata"];
    assert_eq!(template["labels"]["team"].as_str(), Some("privacy"));
    assert_eq!(template["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"].as_str(), Some("false"));
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"].as_str(), Some("linux"));
    assert_eq!(pod["tolerations"][0]["key"].as_str(), Some("batch"));
    assert_eq!(c["resources"]["limits"]["memory"].as_str(), Some("1Gi"));
    let sa = r.named("ServiceAccount", FULLNAME).unwrap();
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str(),
        Some("arn:aws:iam::123456789012:role/lapse")
    );
    let job = &r.cronjob()["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["backoffLimit"].as_i64(), Some(1));
    assert_eq!(job["activeDeadlineSeconds"].as_i64(), Some(7200));
    // A digest pins the image.
    let digest = format!("sha256:{}", "ab".repeat(32));
    let r = helm.template(&[&format!("image:\n  digest: {digest}\n")]);
    assert_eq!(r.container()["image"].as_str(), Some(format!("lapse@{digest}").as_str()));
}

/// Names stay within Kubernetes' limits however long the release name: 52 characters for a
/// CronJob (its Jobs get an 11-character suffix), 63 for the rest.
#[test]
fn chart_long_names_fit_kubernetes_limits() {
    let Some(helm) = helm() else { return };
    let err = helm.refused(&format!("fullnameOverride: {}\n", "x".repeat(64)));
    assert!(err.contains("/fullnameOverride"), "{err}");
    let r = helm.template(&[&format!("fullnameOverride: {}\n", "x".repeat(63))]);
    for doc in &r.docs {
        let (kind, name) = (doc["kind"].as_str().unwrap(), doc["metadata"]["name"].as_str().unwrap());
        let limit = if kind == "CronJob" { 52 } else { 63 };
        assert!(name.len() <= limit, "{kind} name {name} is longer than {limit}");
    }
    assert_eq!(r.cronjob()["metadata"]["name"].as_str().map(str::len), Some(52));
    // The volumes name the ConfigMaps the chart rendered.
    for volume in ["config", "policies"] {
        let name = r.volume(volume).unwrap()["configMap"]["name"].as_str().unwrap();
        assert!(r.named("ConfigMap", name).is_some(), "volume {volume} names {name}, which is not rendered");
    }
}

/// The ConfigMaps hold the policies byte for byte and a config `lapse validate` accepts, laid out
/// as the pod mounts them.
#[test]
fn chart_config_and_policies_pass_lapse_validate() {
    let Some(helm) = helm() else { return };
    let values = r#"
config:
  connections:
    shop:
      urlSecretKey: shop-url
holds:
  entries:
    - id: LH-2026-014
      matter: Doe v. Example Shop Ltd
      subjects: ["17", "42"]
      policies: [customers, orders, support-tickets]
      expires: 2099-12-31
"#;
    let extra = demo_policy_args();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let r = helm.template_with(&chart_dir(), &[values], &extra).unwrap_or_else(|e| panic!("{e}"));
    assert_guarantees(&r);

    let policies = r.configmap(&format!("{FULLNAME}-policies"));
    assert_eq!(policies.len(), 4);
    for name in ["customers", "orders", "support", "leads"] {
        let file = std::fs::read_to_string(repo().join(format!("examples/demo/policies/{name}.yaml"))).unwrap();
        assert_eq!(policies[&format!("{name}.yaml")], file, "{name}.yaml must be kept byte for byte");
    }
    // The holds file names data subjects: a Secret (a ConfigMap is readable by the view role),
    // mounted readable by the pod's group only.
    assert!(r.named("ConfigMap", &format!("{FULLNAME}-holds")).is_none());
    let holds = r.secret(&format!("{FULLNAME}-holds"));
    let volume = &r.volume_at("/etc/lapse/holds").expect("holds volume")["secret"];
    assert_eq!(volume["secretName"].as_str(), Some(format!("{FULLNAME}-holds").as_str()));
    assert_eq!(volume["defaultMode"].as_u64(), Some(0o440));
    assert_eq!(volume["items"][0]["key"].as_str(), Some("holds.yaml"));

    // The pod's layout: /etc/lapse/{lapse.yaml, policies/, holds/holds.yaml}.
    let etc = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(etc.path().join("policies")).unwrap();
    std::fs::create_dir_all(etc.path().join("holds")).unwrap();
    let config = r.configmap(&format!("{FULLNAME}-config"));
    std::fs::write(etc.path().join("lapse.yaml"), &config["lapse.yaml"]).unwrap();
    for (file, text) in &policies {
        std::fs::write(etc.path().join("policies").join(file), text).unwrap();
    }
    std::fs::write(etc.path().join("holds/holds.yaml"), &holds["holds.yaml"]).unwrap();
    let (stdout, stderr) = lapse_validates(&etc.path().join("lapse.yaml"));
    assert!(stdout.contains("ok: 4 policies in 4 files"), "{stdout}");
    assert!(!stderr.to_lowercase().contains("warn"), "{stderr}");
}

/// A policy string is kept exactly, whatever its whitespace: the report records its SHA-256.
#[test]
fn chart_keeps_awkward_policy_text_exactly() {
    let Some(helm) = helm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        ("a-plain.yaml", "name: a # comment\n---\nname: b\n"),
        ("b-no-newline.yaml", "name: a"),
        ("c-many-newlines.yaml", "name: a\n\n\n"),
        ("d-indented.yaml", "  name: a\n"),
        ("e-crlf.yaml", "name: a\r\nx: 1\r\n"),
        ("f-unicode.yml", "description: \"Müller <&> ✓\"\t\nblank:\n\n  \nend: 1\n"),
    ];
    let mut args = Vec::new();
    for (file, text) in texts {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        args.extend([
            "--set-file".to_string(),
            format!("policies.files.{}={}", file.replace('.', "\\."), path.display()),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = helm.template_with(&chart_dir(), &[], &args).unwrap_or_else(|e| panic!("{e}"));
    let data = r.configmap(&format!("{FULLNAME}-policies"));
    for (file, text) in texts {
        assert_eq!(data.get(file).map(String::as_str), Some(text), "{file}");
    }
}

#[test]
fn chart_schema_rejects_unknown_keys_and_wrong_types() {
    let Some(helm) = helm() else { return };
    for (values, expected) in [
        ("colour: blue\n", "additional properties 'colour' not allowed"),
        ("cronjob:\n  schedul: \"0 3 * * *\"\n", "additional properties 'schedul' not allowed"),
        ("podSecurityContext:\n  runAsUsr: 0\n", "additional properties 'runAsUsr' not allowed"),
        ("config:\n  connections:\n    shop:\n      urlSecret: shop-url\n", "additional properties 'urlSecret'"),
        ("cronjob:\n  suspend: \"yes\"\n", "/cronjob/suspend"),
        ("cronjob:\n  backoffLimit: 1.5\n", "/cronjob/backoffLimit"),
        ("cronjob:\n  schedule: \"every day\"\n", "/cronjob/schedule"),
        ("dryRun: 1\n", "/dryRun"),
        ("containerSecurityContext:\n  readOnlyRootFilesystem: \"true\"\n", "readOnlyRootFilesystem"),
        ("image:\n  tag: 1.10\n", "/image/tag"),
        ("image:\n  pullPolicy: Sometimes\n", "/image/pullPolicy"),
        ("secretsMountAs: volume\n", "/secretsMountAs"),
        ("logFormat: xml\n", "/logFormat"),
        ("config:\n  defaults:\n    maxShare: 2\n", "/config/defaults/maxShare"),
        ("holds:\n  entries:\n    - { id: LH-1, matter: m, subjects: [1234567890123456789] }\n", "subjects"),
        ("holds:\n  entries:\n    - { id: LH-1 }\n", "matter"),
        // A hold with neither subjects nor policies: lapse refuses it, so every run exited 2
        // (found by a read-only review of the chart; before, rendered).
        ("holds:\n  entries:\n    - { id: LH-1, matter: m }\n", "at '/holds/entries/0': 'anyOf' failed"),
        ("holds:\n  entries:\n    - { id: LH-1, matter: m, subjects: [] }\n", "at '/holds/entries/0': 'anyOf' failed"),
        // A query in the Pushgateway URL: the push path went after it (404, metrics lost).
        ("metrics:\n  pushgateway:\n    url: \"http://gw:9091/?x=1\"\n", "/metrics/pushgateway/url"),
        ("policies:\n  files:\n    customers.txt: \"name: x\"\n", "customers.txt"),
        ("extraVolumeMounts:\n  - { name: x }\n", "mountPath"),
        ("tmp:\n  sizeLimit: lots\n", "/tmp/sizeLimit"),
        // Below 20 s the kubelet kills the pod before lapse (15 s earlier) can finish its
        // batch and write its report.
        ("terminationGracePeriodSeconds: 3\n", "/terminationGracePeriodSeconds"),
    ] {
        let err = helm.refused(values);
        assert!(err.contains(expected), "for values\n{values}expected an error naming {expected:?}, got:\n{err}");
    }
}

#[test]
fn chart_refuses_inconsistent_values_with_a_clear_message() {
    let Some(helm) = helm() else { return };
    for (values, expected) in [
        (
            "config:\n  connections:\n    shop:\n      url: \"postgres://app:s3cret-pw@db:5432/shop\"\n",
            "config.connections.shop.url carries a password",
        ),
        // In the query string too (before, rendered into the ConfigMap, which the built-in
        // `view` role can read), and in the Pushgateway's URL.
        (
            "config:\n  connections:\n    shop:\n      url: \"postgres://app@db:5432/shop?sslmode=require&Password=s3cret-pw\"\n",
            "config.connections.shop.url carries a password",
        ),
        (
            "metrics:\n  pushgateway:\n    url: \"http://metrics:s3cret-pw@gw:9091\"\n",
            "metrics.pushgateway.url carries credentials",
        ),
        ("config:\n  connections:\n    shop:\n      journalTable: j\n", "config.connections.shop needs urlSecretKey"),
        (
            "config:\n  connections:\n    shop:\n      url: \"sqlite:///data/x.db\"\n      urlSecretKey: k\n",
            "either url or urlSecretKey",
        ),
        ("policies:\n  existingConfigMap: p\n  files:\n    a.yaml: \"name: a\"\n", "either existingConfigMap or files"),
        (
            "secretsMountAs: env\nconfig:\n  connections: {shop-db: {urlSecretKey: a}, shop_db: {urlSecretKey: b}}\n",
            "LAPSE_URL_SHOP_DB",
        ),
        // Arguments the chart sets, given again: lapse would refuse to start on every run
        // (found by a read-only review; before, rendered).
        ("extraArgs: [--log-format, text]\n", "extraArgs: --log-format is set by the chart"),
        ("extraArgs: [\"--shutdown-grace=10\"]\n", "extraArgs: --shutdown-grace is set by the chart"),
        ("sharding: {enabled: true, shards: 2}\nextraArgs: [--cutoff, this-hour]\n", "extraArgs: --cutoff is set by the chart"),
        ("sharding: {enabled: true, shards: 2}\nextraArgs: [--shard, 0/2]\n", "extraArgs: --shard is set by the chart"),
        // One-off overrides would hold for every scheduled run (found by a read-only review of
        // the chart, whose README told operators to put `--allow-share` there; before, rendered).
        ("extraArgs: [--allow-share, customers]\n", "extraArgs: --allow-share is for one run"),
        ("extraArgs: [\"--allow-share=*\"]\n", "extraArgs: --allow-share is for one run"),
        ("extraArgs: [--cutoff, 2027-06-01, --allow-future-cutoff]\n", "extraArgs: --cutoff is for one run"),
        ("extraArgs: [--allow-future-cutoff]\n", "extraArgs: --allow-future-cutoff is for one run"),
        ("extraArgs: [--shard, 0/2]\n", "extraArgs: --shard is for one run"),
        // The attached short form, and the textfile past its mount check (found by a review).
        ("extraArgs: [-c/etc/x.yaml]\n", "extraArgs: -c is set by the chart"),
        ("extraArgs: [--metrics-textfile, /var/lib/node_exporter/lapse.prom]\n", "set metrics.textfile instead"),
        ("extraEnvVars: [{name: LAPSE_SHARD, value: 0/2}]\n", "extraEnvVars: LAPSE_SHARD"),
        // Secrets by other paths than config.connections.*.url: config.extra, an S3 endpoint,
        // extraEnvVars (before, rendered into the ConfigMap or the CronJob).
        (
            "config:\n  extra:\n    connections:\n      legacy: {url: \"postgres://lapse:s3cret-pw@db/shop\"}\n",
            "connections.legacy.url (config.connections or config.extra) carries a password",
        ),
        (
            "config:\n  connections:\n    archive: {kind: s3, endpoint: \"https://AKIAX:s3cret-pw@minio.local:9000\"}\n",
            "connections.archive.endpoint carries credentials",
        ),
        (
            "config:\n  extra:\n    metrics: {pushgateway: {url: \"http://admin:s3cret-pw@pgw:9091\"}}\n",
            "metrics.pushgateway.url (config.extra) carries credentials",
        ),
        ("extraEnvVars: [{name: PGPASSWORD, value: s3cret-pw}]\n", "extraEnvVars: PGPASSWORD is given a literal value"),
        ("extraEnvVars: [{name: AWS_SECRET_ACCESS_KEY, value: s3cret-pw}]\n", "extraEnvVars: AWS_SECRET_ACCESS_KEY"),
        ("extraEnvVars: [{name: SHOP_DB, value: \"mysql://a:s3cret-pw@h/db\"}]\n", "extraEnvVars: SHOP_DB"),
        // A password as a query parameter, and credentials in an argument (found by a review:
        // both rendered into the CronJob).
        ("extraEnvVars: [{name: SHOP_URL, value: \"postgres://app@db/shop?password=s3cret-pw\"}]\n", "extraEnvVars: SHOP_URL"),
        ("extraArgs: [\"--pushgateway=http://u:s3cret-pw@gw:9091\"]\n", "extraArgs: an argument carries credentials"),
        ("extraArgs: [\"--pushgateway\", \"http://g:9091/?sslpassword=s3cret-pw\"]\n", "extraArgs: an argument carries credentials"),
        // Two volume mounts at one path (the API server refuses the pod).
        ("reports: {mountPath: /tmp, ephemeral: true}\n", "reports.mountPath /tmp meets /tmp"),
        ("reports: {mountPath: /etc/lapse/reports, ephemeral: true}\n", "meets /etc/lapse"),
    ] {
        let err = helm.refused(values);
        assert!(err.contains(expected), "for values\n{values}expected {expected:?}, got:\n{err}");
        assert!(!err.contains("s3cret-pw"), "the error must not echo the password:\n{err}");
    }
}

/// The pod failure policy: exit codes in the ascending order the API server demands (given in
/// any order: `[3, 2, 6]` passed `helm lint` and failed at install), and the eviction rule kept
/// with no exit code (`[]` dropped the whole policy, and with it the wait for an evicted pod to
/// stop before its replacement starts). Sharding needs Kubernetes 1.29 (per-index retries).
/// Found by a read-only review of the chart.
#[test]
fn chart_pod_failure_policy_and_cluster_version() {
    let Some(helm) = helm() else { return };
    let rules = |values: &str| {
        let r = helm.template(&[values]);
        let job = &r.cronjob()["spec"]["jobTemplate"]["spec"];
        seq(&job["podFailurePolicy"]["rules"]).to_vec()
    };
    let r = rules("cronjob: {failFastExitCodes: [6, 3, 2]}\n");
    assert_eq!(r.len(), 2, "{r:?}");
    let codes: Vec<i64> = seq(&r[0]["onExitCodes"]["values"]).iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(codes, [2, 3, 6]);
    for values in ["cronjob: {failFastExitCodes: []}\n", "cronjob: {failFastExitCodes: null}\n"] {
        let r = rules(values);
        assert_eq!(r.len(), 1, "{values}: {r:?}");
        assert_eq!(r[0]["action"].as_str(), Some("Ignore"));
        assert_eq!(r[0]["onPodConditions"][0]["type"].as_str(), Some("DisruptionTarget"));
    }
    let sharded = "sharding: {enabled: true, shards: 2}\n";
    for old in ["1.27.0", "1.28.5"] {
        let err = helm
            .template_with(&chart_dir(), &[sharded], &["--kube-version", old])
            .err()
            .unwrap_or_else(|| panic!("sharding rendered for Kubernetes {old}"));
        assert!(err.contains("sharding.enabled needs Kubernetes 1.29"), "{err}");
    }
    let r = helm.template_with(&chart_dir(), &[sharded], &["--kube-version", "1.29.0"]).unwrap();
    assert_eq!(r.cronjob()["spec"]["jobTemplate"]["spec"]["completionMode"].as_str(), Some("Indexed"));
    // Unsharded, an older cluster still renders.
    assert!(helm.template_with(&chart_dir(), &[""], &["--kube-version", "1.27.0"]).is_ok());
}

/// Every value is in the schema and documented in the chart's README, and vice versa.
#[test]
fn chart_values_schema_and_readme_agree() {
    let values: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
        .expect("values.yaml");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap())
            .expect("values.schema.json is JSON");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let documented: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_string()))
        .collect();

    // Leaves of values.yaml; a value documented as a whole (a Kubernetes object) covers its keys.
    fn leaves(v: &Value, path: String, out: &mut Vec<String>) {
        match v.as_mapping() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    let k = k.as_str().unwrap();
                    leaves(child, if path.is_empty() { k.into() } else { format!("{path}.{k}") }, out);
                }
            }
            _ => out.push(path),
        }
    }
    let mut paths = Vec::new();
    leaves(&values, String::new(), &mut paths);
    for path in &paths {
        let covered = documented.iter().any(|d| path == d || path.starts_with(&format!("{d}.")));
        assert!(covered, "value {path} is not documented in helm/lapse/README.md");
    }
    for d in &documented {
        let exists = paths.iter().any(|p| p == d || p.starts_with(&format!("{d}.")));
        assert!(exists, "helm/lapse/README.md documents {d}, which values.yaml does not have");
    }

    // Every object the schema defines rejects unknown keys (but a Kubernetes Volume, which has too
    // many sources to list).
    fn closed(schema: &serde_json::Value, path: &str) {
        if let Some(map) = schema.as_object() {
            if map.contains_key("properties") && path != "/properties/extraVolumes/items" {
                assert_eq!(schema["additionalProperties"], false, "schema at {path} must reject unknown keys");
            }
            for (k, sub) in map {
                closed(sub, &format!("{path}/{k}"));
            }
        }
    }
    closed(&schema, "");
    // The chart's own settings in the schema are all in values.yaml (Kubernetes objects such as
    // resources or security contexts have more fields than the defaults set).
    fn in_values(schema: &serde_json::Value, values: &Value, path: &str) {
        for (k, sub) in schema["properties"].as_object().unwrap() {
            let kube = ["global", "resources", "podSecurityContext", "containerSecurityContext", "affinity"];
            if path.is_empty() && kube.contains(&k.as_str()) {
                continue;
            }
            let v = &values[k.as_str()];
            assert!(!v.is_null(), "schema property {path}.{k} is not in values.yaml");
            if sub["properties"].is_object() {
                in_values(sub, v, &format!("{path}.{k}"));
            }
        }
    }
    in_values(&schema, &values, "");
}

/// The checks themselves catch a broken chart: a template that does not parse fails the render,
/// and a template that renders a weaker pod fails `guarantees`.
#[test]
fn chart_broken_templates_are_caught() {
    let Some(helm) = helm() else { return };
    let mutations = [
        // (file, from, to, what the failure names)
        (
            "cronjob.yaml",
            "schedule: {{ .Values.cronjob.schedule | quote }}",
            "schedule: {{ .Values.cronjob.schedule | quote }",
            "cronjob.yaml",
        ),
        ("_helpers.tpl", "{{- define \"lapse.args\" -}}", "{{- define \"lapse.args\" -}}{{ if }}", "_helpers.tpl"),
        ("cronjob.yaml", "concurrencyPolicy: Forbid", "concurrencyPolicy: Allow", "concurrencyPolicy"),
        (
            "cronjob.yaml",
            "- name: tmp\n                  mountPath: /tmp",
            "- name: tmp\n                  mountPath: /scratch",
            "/tmp",
        ),
        ("_helpers.tpl", "list \"run\" \"--yes\"", "list \"run\"", "run --yes"),
        (
            "_helpers.tpl",
            "(printf \"%s/%s\" (include \"lapse.secretsDir\" $ctx) $key)",
            "(printf \"/etc/lapse/%s\" $key)",
            "secret volume",
        ),
    ];
    for (file, from, to, names) in mutations {
        let dir = tempfile::tempdir().unwrap();
        let chart = dir.path().join("lapse");
        copy_dir(&chart_dir(), &chart);
        let path = chart.join("templates").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(from).count(), 1, "mutation no longer applies to {file}: {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        match helm.template_with(&chart, &[FULL], &[]) {
            Err(e) => assert!(e.contains(names), "helm failed, but not naming {names:?}:\n{e}"),
            Ok(r) => {
                let bad = guarantees(&r);
                assert!(
                    bad.iter().any(|b| b.contains(names)),
                    "{file}: {from:?} -> {to:?} was not caught (problems: {bad:?})"
                );
            }
        }
    }
    // Values that weaken the pod are caught the same way.
    for (values, names) in [
        ("containerSecurityContext:\n  readOnlyRootFilesystem: false\n", "readOnlyRootFilesystem"),
        ("podSecurityContext:\n  runAsNonRoot: false\n  runAsUser: 0\n", "runAsUser"),
        ("containerSecurityContext:\n  capabilities: { add: [NET_ADMIN] }\n", "capabilit"),
    ] {
        let bad = guarantees(&helm.template(&[values]));
        assert!(bad.iter().any(|b| b.contains(names)), "{values} was not caught (problems: {bad:?})");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
    assert_eq!(chart["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")));
}

// ------------------------------------------------------------------------------- Dockerfile ---

/// One instruction of a Dockerfile: keyword (upper case) and the rest of the line.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        current.push_str(trimmed);
        let (kw, rest) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
        out.push((kw.to_uppercase(), rest.split_whitespace().collect::<Vec<_>>().join(" ")));
        current.clear();
    }
    out
}

/// A modest structural lint: this machine has no Docker engine, so the image is never built here.
/// It checks what review would: a Rust builder and a shell-less runtime on the same Debian
/// release, a locked release build with a dependency layer, the binary copied from the builder,
/// a numeric non-root USER, the exec-form ENTRYPOINT, and a build context that has every file the
/// crate embeds (`include_str!`) but none of the local state.
#[test]
fn dockerfile_structure() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile at the repository root");
    let ins = dockerfile_instructions(&text);
    let stages: Vec<usize> = ins.iter().enumerate().filter(|(_, (k, _))| k == "FROM").map(|(i, _)| i).collect();
    assert!(stages.len() >= 2, "multi-stage: a builder and a runtime");
    let stage = |n: usize| -> &[(String, String)] {
        let end = stages.get(n + 1).copied().unwrap_or(ins.len());
        &ins[stages[n]..end]
    };
    let (builder, runtime) = (stage(0), stage(stages.len() - 1));

    let from: Vec<&str> = builder[0].1.split_whitespace().collect();
    assert!(from[0].starts_with("rust:") && from[0].contains("bookworm"), "builder: a rust bookworm image: {from:?}");
    assert!(from[0] != "rust:latest" && from[0].contains(|c: char| c.is_ascii_digit()), "pin the Rust version");
    assert!(from.len() == 3 && from[1].eq_ignore_ascii_case("AS"), "the builder stage is named");
    let builder_name = from[2];
    let runtime_image = runtime[0].1.split_whitespace().next().unwrap();
    assert!(
        runtime_image == "gcr.io/distroless/cc-debian12:nonroot" || runtime_image.starts_with("debian:bookworm-slim"),
        "runtime: distroless cc-debian12:nonroot or debian:bookworm-slim (the builder's glibc), got {runtime_image}"
    );

    // Builder: the dependency layer (stub sources) before the crate's sources, both --locked.
    let pos = |kw: &str, pred: &dyn Fn(&str) -> bool| builder.iter().position(|(k, r)| k == kw && pred(r));
    let copy_manifest = pos("COPY", &|r| r.contains("Cargo.toml") && r.contains("Cargo.lock")).expect("COPY Cargo.*");
    let copy_src = pos("COPY", &|r| r.starts_with("src ")).expect("COPY src");
    let builds: Vec<usize> = builder
        .iter()
        .enumerate()
        .filter(|(_, (k, r))| k == "RUN" && r.contains("cargo build"))
        .map(|(i, _)| i)
        .collect();
    for &b in &builds {
        let r = &builder[b].1;
        assert!(r.contains("--release") && r.contains("--locked"), "cargo build --release --locked: {r}");
    }
    assert!(builds.iter().any(|&b| b > copy_manifest && b < copy_src), "a cached dependency build before COPY src");
    assert!(builds.iter().any(|&b| b > copy_src), "the crate's build after COPY src");

    // Everything the crate embeds from outside src/ is in the build context and copied in.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let ignored: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for must in ["/target", "/.git", "/.testbed"] {
        assert!(ignored.contains(&must), ".dockerignore must exclude {must}");
    }
    let mut embedded = BTreeSet::new();
    for file in rust_files(&repo().join("src")) {
        let code = std::fs::read_to_string(&file).unwrap();
        let parts = code.split("include_str!(\"").skip(1).chain(code.split("include_bytes!(\"").skip(1));
        for part in parts {
            let rel = part.split('"').next().unwrap();
            let path = file.parent().unwrap().join(rel);
            let path = normalize(path.strip_prefix(repo()).unwrap_or(&path));
            embedded.insert(path.components().next().unwrap().as_os_str().to_string_lossy().into_owned());
        }
    }
    for top in embedded.iter().chain(["src".to_string(), "Cargo.toml".into(), "Cargo.lock".into()].iter()) {
        assert!(
            !ignored.iter().any(|i| i.trim_start_matches('/') == top),
            ".dockerignore excludes {top}, which the build needs"
        );
        assert!(
            builder.iter().any(|(k, r)| k == "COPY" && r.split_whitespace().any(|w| w == top)),
            "the builder does not COPY {top}, which the crate needs"
        );
    }

    // The build settings of .cargo/config.toml (the bundled SQLite's compile options) are in
    // place before the first build, which compiles SQLite.
    if repo().join(".cargo/config.toml").exists() {
        assert!(!ignored.iter().any(|i| i.trim_start_matches('/') == ".cargo"), ".dockerignore excludes .cargo");
        let copy_cargo = pos("COPY", &|r| r.split_whitespace().next() == Some(".cargo")).expect("COPY .cargo");
        assert!(builds.iter().all(|&b| b > copy_cargo), "COPY .cargo comes before every cargo build");
    }

    // Runtime: only the binary from the builder, no RUN (no shell), numeric non-root user.
    assert!(!runtime.iter().any(|(k, _)| k == "RUN"), "the runtime stage must not need a shell (no RUN)");
    assert!(
        runtime.iter().any(|(k, r)| k == "COPY"
            && r.contains(&format!("--from={builder_name}"))
            && r.ends_with(" /usr/local/bin/lapse")),
        "COPY --from={builder_name} ... /usr/local/bin/lapse"
    );
    let user = runtime.iter().rev().find(|(k, _)| k == "USER").map(|(_, r)| r.as_str()).expect("USER");
    let ids: Vec<&str> = user.split(':').collect();
    assert!(ids.iter().all(|id| *id == UID.to_string()), "USER must be numeric 65532 (runAsNonRoot), got {user}");
    let entrypoint =
        runtime.iter().rev().find(|(k, _)| k == "ENTRYPOINT").map(|(_, r)| r.as_str()).expect("ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(entrypoint, ["/usr/local/bin/lapse"]);
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// `a/../b` -> `b`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

// ------------------------------------------------------------- scale-out, metrics, objects ---

const SCALE_OUT: &str = r#"
sharding:
  enabled: true
  shards: 4
  parallelism: 2
metrics:
  textfile: /var/lib/node-exporter/textfile/lapse.prom
  pushgateway:
    url: http://prometheus-pushgateway.monitoring:9091
    job: retention
    grouping: { cluster: eu-1 }
config:
  connections:
    shop:
      urlSecretKey: shop-url
    archive:
      kind: s3
      region: eu-west-1
      endpoint: https://minio.storage:9000
      pathStyle: true
      bucket: acme-exports
      concurrency: 16
    files:
      kind: directory
      path: /data/exports
extraVolumes:
  - name: exports
    persistentVolumeClaim: { claimName: exports }
  - name: textfile
    hostPath: { path: /var/lib/node-exporter/textfile }
extraVolumeMounts:
  - name: exports
    mountPath: /data/exports
  - name: textfile
    mountPath: /var/lib/node-exporter/textfile
"#;

/// Sharding renders an Indexed Job whose pods each take their shard; object-store connections and
/// metrics reach the worker config, which `lapse validate` accepts.
#[test]
fn chart_sharding_renders_an_indexed_job_with_object_stores_and_metrics() {
    let Some(helm) = helm() else { return };
    let r = helm.template(&[SCALE_OUT]);
    assert_guarantees(&r);
    let job = &r.cronjob()["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["completionMode"].as_str(), Some("Indexed"));
    assert_eq!(job["completions"].as_i64(), Some(4));
    assert_eq!(job["parallelism"].as_i64(), Some(2));
    assert_eq!(r.cronjob()["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
    // Each shard retries on its own, and a guardrail (exit 3) fails only its shard's index:
    // FailJob would end the other shards' pods and start no more of them.
    assert_eq!(job["backoffLimitPerIndex"].as_i64(), Some(2));
    assert!(job["backoffLimit"].is_null(), "a shared backoffLimit lets one shard use up the others' retries");
    let rules = seq(&job["podFailurePolicy"]["rules"]);
    assert_eq!(rules[0]["action"].as_str(), Some("FailIndex"));
    assert_eq!(rules[0]["onExitCodes"]["values"], serde_yaml_ng::from_str::<Value>("[2, 3]").unwrap());
    // Kubernetes expands $(JOB_COMPLETION_INDEX) (0-based) in each pod's arguments.
    let args = r.args();
    let at = args.iter().position(|a| a == "--shard").expect("--shard");
    assert_eq!(args[at + 1], "$(JOB_COMPLETION_INDEX)/4");
    // The pods start at different moments: they share an aligned cutoff.
    let at = args.iter().position(|a| a == "--cutoff").expect("--cutoff");
    assert_eq!(args[at + 1], "today");

    let cfg = r.config();
    let archive = &cfg["connections"]["archive"];
    assert_eq!(archive["kind"].as_str(), Some("s3"));
    assert_eq!(archive["region"].as_str(), Some("eu-west-1"));
    assert_eq!(archive["endpoint"].as_str(), Some("https://minio.storage:9000"));
    assert_eq!(archive["path_style"].as_bool(), Some(true));
    assert_eq!(archive["bucket"].as_str(), Some("acme-exports"));
    assert_eq!(archive["concurrency"].as_i64(), Some(16));
    assert!(archive["url_file"].is_null() && archive["url"].is_null(), "an object store has no url");
    assert_eq!(cfg["connections"]["files"]["kind"].as_str(), Some("directory"));
    assert_eq!(cfg["connections"]["files"]["path"].as_str(), Some("/data/exports"));
    assert_eq!(cfg["metrics"]["textfile"].as_str(), Some("/var/lib/node-exporter/textfile/lapse.prom"));
    assert_eq!(cfg["metrics"]["pushgateway"]["url"].as_str(), Some("http://prometheus-pushgateway.monitoring:9091"));
    assert_eq!(cfg["metrics"]["pushgateway"]["job"].as_str(), Some("retention"));
    assert_eq!(cfg["metrics"]["pushgateway"]["grouping"]["cluster"].as_str(), Some("eu-1"));
    // Only the SQL connection's URL is a secret.
    let secrets = r.volume_at(SECRETS_DIR).expect("secret volume");
    let keys: Vec<&str> = seq(&secrets["secret"]["items"]).iter().filter_map(|i| i["key"].as_str()).collect();
    assert_eq!(keys, ["evidence.key", "shop-url"]);

    // lapse itself accepts the rendered config (secrets are mounted only at run time).
    let etc = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(etc.path().join("policies")).unwrap();
    let config = r.configmap(&format!("{FULLNAME}-config"));
    std::fs::write(etc.path().join("lapse.yaml"), &config["lapse.yaml"]).unwrap();
    for (conn, extra) in [("archive", "shard_by_key: true\n"), ("files", "")] {
        let policy = format!(
            "name: {conn}-exports\ndataset: {{ connection: {conn}, key_pattern: \"exports/{{yyyy}}/{{mm}}/{{dd}}/{{subject}}.csv\", subject: key }}\npersonal: {{ content: {{ category: free_text }} }}\npurposes:\n  - {{ name: sar, legal_basis: legal_obligation, retain: 90d, after: key_date }}\non_lapse: delete\n{extra}"
        );
        std::fs::write(etc.path().join(format!("policies/{conn}.yaml")), policy).unwrap();
    }
    assert!(lapse_validates(&etc.path().join("lapse.yaml")).0.contains("ok: 2 policies"));

    // Without sharding: a plain Job, no --shard, no metrics section.
    let plain = helm.template(&[]);
    let job = &plain.cronjob()["spec"]["jobTemplate"]["spec"];
    assert!(job["completionMode"].is_null() && job["completions"].is_null());
    assert!(job["backoffLimitPerIndex"].is_null() && job["backoffLimit"].as_i64() == Some(2));
    assert_eq!(seq(&job["podFailurePolicy"]["rules"])[0]["action"].as_str(), Some("FailJob"));
    assert!(!plain.args().contains(&"--shard".to_string()));
    assert!(plain.config()["metrics"].is_null());
}

#[test]
fn chart_schema_rejects_bad_scale_out_and_object_store_values() {
    let Some(helm) = helm() else { return };
    for (values, expected) in [
        ("sharding:\n  enable: true\n", "additional properties 'enable' not allowed"),
        ("sharding:\n  enabled: true\n  shards: 0\n", "/sharding/shards"),
        ("sharding:\n  shards: \"3\"\n", "/sharding/shards"),
        ("sharding:\n  cutoff: now\n", "/sharding/cutoff"),
        ("metrics:\n  pushgateway:\n    url: pushgateway:9091\n", "/metrics/pushgateway/url"),
        ("metrics:\n  pushgateway:\n    grouping: { job: x }\n", "invalid propertyName 'job'"),
        // Labels lapse sets itself, or reserved ones: lapse refuses them (exit 2) on every run.
        ("metrics:\n  pushgateway:\n    grouping: { shard: x }\n", "invalid propertyName 'shard'"),
        ("metrics:\n  pushgateway:\n    grouping: { __tenant: x }\n", "invalid propertyName '__tenant'"),
        ("metrics:\n  textfile: lapse.prom\n", "/metrics/textfile"),
        ("metrics:\n  prometheus: {}\n", "additional properties 'prometheus' not allowed"),
        ("config:\n  connections:\n    a:\n      kind: gcs\n", "kind"),
        (
            "config:\n  connections:\n    a:\n      kind: s3\n      pathstyle: true\n",
            "additional properties 'pathstyle'",
        ),
        ("config:\n  connections:\n    a:\n      kind: directory\n      path: data\n", "path"),
        ("config:\n  connections:\n    a:\n      kind: s3\n      concurrency: 0\n", "concurrency"),
    ] {
        let err = helm.refused(values);
        assert!(err.contains(expected), "for values\n{values}expected an error naming {expected:?}, got:\n{err}");
    }
    for (values, expected) in [
        (
            "config:\n  connections:\n    archive:\n      kind: s3\n      urlSecretKey: k\n",
            "config.connections.archive is an object store (kind s3)",
        ),
        (
            "config:\n  connections:\n    files:\n      kind: directory\n",
            "config.connections.files (kind directory) needs path",
        ),
        (
            "config:\n  connections:\n    shop:\n      urlSecretKey: k\n      bucket: b-1\n",
            "config.connections.shop.bucket is for object stores",
        ),
    ] {
        let err = helm.refused(values);
        assert!(err.contains(expected), "for values\n{values}expected {expected:?}, got:\n{err}");
    }
}
