{{/* Names, labels and the pieces the relay Deployment and the migration Job share. */}}

{{- define "kafka-outbox.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kafka-outbox.fullname" -}}
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

{{- define "kafka-outbox.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafka-outbox.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kafka-outbox.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kafka-outbox.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kafka-outbox
{{- end }}

{{- define "kafka-outbox.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Rules between values, which values.schema.json (one value at a time) cannot state. */}}
{{- define "kafka-outbox.validate" -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (float64 .Values.relay.drainDeadlineSeconds) }}
{{- fail "terminationGracePeriodSeconds must exceed relay.drainDeadlineSeconds, or SIGKILL cuts the drain short" }}
{{- end }}
{{- end }}

{{/* The pod security context and the node placement, shared by the relay and the migration Job. */}}
{{- define "kafka-outbox.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- /* Service links would add <SERVICE>_PORT variables, and a Service named outbox-kafka-... would turn into
  OUTBOX_KAFKA_* settings the relay passes to librdkafka. */}}
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* OUTBOX_DATABASE_URL from a Secret, and OUTBOX_SCHEMA. Argument: (list $ secretName key). */}}
{{- define "kafka-outbox.databaseEnv" -}}
{{- $root := index . 0 -}}
- name: OUTBOX_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ index . 1 }}
      key: {{ index . 2 }}
- name: OUTBOX_SCHEMA
  value: {{ $root.Values.database.schema | quote }}
{{- end }}

{{/* /tmp is the only writable path: the root filesystem is read-only. */}}
{{- define "kafka-outbox.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}
