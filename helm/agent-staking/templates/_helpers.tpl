{{/* Chart name, at most 63 characters. */}}
{{- define "agent-staking.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name when it already holds the chart name. */}}
{{- define "agent-staking.fullname" -}}
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

{{- define "agent-staking.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agent-staking.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agent-staking.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agent-staking.labels" -}}
helm.sh/chart: {{ include "agent-staking.chart" . }}
{{ include "agent-staking.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agent-staking
{{- end }}

{{- define "agent-staking.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agent-staking.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Label a client pod carries to pass the NetworkPolicy. */}}
{{- define "agent-staking.clientLabel" -}}
{{ include "agent-staking.fullname" . | trunc 56 | trimSuffix "-" }}-client
{{- end }}

{{- define "agent-staking.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The service runs on the embedded localnet (no Solana endpoint configured). */}}
{{- define "agent-staking.embeddedLocalnet" -}}
{{- if and (empty .Values.solana.rpcUrls) (empty .Values.solana.existingSecret) }}true{{ end }}
{{- end }}

{{/* /metrics may leave the pod: over TLS, or in plaintext by explicit choice. */}}
{{- define "agent-staking.metricsExposed" -}}
{{- if or .Values.tls.enabled .Values.metrics.allowPlaintext }}true{{ end }}
{{- end }}

{{/* The Service's DNS name in the cluster (what the certificate must name). */}}
{{- define "agent-staking.serviceHost" -}}
{{ include "agent-staking.fullname" . }}.{{ .Release.Namespace }}.svc
{{- end }}

{{/* Where the server's certificate, key and client CA are mounted. */}}
{{- define "agent-staking.tlsDir" -}}
/etc/agent-staking/tls
{{- end }}

{{/* More than one pod may run at once. */}}
{{- define "agent-staking.scaledOut" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
Values that cannot work together. values.schema.json checks each value on its own;
these rules span several. Included by the Deployment, so every install runs them.
*/}}
{{- define "agent-staking.validate" -}}
{{- $drain := add (int .Values.preStopSleepSeconds) (int .Values.server.shutdownGraceSeconds) 5 }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least preStopSleepSeconds (%d) + server.shutdownGraceSeconds (%d) + 5: the kubelet would kill calls still draining" (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds) (int .Values.server.shutdownGraceSeconds)) }}
{{- end }}
{{- if include "agent-staking.scaledOut" . }}
{{- if include "agent-staking.embeddedLocalnet" . }}
{{- fail "several replicas need real Solana endpoints (solana.rpcUrls or solana.existingSecret): the embedded localnet is a private chain per pod" }}
{{- end }}
{{- if not .Values.database.existingSecret }}
{{- fail "several replicas need PostgreSQL (database.existingSecret): the SQLite key store lives in each pod's emptyDir" }}
{{- end }}
{{- if not .Values.receiptKeys.existingSecret }}
{{- fail "several replicas need one receipt key file (receiptKeys.existingSecret): each pod would sign receipts with keys the others do not publish" }}
{{- end }}
{{- end }}
{{- if and (not (include "agent-staking.embeddedLocalnet" .)) (gt (int .Values.solana.serviceFeeBps) 0) (not .Values.solana.feeRecipient) }}
{{- fail "solana.feeRecipient is required with real Solana endpoints while solana.serviceFeeBps > 0" }}
{{- end }}
{{- if and (ne .Values.opentelemetry.exporter "none") (not .Values.opentelemetry.endpoint) }}
{{- fail "opentelemetry.endpoint: where is the collector? (the service's default is localhost, which is nothing in a pod)" }}
{{- end }}
{{- if and .Values.solana.rpcUrls .Values.solana.existingSecret }}
{{- fail "set solana.rpcUrls or solana.existingSecret, not both" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not (include "agent-staking.metricsExposed" .)) }}
{{- fail "metrics.serviceMonitor.enabled: Prometheus cannot reach /metrics, which stays on the pod's loopback while TLS is off; set tls.enabled (https) or metrics.allowPlaintext: true (plaintext on the pod's network)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.tls.mutual (not (and .Values.metrics.serviceMonitor.tlsConfig.cert .Values.metrics.serviceMonitor.tlsConfig.keySecret)) }}
{{- fail "metrics.serviceMonitor.tlsConfig: with tls.mutual /metrics requires a client certificate too; name the one Prometheus presents (cert and keySecret)" }}
{{- end }}
{{- $reserved := dict
  "listen" "server.listenHost and server.grpcPort"
  "health_listen" "server.listenHost and server.healthPort"
  "metrics_listen" "server.listenHost and server.metricsPort (and metrics.allowPlaintext)"
  "tls_cert_file" "tls.existingSecret"
  "tls_key_file" "tls.existingSecret"
  "tls_client_ca_file" "tls.mutual and tls.clientCASecret"
  "data_dir" "the chart (an emptyDir at /data)"
  "shutdown_grace_seconds" "server.shutdownGraceSeconds"
  "rpc_urls" "solana.rpcUrls or solana.existingSecret"
  "fee_recipient" "solana.feeRecipient"
  "service_fee_bps" "solana.serviceFeeBps"
  "default_vote_account" "solana.defaultVoteAccount"
  "database_url" "database.existingSecret"
  "redis_url" "redis.existingSecret"
  "tracing_headers" "opentelemetry.existingSecret"
  "tracing_exporter" "opentelemetry.exporter"
  "tracing_endpoint" "opentelemetry.endpoint"
  "tracing_sample_ratio" "opentelemetry.sampleRatio"
  "bootstrap_keys" "bootstrapKeys"
  "receipt_key_file" "receiptKeys.existingSecret"
  "config_file" "config (the ConfigMap)" }}
{{- range $key, $_ := .Values.config }}
{{- if hasKey $reserved (lower $key) }}
{{- fail (printf "config.%s: set it with %s" $key (get $reserved (lower $key))) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by the server and the hook Job. */}}
{{- define "agent-staking.podSecurity" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Environment variables read from Secrets: referenced, never inlined. */}}
{{- define "agent-staking.secretEnv" -}}
{{- if .Values.database.existingSecret }}
- name: AGENT_STAKING_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: AGENT_STAKING_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.secretKey }}
{{- end }}
{{- if .Values.solana.existingSecret }}
- name: AGENT_STAKING_RPC_URLS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.solana.existingSecret }}
      key: {{ .Values.solana.secretKey }}
{{- end }}
{{- if .Values.opentelemetry.existingSecret }}
- name: AGENT_STAKING_TRACING_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.opentelemetry.existingSecret }}
      key: {{ .Values.opentelemetry.secretKey }}
{{- end }}
{{- end }}

{{/* The listen host as HOST in HOST:PORT (IPv6 in brackets). */}}
{{- define "agent-staking.hostForListen" -}}
{{- if contains ":" .Values.server.listenHost }}[{{ .Values.server.listenHost }}]{{ else }}{{ .Values.server.listenHost }}{{ end }}
{{- end }}

{{/* A value as an environment variable's text: lists and maps as JSON, whole numbers
without an exponent (YAML numbers reach templates as float64). */}}
{{- define "agent-staking.envValue" -}}
{{- if or (kindIs "slice" .) (kindIs "map" .) }}{{ toJson . }}
{{- else if and (kindIs "float64" .) (eq . (floor .)) }}{{ int64 . }}
{{- else }}{{ toString . }}{{ end }}
{{- end }}

{{/* OTEL_RESOURCE_ATTRIBUTES (the OpenTelemetry SDK adds them to the service's
resource): the pod and namespace (from the downward API) and extras. */}}
{{- define "agent-staking.otelResourceAttributes" -}}
{{- $attrs := list "k8s.pod.name=$(K8S_POD_NAME)" "k8s.namespace.name=$(K8S_NAMESPACE)" }}
{{- range $key, $value := .Values.opentelemetry.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $attrs }}
{{- end }}
