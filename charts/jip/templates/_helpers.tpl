{{/* Names: <release>-jip unless the release name already says jip. */}}
{{- define "jip.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jip.fullname" -}}
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

{{/* JIP's services, each a Deployment of `jip up --role <name>`. */}}
{{- define "jip.services" -}}
{{- $names := list "store" "meta" "flow" "base" "dicom" "indexer" }}
{{- if .Values.federation.enabled }}{{ $names = append $names "federation" }}{{ end }}
{{- join " " $names }}
{{- end }}

{{/* The HTTP services the Ingress, operators and Airflow's workers reach. */}}
{{- define "jip.apiServices" -}}store meta flow base{{- end }}

{{/* The name of one part's objects: <fullname>-store, -postgresql, ... */}}
{{- define "jip.componentName" -}}
{{- printf "%s-%s" (include "jip.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jip.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jip.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "jip.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "jip.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jip
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one part; call with (dict "root" $ "component" "store"). */}}
{{- define "jip.componentLabels" -}}
{{ include "jip.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "jip.componentSelectorLabels" -}}
{{ include "jip.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* A NetworkPolicyPeer: this release's pods of the given components (a list). */}}
{{- define "jip.peerOf" -}}
podSelector:
  matchLabels:
    {{- include "jip.selectorLabels" .root | nindent 4 }}
  matchExpressions:
    - key: app.kubernetes.io/component
      operator: In
      values: {{ toJson .components }}
{{- end }}

{{/*
NetworkPolicyPeers of the given components (a list). Operator pods are not the
release's: jip.flow.worker.runner_kubernetes labels them name=jip-operator,
component=operator.
*/}}
{{- define "jip.peersOf" -}}
{{- $peers := list }}
{{- $own := without .components "operator" }}
{{- if $own }}
{{- $peers = append $peers (include "jip.peerOf" (dict "root" .root "components" $own) | fromYaml) }}
{{- end }}
{{- if has "operator" .components }}
{{- $peers = append $peers (dict "podSelector" (dict "matchLabels" (include "jip.operatorLabels" . | fromYaml))) }}
{{- end }}
{{- toYaml $peers }}
{{- end }}

{{- define "jip.operatorLabels" -}}
app.kubernetes.io/name: jip-operator
app.kubernetes.io/part-of: jip
app.kubernetes.io/component: operator
{{- end }}

{{- define "jip.secretName" -}}
{{- include "jip.fullname" . }}
{{- end }}

{{- define "jip.configMapName" -}}
{{- include "jip.fullname" . }}
{{- end }}

{{/* repository:tag, or repository@digest; call with (dict "image" .Values.images.x "root" $). */}}
{{- define "jip.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (toString (default .root.Chart.AppVersion .image.tag)) }}
{{- end }}
{{- end }}

{{- define "jip.image" -}}
{{- include "jip.imageRef" (dict "image" .Values.images.jip "root" .) }}
{{- end }}

{{/* A Secret value made once and kept: the live Secret's, else a new random one. */}}
{{- define "jip.keep" -}}
{{- $live := lookup "v1" "Secret" .root.Release.Namespace (include "jip.secretName" .root) }}
{{- if and $live $live.data (hasKey $live.data .key) }}
{{- index $live.data .key }}
{{- else }}
{{- randAlphaNum (default 32 .length) | b64enc }}
{{- end }}
{{- end }}

{{/* Pod-level fields every pod shares: security, scheduling, pull secrets. */}}
{{- define "jip.podCommon" -}}
{{- $part := .part }}
{{- $root := .root -}}
automountServiceAccountToken: {{ default false .automount }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml (default $root.Values.podSecurityContext .podSecurityContext) | nindent 2 }}
{{- with (default $root.Values.nodeSelector $part.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.tolerations $part.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.affinity $part.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The catalog's host and port, bundled or external. */}}
{{- define "jip.postgresHost" -}}
{{- if .Values.postgresql.enabled }}{{ include "jip.componentName" (dict "root" . "component" "postgresql") }}{{ else }}{{ .Values.externalPostgresql.host }}{{ end }}
{{- end }}
{{- define "jip.postgresPort" -}}
{{- if .Values.postgresql.enabled }}5432{{ else }}{{ .Values.externalPostgresql.port }}{{ end }}
{{- end }}
{{/* The Secret holding database passwords: ours, or externalPostgresql.existingSecret. */}}
{{- define "jip.postgresSecret" -}}
{{- if .Values.postgresql.enabled }}{{ include "jip.secretName" . }}{{ else }}{{ .Values.externalPostgresql.existingSecret }}{{ end }}
{{- end }}
{{- define "jip.postgresPasswordKey" -}}
{{- if .Values.postgresql.enabled }}postgresql-password{{ else }}{{ .Values.externalPostgresql.passwordKey }}{{ end }}
{{- end }}

{{- define "jip.minioEndpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "%s:9000" (include "jip.componentName" (dict "root" . "component" "minio")) }}
{{- else }}
{{- printf "%s:%v" .Values.externalMinio.host .Values.externalMinio.port }}
{{- end }}
{{- end }}
{{- define "jip.minioSecure" -}}
{{- if .Values.minio.enabled }}false{{ else }}{{ .Values.externalMinio.secure }}{{ end }}
{{- end }}

{{- define "jip.airflowUrl" -}}
{{- if .Values.airflow.enabled }}
{{- printf "http://%s:8080" (include "jip.componentName" (dict "root" . "component" "airflow-api-server")) }}
{{- else }}
{{- .Values.externalAirflow.url }}
{{- end }}
{{- end }}

{{- define "jip.keycloakUrl" -}}
{{- printf "http://%s:8080/keycloak" (include "jip.componentName" (dict "root" . "component" "keycloak")) }}
{{- end }}

{{- define "jip.catalogEnv" -}}
- name: JIP_DB_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "jip.postgresSecret" . }}, key: {{ include "jip.postgresPasswordKey" . }}}
- name: JIP_CATALOG_URL
  value: {{ printf "postgresql://%s:$(JIP_DB_PASSWORD)@%s:%s/%s" .Values.externalPostgresql.username (include "jip.postgresHost" .) (include "jip.postgresPort" .) .Values.externalPostgresql.database | quote }}
{{- end }}

{{/*
Secret settings of JIP's pods as env entries: passwords from a Secret (ours or the one
an external block names), and the URLs that carry them composed by Kubernetes
($(VAR) expansion), so no credential is ever in values or the ConfigMap.
*/}}
{{- define "jip.secretEnv" -}}
{{- $secret := include "jip.secretName" . }}
{{ include "jip.catalogEnv" . }}
{{- if .Values.opensearch.enabled }}
- name: JIP_INDEX_URL
  value: {{ printf "http://%s:9200" (include "jip.componentName" (dict "root" . "component" "opensearch")) | quote }}
{{- else }}
- name: JIP_INDEX_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.externalOpensearch.existingSecret }}, key: password}
- name: JIP_INDEX_URL
  value: {{ printf "%s://%s:$(JIP_INDEX_PASSWORD)@%s:%v" .Values.externalOpensearch.scheme .Values.externalOpensearch.username .Values.externalOpensearch.host .Values.externalOpensearch.port | quote }}
{{- end }}
- name: JIP_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ ternary $secret .Values.externalMinio.existingSecret .Values.minio.enabled }}, key: {{ ternary "minio-root-user" "access-key" .Values.minio.enabled }}}
- name: JIP_S3_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ ternary $secret .Values.externalMinio.existingSecret .Values.minio.enabled }}, key: {{ ternary "minio-root-password" "secret-key" .Values.minio.enabled }}}
{{- if .Values.config.auth.enabled }}
- name: JIP_AUTH__CLIENT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ ternary $secret .Values.externalKeycloak.existingSecret .Values.keycloak.enabled }}, key: {{ ternary "oidc-client-secret" "client-secret" .Values.keycloak.enabled }}}
{{- end }}
{{- if .Values.config.flow.enabled }}
- name: JIP_FLOW__AIRFLOW_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ ternary $secret .Values.externalAirflow.existingSecret .Values.airflow.enabled }}, key: {{ ternary "airflow-jip-password" "password" .Values.airflow.enabled }}}
{{- end }}
{{- end }}

{{/* Scrape annotations of a pod serving /metrics on `port`. */}}
{{- define "jip.scrapeAnnotations" -}}
{{- if .root.Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
