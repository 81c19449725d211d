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

{{/* agentDefaults as spec.agent keys (what the operator's ConfigMap holds): empty pod
settings are left out, and deviceFile only goes with hostDevice. */}}
{{- define "hatswarm.agentDefaults" -}}
{{- $d := .Values.agentDefaults -}}
{{- $out := dict
  "image" (include "hatswarm.image" (list $d.image .))
  "imagePullPolicy" $d.imagePullPolicy
  "backend" $d.backend
  "resources" (deepCopy $d.resources)
  "npu" (deepCopy $d.npu)
  "cacheSize" $d.cacheSize
  "port" $d.port
  "metricsPort" $d.metricsPort -}}
{{- range $key := list "images" "imagePullSecrets" "tolerations" "affinity" "priorityClassName" "serviceAccountName" "podLabels" "podAnnotations" }}
{{- with get $d $key }}{{ $_ := set $out $key (deepCopy .) }}{{ end }}
{{- end }}
{{- if not $out.npu.resourceNames }}{{ $_ := unset $out.npu "resourceNames" }}{{ end -}}
{{- if not $out.npu.hostDevice }}{{ $_ := unset $out.npu "deviceFile" }}{{ end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* spec.agent of the pool the chart creates: only pool.agent's overrides. The operator fills
every field left out from agentDefaults at each reconcile (nested objects such as npu or
resources are taken whole), so no default, and no image version, is stored in the pool. */}}
{{- define "hatswarm.agentSettings" -}}
{{- $agent := deepCopy .Values.pool.agent -}}
{{- if and $agent.npu (not $agent.npu.hostDevice) }}{{ $_ := unset $agent.npu "deviceFile" }}{{ end -}}
{{- toYaml $agent -}}
{{- end -}}

{{- define "hatswarm.agentImage" -}}
{{- include "hatswarm.image" (list .Values.agentDefaults.image .) -}}
{{- end -}}

{{/* The extended resource the chart's device plugin exposes. */}}
{{- define "hatswarm.devicePluginResource" -}}
{{- printf "%s/%s" .Values.devicePlugin.domain .Values.devicePlugin.name -}}
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
