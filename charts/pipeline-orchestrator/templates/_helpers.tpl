{{/* Names, labels and images shared by the templates. */}}

{{- define "po.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "po.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "po.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "po.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .name .root.Values.image.tag -}}
{{- end -}}

{{- define "po.controlPlane" -}}{{ include "po.fullname" . }}-control-plane{{- end -}}
{{- define "po.headless" -}}{{ include "po.controlPlane" . }}-peers{{- end -}}
{{- define "po.raftSecret" -}}{{ include "po.fullname" . }}-raft{{- end -}}
{{- define "po.minio" -}}{{ include "po.fullname" . }}-minio{{- end -}}
{{- define "po.storeSecret" -}}
{{- if not .Values.minio.enabled -}}{{ .Values.externalStore.secret }}
{{- else if .Values.minio.existingSecret -}}{{ .Values.minio.existingSecret }}
{{- else -}}{{ include "po.minio" . }}{{- end -}}
{{- end -}}
{{- define "po.storeEndpoint" -}}
{{- if .Values.minio.enabled -}}{{ include "po.minio" . }}.{{ .Release.Namespace }}.svc:9000
{{- else -}}{{ .Values.externalStore.endpoint }}{{- end -}}
{{- end -}}

{{/* The restricted security context every container but netem's runs with. */}}
{{- define "po.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "po.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Raft members: NAME=HOST:PORT for each StatefulSet pod, by its stable DNS name. */}}
{{- define "po.members" -}}
{{- $root := . -}}
{{- range $i := until (int .Values.controlPlane.replicas) }}
- --member
- {{ include "po.controlPlane" $root }}-{{ $i }}={{ include "po.controlPlane" $root }}-{{ $i }}.{{ include "po.headless" $root }}.{{ $root.Release.Namespace }}.svc.cluster.local:{{ $root.Values.controlPlane.ports.raft }}
{{- end }}
{{- end -}}

{{/* {region: {other: rtt}} from .Values.regions, as the control plane's PIPEORCH_LATENCY_MS. */}}
{{- define "po.latencyMatrix" -}}
{{- $matrix := dict -}}
{{- range .Values.regions -}}
{{- $_ := set $matrix .name (.latencyMs | default dict) -}}
{{- end -}}
{{- toJson $matrix -}}
{{- end -}}
