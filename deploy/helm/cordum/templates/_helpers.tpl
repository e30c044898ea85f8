{{/* Names, labels and the environment shared by every role. */}}

{{- define "cordum.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cordum.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cordum.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "cordum.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Call with (dict "root" $ "component" "gateway"). */}}
{{- define "cordum.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cordum.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cordum.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "cordum.fullname" .)) -}}
{{- end -}}

{{- define "cordum.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "cordum.kernelUrl" -}}
{{- printf "%s-kernel:%v" (include "cordum.fullname" .) .Values.kernel.port -}}
{{- end -}}

{{/* Where gateways and schedulers find the shared audit checkpoint signing key. */}}
{{- define "cordum.signingKeyPath" -}}
/etc/cordum/audit/audit-signing.key
{{- end -}}

{{/* CORDUM_* variables every role gets (docs/deployment.md, "Settings"). */}}
{{- define "cordum.env" -}}
- name: CORDUM_STORE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cordum.secretName" . }}
      key: store-url
- name: CORDUM_BUS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cordum.secretName" . }}
      key: bus-url
- name: CORDUM_REDIS_PREFIX
  value: {{ .Values.redis.prefix | quote }}
- name: CORDUM_BUS_STREAM
  value: {{ .Values.nats.stream | quote }}
- name: CORDUM_KERNEL_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "cordum.secretName" . }}
      key: kernel-token
- name: CORDUM_AUDIT_HMAC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "cordum.secretName" . }}
      key: audit-hmac-key
- name: CORDUM_FAIL_MODE
  value: {{ .Values.failMode | quote }}
{{- if .Values.poolSubjects }}
- name: CORDUM_POOL_SUBJECTS
  value: {{ .Values.poolSubjects | quote }}
{{- end }}
- name: CORDUM_POOL_SUBJECT_CAPACITY
  value: {{ .Values.poolSubjectCapacity | quote }}
{{- if .Values.pools }}
- name: CORDUM_POOLS
  value: {{ .Values.pools | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The signing key, mounted from the Secret (gateways and schedulers load it). */}}
{{- define "cordum.signingKeyVolume" -}}
- name: audit-signing-key
  secret:
    secretName: {{ include "cordum.secretName" . }}
    defaultMode: 288  # 0440: readable by the pod's group (fsGroup)
    items:
      - key: audit-signing-key
        path: audit-signing.key
{{- end -}}

{{- define "cordum.signingKeyMount" -}}
- name: audit-signing-key
  mountPath: /etc/cordum/audit
  readOnly: true
{{- end -}}

{{- define "cordum.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
