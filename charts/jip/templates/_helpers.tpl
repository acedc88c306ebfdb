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

{{/* The name of one role's objects: <fullname>-api, -dicom, -indexer. */}}
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

{{/* Labels of one role; call with (dict "root" $ "component" "api"). */}}
{{- define "jip.componentLabels" -}}
{{ include "jip.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "jip.componentSelectorLabels" -}}
{{ include "jip.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "jip.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jip.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "jip.secretName" -}}
{{- default (include "jip.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "jip.configMapName" -}}
{{- include "jip.fullname" . }}
{{- end }}

{{- define "jip.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Secret settings as env entries. Keys of a chart-made Secret exist only when their value
was given, so all but the catalog and index URLs are optional references.
*/}}
{{- define "jip.secretEnv" -}}
{{- $secret := include "jip.secretName" . }}
{{- $keys := list
  (list "JIP_CATALOG_URL" "catalog-url" false)
  (list "JIP_INDEX_URL" "index-url" false)
  (list "JIP_S3_ACCESS_KEY" "s3-access-key" true)
  (list "JIP_S3_SECRET_KEY" "s3-secret-key" true)
  (list "JIP_AUTH__CLIENT_SECRET" "oidc-client-secret" true)
  (list "JIP_FLOW__AIRFLOW_PASSWORD" "airflow-password" true) }}
{{- range $keys }}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ index . 1 }}
      optional: {{ index . 2 }}
{{- end }}
{{- end }}
