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

{{- define "roomrec.selectorLabels" -}}
app.kubernetes.io/name: roomrec
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "roomrec.operatorImage" -}}
{{- $image := .Values.operator.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "roomrec.workerImage" -}}
{{- printf "%s:%s" .Values.worker.image.repository (default .Chart.AppVersion .Values.worker.image.tag) -}}
{{- end -}}

{{- /* The hardened container securityContext shared by the operator (and mirrored by the
       operator for its worker pods, operator/src/worker.rs). */ -}}
{{- define "roomrec.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "roomrec.pullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.operator.imagePullSecrets }}{{ $names = append $names .name }}{{ end -}}
{{- join "," $names -}}
{{- end -}}

{{- /* Where heritage RecordingJobs go: heritage.namespace, else the watched namespace, else the
       release's. A namespace the operator does not watch would hold jobs that never run. */ -}}
{{- define "roomrec.heritageNamespace" -}}
{{- $watched := .Values.operator.watchNamespace -}}
{{- $namespace := .Values.heritage.namespace | default $watched | default .Release.Namespace -}}
{{- if and $watched (ne $namespace $watched) -}}
{{- fail (printf "heritage.namespace is %s but operator.watchNamespace is %s: heritage jobs would never run; leave heritage.namespace empty or make them equal" $namespace $watched) -}}
{{- end -}}
{{- $namespace -}}
{{- end -}}
