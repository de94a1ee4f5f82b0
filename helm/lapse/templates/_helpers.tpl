{{/*
Chart name, truncated to 63 characters (the DNS label limit of some Kubernetes name fields).
*/}}
{{- define "lapse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: <release>-<chart name>, or the release name alone when it already contains
the chart name; truncated to 63 characters. Resources derived from it add short suffixes, so they
use "lapse.fullnameWith" to keep within the limit.
*/}}
{{- define "lapse.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
<fullname>-<suffix>, the full name shortened so the whole stays within 63 characters.
Usage: include "lapse.fullnameWith" (list . "policies")
*/}}
{{- define "lapse.fullnameWith" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- $base := include "lapse.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{/*
Name of the CronJob: at most 52 characters, because the controller appends an 11-character suffix
to the names of the Jobs it creates.
*/}}
{{- define "lapse.cronjobName" -}}
{{- include "lapse.fullname" . | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/*
Chart label value: name-version (+ is not allowed in label values).
*/}}
{{- define "lapse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels (app.kubernetes.io/*) of every resource.
*/}}
{{- define "lapse.labels" -}}
helm.sh/chart: {{ include "lapse.chart" . }}
{{ include "lapse.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lapse
{{- end }}

{{/*
Selector labels: stable across upgrades.
*/}}
{{- define "lapse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lapse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount the pod runs as.
*/}}
{{- define "lapse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lapse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image: repository:tag, or repository@digest when a digest is set.
*/}}
{{- define "lapse.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the keys (never created by the chart).
*/}}
{{- define "lapse.secretName" -}}
{{- default (include "lapse.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Where things live in the container. */}}
{{- define "lapse.configDir" -}}/etc/lapse{{- end }}
{{- define "lapse.secretsDir" -}}/var/run/secrets/lapse{{- end }}

{{/*
Names of the ConfigMaps holding policies and holds (the user's existing ones, or the chart's).
*/}}
{{- define "lapse.policiesConfigMap" -}}
{{- default (include "lapse.fullnameWith" (list . "policies")) .Values.policies.existingConfigMap }}
{{- end }}
{{- /* The Secret (or, with holds.existingConfigMap, the ConfigMap) of the holds file. */}}
{{- define "lapse.holdsSource" -}}
{{- coalesce .Values.holds.existingSecret .Values.holds.existingConfigMap (include "lapse.fullnameWith" (list . "holds")) }}
{{- end }}
{{- define "lapse.holdsKey" -}}
{{- if .Values.holds.existingSecret }}{{ .Values.holds.existingSecretKey }}
{{- else if .Values.holds.existingConfigMap }}{{ .Values.holds.existingConfigMapKey }}
{{- else }}holds.yaml{{ end }}
{{- end }}
{{- define "lapse.hasHolds" -}}
{{- if or .Values.holds.existingSecret .Values.holds.existingConfigMap .Values.holds.entries }}true{{ end }}
{{- end }}

{{/*
Environment variable name for a secret given to the process as env (secretsMountAs: env):
LAPSE_ + the upper-cased name with every other character replaced by "_".
Usage: include "lapse.envName" "URL_shop-db"  ->  LAPSE_URL_SHOP_DB
*/}}
{{- define "lapse.envName" -}}
{{- printf "LAPSE_%s" (regexReplaceAll "[^A-Za-z0-9_]" . "_" | upper) }}
{{- end }}

{{/*
The secrets the process needs: a list of {key, env, what}, where key is the Secret's key and env
the variable name used when secretsMountAs is env. Rendered as YAML; callers use fromYamlArray.
Also fails the render on a connection without exactly one URL source.
*/}}
{{- define "lapse.secretRefs" -}}
{{- $refs := list }}
{{- $refs = append $refs (dict "key" .Values.secretKeys.evidenceKey "env" "LAPSE_EVIDENCE_KEY") }}
{{- if .Values.secretKeys.signingKey }}
{{- $refs = append $refs (dict "key" .Values.secretKeys.signingKey "env" "LAPSE_SIGNING_KEY") }}
{{- end }}
{{- if .Values.secretKeys.pseudonymizationKey }}
{{- $refs = append $refs (dict "key" .Values.secretKeys.pseudonymizationKey "env" "LAPSE_PSEUDONYMIZATION_KEY") }}
{{- end }}
{{- range $name, $c := .Values.config.connections }}
{{- $kind := default "sql" $c.kind }}
{{- if ne $kind "sql" }}
{{- if or $c.url $c.urlSecretKey $c.holdsTable $c.journalTable $c.lockWait }}
{{- fail (printf "config.connections.%s is an object store (kind %s): url, urlSecretKey, holdsTable, journalTable and lockWait are for SQL connections" $name $kind) }}
{{- end }}
{{- if and (eq $kind "directory") (not $c.path) }}
{{- fail (printf "config.connections.%s (kind directory) needs path: the directory in the container (mount it with extraVolumes and extraVolumeMounts)" $name) }}
{{- end }}
{{- else }}
{{- range $k := list "region" "endpoint" "pathStyle" "bucket" "path" "concurrency" }}
{{- if hasKey $c $k }}
{{- fail (printf "config.connections.%s.%s is for object stores (kind s3 or directory), not a SQL connection" $name $k) }}
{{- end }}
{{- end }}
{{- if and $c.url $c.urlSecretKey }}
{{- fail (printf "config.connections.%s: set either url or urlSecretKey, not both" $name) }}
{{- end }}
{{- if not (or $c.url $c.urlSecretKey) }}
{{- fail (printf "config.connections.%s needs urlSecretKey (a key of existingSecret holding the URL) or url (inline, without a password)" $name) }}
{{- end }}
{{- if and $c.url (or (regexMatch "://[^/?]*:[^/?]*@" $c.url) (regexMatch "(?i)[?&](password|pass|passwd|pwd|sslpassword)=[^&]" $c.url)) }}
{{- fail (printf "config.connections.%s.url carries a password: put the URL in existingSecret and name its key in urlSecretKey" $name) }}
{{- end }}
{{- if $c.urlSecretKey }}
{{- $refs = append $refs (dict "key" $c.urlSecretKey "env" (include "lapse.envName" (printf "URL_%s" $name))) }}
{{- end }}
{{- end }}
{{- end }}
{{- $envs := dict }}
{{- range $refs }}
{{- if and (eq $.Values.secretsMountAs "env") (hasKey $envs .env) }}
{{- fail (printf "two secrets map to the environment variable %s: rename a connection (names differing only in case or punctuation collide)" .env) }}
{{- end }}
{{- $_ := set $envs .env true }}
{{- end }}
{{- toYaml $refs }}
{{- end }}

{{/*
A secret reference in lapse.yaml: {<kind>_file: path} or {<kind>_env: NAME}.
Usage: include "lapse.secretSource" (list . "key" "evidence-key" "LAPSE_EVIDENCE_KEY")
*/}}
{{- define "lapse.secretSource" -}}
{{- $ctx := index . 0 }}
{{- $kind := index . 1 }}
{{- $key := index . 2 }}
{{- $env := index . 3 }}
{{- if eq $ctx.Values.secretsMountAs "env" }}
{{- dict (printf "%s_env" $kind) $env | toYaml }}
{{- else }}
{{- dict (printf "%s_file" $kind) (printf "%s/%s" (include "lapse.secretsDir" $ctx) $key) | toYaml }}
{{- end }}
{{- end }}

{{/*
The worker configuration (lapse.yaml), built as a dict and rendered with toYaml. Paths of the
policies and holds are relative to the config file (/etc/lapse), like the README's layout.
*/}}
{{- define "lapse.workerConfig" -}}
{{- $connections := dict }}
{{- range $name, $c := .Values.config.connections }}
{{- $conn := dict }}
{{- $kind := default "sql" $c.kind }}
{{- if ne $kind "sql" }}
{{- $_ := set $conn "kind" $kind }}
{{- range $from, $to := dict "region" "region" "endpoint" "endpoint" "pathStyle" "path_style" "bucket" "bucket" "path" "path" "concurrency" "concurrency" }}
{{- if hasKey $c $from }}
{{- $_ := set $conn $to (index $c $from) }}
{{- end }}
{{- end }}
{{- else if $c.url }}
{{- $_ := set $conn "url" $c.url }}
{{- else }}
{{- $conn = include "lapse.secretSource" (list $ "url" $c.urlSecretKey (include "lapse.envName" (printf "URL_%s" $name))) | fromYaml }}
{{- end }}
{{- with $c.holdsTable }}
{{- $_ := set $conn "holds_table" (deepCopy .) }}
{{- end }}
{{- with $c.journalTable }}
{{- $_ := set $conn "journal_table" . }}
{{- end }}
{{- with $c.lockWait }}
{{- $_ := set $conn "lock_wait" . }}
{{- end }}
{{- $_ := set $connections $name $conn }}
{{- end }}
{{- $cfg := dict "connections" $connections "policies" "policies" }}
{{- if include "lapse.hasHolds" . }}
{{- $_ := set $cfg "holds_file" "holds/holds.yaml" }}
{{- end }}
{{- $_ := set $cfg "evidence" (include "lapse.secretSource" (list . "key" .Values.secretKeys.evidenceKey "LAPSE_EVIDENCE_KEY") | fromYaml) }}
{{- if .Values.secretKeys.pseudonymizationKey }}
{{- $_ := set $cfg "pseudonymization" (include "lapse.secretSource" (list . "key" .Values.secretKeys.pseudonymizationKey "LAPSE_PSEUDONYMIZATION_KEY") | fromYaml) }}
{{- end }}
{{- $reports := dict "dir" .Values.reports.mountPath }}
{{- if .Values.secretKeys.signingKey }}
{{- $_ := set $reports "signing_key" (include "lapse.secretSource" (list . "key" .Values.secretKeys.signingKey "LAPSE_SIGNING_KEY") | fromYaml) }}
{{- end }}
{{- with .Values.reports.bucket }}
{{- $ret := .retention | default dict }}
{{- if .name }}
{{- if dig "reports" "s3" nil ($.Values.config.extra | default dict) }}
{{- fail "reports.bucket and config.extra.reports.s3 both set a report bucket: keep one (reports.bucket)" }}
{{- end }}
{{- $conns := merge (deepCopy (dig "connections" dict ($.Values.config.extra | default dict))) (deepCopy ($.Values.config.connections | default dict)) }}
{{- $conn := index $conns (.connection | default "") | default dict }}
{{- if not .connection }}
{{- fail "reports.bucket.connection: name the kind: s3 connection of config.connections that reaches the report bucket" }}
{{- else if ne (default "sql" $conn.kind) "s3" }}
{{- fail (printf "reports.bucket.connection '%s' is not a kind: s3 connection of config.connections" .connection) }}
{{- end }}
{{- $prefix := .prefix | default "" }}
{{- if or (hasPrefix "/" $prefix) (contains ".." $prefix) (regexMatch "[\x00-\x1f\x7f]" $prefix) }}
{{- fail (printf "reports.bucket.prefix '%s' must be a relative key prefix without '..'" $prefix) }}
{{- end }}
{{- $s3 := dict "connection" .connection "bucket" .name }}
{{- with $prefix }}
{{- $_ := set $s3 "prefix" . }}
{{- end }}
{{- if $ret.mode }}
{{- if not $ret.days }}
{{- fail "reports.bucket.retention.days: how many days each stored report file stays locked (1 to 36500)" }}
{{- end }}
{{- $_ := set $s3 "retention" (dict "mode" $ret.mode "days" (int $ret.days)) }}
{{- else if $ret.days }}
{{- fail "reports.bucket.retention.mode: compliance or governance (days alone lock nothing)" }}
{{- end }}
{{- $_ := set $reports "s3" $s3 }}
{{- else if or .connection .prefix $ret.mode }}
{{- fail "reports.bucket.name: the report bucket's name (connection, prefix and retention are set without one)" }}
{{- end }}
{{- end }}
{{- $_ := set $cfg "reports" $reports }}
{{- $_ := set $cfg "defaults" (dict "batch_size" (int .Values.config.defaults.batchSize) "max_share" .Values.config.defaults.maxShare) }}
{{- $metrics := dict }}
{{- with .Values.metrics.textfile }}
{{- $_ := set $metrics "textfile" . }}
{{- end }}
{{- with .Values.metrics.pushgateway.url }}
{{- if regexMatch "://[^/?#]*@" . }}
{{- fail "metrics.pushgateway.url carries credentials (user:password@), which lapse neither sends nor keeps in its config: reach the gateway without them (a sidecar or network policy)" }}
{{- end }}
{{- $_ := set $metrics "pushgateway" (dict "url" . "job" $.Values.metrics.pushgateway.job "grouping" (deepCopy $.Values.metrics.pushgateway.grouping)) }}
{{- end }}
{{- with $metrics }}
{{- $_ := set $cfg "metrics" . }}
{{- end }}
{{- /* The reports stay where the chart mounts them (reports.mountPath, the claim): elsewhere
they would be on the read-only root or in scratch space, lost with the pod. */}}
{{- with dig "reports" "dir" nil (.Values.config.extra | default dict) }}
{{- if ne (clean (toString .)) (clean $.Values.reports.mountPath) }}
{{- fail (printf "config.extra.reports.dir %s: the reports directory is reports.mountPath (%s), where the chart mounts reports.existingClaim; set reports.mountPath instead" (toString .) $.Values.reports.mountPath) }}
{{- end }}
{{- end }}
{{- $cfg = mergeOverwrite $cfg (deepCopy .Values.config.extra) }}
{{- /* What config.extra adds is checked as config.connections is: no secret in the ConfigMap. */}}
{{- range $name, $c := (get $cfg "connections" | default dict) }}
{{- if kindIs "map" $c }}
{{- $url := get $c "url" }}
{{- if and (kindIs "string" $url) (or (regexMatch "://[^/?#]*:[^/?#]*@" $url) (regexMatch "(?i)[?&](password|pass|passwd|pwd|sslpassword)=[^&]" $url)) }}
{{- fail (printf "connections.%s.url (config.connections or config.extra) carries a password: put the URL in existingSecret and name its key in urlSecretKey" $name) }}
{{- end }}
{{- $endpoint := get $c "endpoint" }}
{{- if and (kindIs "string" $endpoint) (regexMatch "://[^/?#]*@" $endpoint) }}
{{- fail (printf "connections.%s.endpoint carries credentials (user:password@): the S3 client takes them from the AWS chain (IRSA, or a secret through extraEnvVars valueFrom)" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Metrics as merged (metrics.* and config.extra.metrics). The root file system is
read-only: a textfile's directory must be a mounted volume (extraVolumeMounts, the reports
volume, /tmp), or every run only warns that it cannot write it. */}}
{{- with dig "metrics" "textfile" "" $cfg }}
{{- $dir := dir (clean (toString .)) }}
{{- $mounts := list (clean $.Values.reports.mountPath) "/tmp" }}
{{- range $.Values.extraVolumeMounts }}{{- $mounts = append $mounts (clean (toString .mountPath)) }}{{- end }}
{{- $mounted := false }}
{{- range $mounts }}
{{- if or (eq $dir .) (hasPrefix (printf "%s/" .) $dir) }}{{- $mounted = true }}{{- end }}
{{- end }}
{{- if not $mounted }}
{{- fail (printf "metrics.textfile %s: its directory %s is on the read-only root file system; mount node_exporter's textfile directory there with extraVolumes and extraVolumeMounts" (toString .) $dir) }}
{{- end }}
{{- end }}
{{- /* Grouping labels lapse refuses (exit 2 on every run): its own, and reserved ones. */}}
{{- range $label, $_ := (dig "metrics" "pushgateway" "grouping" dict $cfg) }}
{{- if or (has $label (list "job" "shard" "schedule_job" "policies")) (hasPrefix "__" $label) }}
{{- fail (printf "metrics pushgateway grouping label '%s' is one lapse sets itself or a reserved name: every run would exit 2" $label) }}
{{- end }}
{{- end }}
{{- $push := dig "metrics" "pushgateway" "url" "" $cfg }}
{{- if and (kindIs "string" $push) (regexMatch "://[^/?#]*@" $push) }}
{{- fail "metrics.pushgateway.url (config.extra) carries credentials (user:password@), which lapse neither sends nor keeps in its config: reach the gateway without them (a sidecar or network policy)" }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
The container arguments (the image's entrypoint is the lapse binary).
*/}}
{{- define "lapse.args" -}}
{{- $args := list }}
{{- if .Values.dryRun }}
{{- $args = list "plan" }}
{{- else }}
{{- $args = list "run" "--yes" }}
{{- end }}
{{- $args = concat $args (list "-c" (printf "%s/lapse.yaml" (include "lapse.configDir" .)) "--log-format" .Values.logFormat) }}
{{- if .Values.sharding.enabled }}
{{- /* Kubernetes expands $(JOB_COMPLETION_INDEX), which an Indexed Job sets in every pod (0-based). */}}
{{- $args = concat $args (list "--shard" (printf "$(JOB_COMPLETION_INDEX)/%d" (int .Values.sharding.shards))) }}
{{- /* The pods start at different moments: they share the cutoff by aligning it. */}}
{{- $args = concat $args (list "--cutoff" .Values.sharding.cutoff) }}
{{- end }}
{{- /* Finish the batch and write the report well before the kubelet's SIGKILL. */}}
{{- $grace := max 5 (sub (int .Values.terminationGracePeriodSeconds) 15) }}
{{- $args = concat $args (list "--shutdown-grace" (toString $grace)) }}
{{- /* An argument the chart sets, given again in extraArgs, makes lapse refuse to start (exit 2) on every run. */}}
{{- $owned := list "-c" "--config" "--log-format" "--shutdown-grace" "--report-dir" }}
{{- if not .Values.dryRun }}{{- $owned = append $owned "--yes" }}{{- end }}
{{- if .Values.sharding.enabled }}{{- $owned = concat $owned (list "--shard" "--cutoff") }}{{- end }}
{{- /* One-off overrides: in the CronJob they would hold for every scheduled run, not once. */}}
{{- $once := list "--allow-share" "--allow-future-cutoff" }}
{{- if not .Values.sharding.enabled }}{{- $once = concat $once (list "--cutoff" "--shard") }}{{- end }}
{{- range .Values.extraArgs }}
{{- $a := toString . }}
{{- /* Container arguments are in the CronJob spec, which the built-in view role reads. */}}
{{- if or (regexMatch "://[^/?#]*:[^/?#]*@" $a) (regexMatch "(?i)[?&](password|pass|passwd|pwd|sslpassword)=[^&]" $a) }}
{{- fail "extraArgs: an argument carries credentials (user:password@ or a password parameter): it would be written into the CronJob, readable by the built-in view role" }}
{{- end }}
{{- /* clap also takes a short flag's value attached: -c/etc/x.yaml. */}}
{{- if and (hasPrefix "-c" $a) (not (hasPrefix "--" $a)) }}
{{- fail "extraArgs: -c is set by the chart (the mounted config): given twice, lapse refuses to start on every run" }}
{{- end }}
{{- /* The textfile's directory must be a mounted volume: metrics.textfile checks that. */}}
{{- if or (eq $a "--metrics-textfile") (hasPrefix "--metrics-textfile=" $a) }}
{{- fail "extraArgs: --metrics-textfile: set metrics.textfile instead, which checks that its directory is a mounted volume (the root file system is read-only)" }}
{{- end }}
{{- range $owned }}
{{- if or (eq $a .) (hasPrefix (printf "%s=" .) $a) }}
{{- fail (printf "extraArgs: %s is set by the chart (from logFormat, terminationGracePeriodSeconds, dryRun, sharding or reports.mountPath): given twice, or elsewhere than the chart mounts it, a run fails or loses what it leaves for the next" .) }}
{{- end }}
{{- end }}
{{- range $once }}
{{- if or (eq $a .) (hasPrefix (printf "%s=" .) $a) }}
{{- fail (printf "extraArgs: %s is for one run, not for the schedule: in the CronJob it would hold for every run until removed. Run it once as a Job (the chart's README, Operations: a guardrail tripped)" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- $args = concat $args .Values.extraArgs }}
{{- toYaml $args }}
{{- end }}
