{{- define "roomrec.fullname" -}}
{{- printf "%s-roomrec" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "roomrec.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "roomrec.fullname" .)) .Values.operator.serviceAccount.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "roomrec.labels" -}}
app.kubernetes.io/name: roomrec
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
