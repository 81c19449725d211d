{{/* Names, labels and images shared by every template. */}}

{{- define "hatswarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "hatswarm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hatswarm.operatorName" -}}
{{- printf "%s-operator" (include "hatswarm.fullname" .) -}}
{{- end -}}

{{- define "hatswarm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: hatswarm
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "hatswarm.operatorSelectorLabels" -}}
app.kubernetes.io/name: hatswarm-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hatswarm.operatorLabels" -}}
{{ include "hatswarm.labels" . }}
{{ include "hatswarm.operatorSelectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The label every agent pod carries (builders.selector_labels in the operator). */}}
{{- define "hatswarm.agentSelectorLabels" -}}
app.kubernetes.io/name: hatswarm-agent
{{- end -}}

{{- define "hatswarm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hatswarm.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "hatswarm.image" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* The agent settings of the pool the chart creates: agentDefaults overlaid by pool.agent. */}}
{{- define "hatswarm.agentSettings" -}}
{{- $d := .Values.agentDefaults -}}
{{- $base := dict
  "image" (include "hatswarm.image" (list $d.image .))
  "imagePullPolicy" $d.imagePullPolicy
  "backend" $d.backend
  "resources" $d.resources
  "npu" $d.npu
  "cacheSize" $d.cacheSize
  "port" $d.port
  "metricsPort" $d.metricsPort -}}
{{- $merged := mergeOverwrite (deepCopy $base) (deepCopy .Values.pool.agent) -}}
{{- with .Values.pool.agent.resources }}{{ $_ := set $merged "resources" (deepCopy .) }}{{ end -}}
{{- if not $merged.npu.hostDevice }}{{ $_ := unset $merged.npu "deviceFile" }}{{ end -}}
{{- toYaml $merged -}}
{{- end -}}

{{- define "hatswarm.poolTokenSecret" -}}
{{- $s := .Values.secrets.poolToken -}}
{{- if $s.existingSecret -}}{{ $s.existingSecret }}{{- else if $s.create -}}{{ printf "%s-pool-token" (include "hatswarm.fullname" .) }}{{- end -}}
{{- end -}}

{{- define "hatswarm.cloudTokenSecret" -}}
{{- $s := .Values.secrets.cloudToken -}}
{{- if $s.existingSecret -}}{{ $s.existingSecret }}{{- else if $s.create -}}{{ printf "%s-cloud-token" (include "hatswarm.fullname" .) }}{{- end -}}
{{- end -}}

{{- define "hatswarm.tlsSecret" -}}
{{- $s := .Values.secrets.tls -}}
{{- if $s.existingSecret -}}{{ $s.existingSecret }}{{- else if $s.create -}}{{ printf "%s-agent-tls" (include "hatswarm.fullname" .) }}{{- end -}}
{{- end -}}

{{/* A Secret value: the given one, else the one already in the cluster, else a random token. */}}
{{- define "hatswarm.tokenValue" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $cfg := index . 2 -}}
{{- if $cfg.value -}}
{{- $cfg.value | b64enc -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace $name -}}
{{- if and $existing (hasKey $existing.data $cfg.key) -}}
{{- index $existing.data $cfg.key -}}
{{- else -}}
{{- randAlphaNum 40 | b64enc -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hatswarm.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "hatswarm.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
