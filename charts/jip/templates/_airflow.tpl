{{/* Airflow's settings, the same in every Airflow process and in the task pods. */}}
{{- define "jip.airflowEnv" -}}
{{- $secret := include "jip.secretName" . }}
{{- $pg := .Values.externalPostgresql }}
- name: AIRFLOW_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "jip.postgresSecret" . }}
      key: {{ ternary "airflow-db-password" "airflow-password" .Values.postgresql.enabled }}
- name: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
  value: {{ printf "postgresql+psycopg2://%s:$(AIRFLOW_DB_PASSWORD)@%s:%s/%s" $pg.airflowUsername (include "jip.postgresHost" .) (include "jip.postgresPort" .) $pg.airflowDatabase | quote }}
- {name: AIRFLOW_HOME, value: /tmp/airflow}
- {name: AIRFLOW__CORE__EXECUTOR, value: KubernetesExecutor}
- {name: AIRFLOW__CORE__LOAD_EXAMPLES, value: "False"}
- {name: AIRFLOW__CORE__DAGS_FOLDER, value: {{ .Values.airflow.dagsFolder | quote }}}
- name: AIRFLOW__CORE__EXECUTION_API_SERVER_URL
  value: {{ printf "%s/execution/" (include "jip.airflowUrl" .) | quote }}
- {name: AIRFLOW__CORE__AUTH_MANAGER, value: airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager}
- {name: AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS, value: "jip:admin"}
- {name: AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE, value: /opt/airflow-auth/airflow-passwords.json}
- {name: AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE, value: {{ .Release.Namespace | quote }}}
- {name: AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE, value: /opt/airflow-pod-template/pod_template.yaml}
- {name: AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS, value: "True"}
- {name: AIRFLOW__LOGGING__BASE_LOG_FOLDER, value: /tmp/airflow/logs}
- name: AIRFLOW__CORE__FERNET_KEY
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: airflow-fernet-key}
- name: AIRFLOW__API_AUTH__JWT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: airflow-jwt-secret}
- name: AIRFLOW__API__SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: airflow-api-secret-key}
# What JIP's tasks need: the store's and the flow API's Services inside the cluster
# (passed on to operator pods' stage containers), the site's API through the Ingress for
# anything else, and the operator pods' settings; a run's token comes with each run.
- {name: JIP_API_URL, value: {{ printf "https://%s" .Values.host | quote }}}
- {name: JIP_FLOW__API__STORE_URL, value: {{ printf "http://%s:%v" (include "jip.componentName" (dict "root" . "component" "store")) .Values.httpPort | quote }}}
- {name: JIP_FLOW__API__FLOW_URL, value: {{ printf "http://%s:%v" (include "jip.componentName" (dict "root" . "component" "flow")) .Values.httpPort | quote }}}
- {name: JIP_FLOW__RUNNER, value: kubernetes}
- {name: JIP_FLOW__KUBERNETES_NAMESPACE, value: {{ .Release.Namespace | quote }}}
- {name: JIP_FLOW__KUBERNETES_STAGE_IMAGE, value: {{ include "jip.image" . | quote }}}
- {name: JIP_FLOW__IMAGE_REGISTRY, value: {{ .Values.operators.imageRegistry | quote }}}
{{- if .Values.operators.imageLock }}
- {name: JIP_FLOW__IMAGE_LOCK, value: /opt/airflow-pod-template/images.json}
{{- end }}
- {name: JIP_FLOW__GPU__RESOURCE, value: {{ .Values.operators.gpu.resource | quote }}}
- {name: JIP_FLOW__GPU__NODE_SELECTOR, value: {{ .Values.operators.gpu.nodeSelector | toJson | quote }}}
- {name: JIP_FLOW__GPU__TOLERATIONS, value: {{ .Values.operators.gpu.tolerations | toJson | quote }}}
{{- if not .Values.tls.existingSecret }}
# The self-signed certificate of the Ingress is the one to trust.
- {name: SSL_CERT_FILE, value: /opt/jip-tls/tls.crt}
{{- end }}
{{- end }}

{{/* Volumes every Airflow pod mounts (the template's pods too). */}}
{{- define "jip.airflowVolumes" -}}
- name: tmp
  emptyDir: {sizeLimit: 2Gi}
- name: auth
  secret:
    secretName: {{ include "jip.secretName" . }}
    items: [{key: airflow-passwords.json, path: airflow-passwords.json}]
- name: pod-template
  configMap:
    name: {{ include "jip.componentName" (dict "root" . "component" "airflow") }}
{{- if not .Values.tls.existingSecret }}
- name: tls
  secret:
    secretName: {{ printf "%s-tls" (include "jip.fullname" .) }}
    items: [{key: tls.crt, path: tls.crt}]
{{- end }}
{{- end }}

{{- define "jip.airflowMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: auth, mountPath: /opt/airflow-auth, readOnly: true}
- {name: pod-template, mountPath: /opt/airflow-pod-template, readOnly: true}
{{- if not .Values.tls.existingSecret }}
- {name: tls, mountPath: /opt/jip-tls, readOnly: true}
{{- end }}
{{- end }}

{{/* The pod of one Airflow process (or task); (dict "root" $ "name" "scheduler" "args" list "part" dict "probe" dict). */}}
{{- define "jip.airflowPod" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "jip.componentSelectorLabels" (dict "root" $root "component" (printf "airflow-%s" .name)) | nindent 4 }}
spec:
  serviceAccountName: {{ include "jip.componentName" (dict "root" $root "component" "airflow") }}
  {{- include "jip.podCommon" (dict "root" $root "part" .part "automount" .automount) | nindent 2 }}
  {{- if .restartNever }}
  restartPolicy: Never
  {{- end }}
  containers:
    - name: {{ .container | default .name }}
      image: {{ include "jip.imageRef" (dict "image" $root.Values.images.airflow "root" $root) | quote }}
      imagePullPolicy: {{ $root.Values.images.pullPolicy }}
      {{- with .args }}
      args: {{ toJson . }}
      {{- end }}
      env:
        {{- include "jip.airflowEnv" $root | trim | nindent 8 }}
      {{- with .port }}
      ports:
        - name: http
          containerPort: {{ . }}
          protocol: TCP
      {{- end }}
      {{- with .probe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
        {{- toYaml (index $root.Values.airflow.probes "startup") | nindent 8 }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
        {{- toYaml (index $root.Values.airflow.probes "liveness") | nindent 8 }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
        {{- toYaml (index $root.Values.airflow.probes "readiness") | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml .part.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "jip.airflowMounts" $root | trim | nindent 8 }}
  volumes:
    {{- include "jip.airflowVolumes" $root | trim | nindent 4 }}
{{- end }}
