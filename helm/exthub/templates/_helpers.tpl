{{/* Names: "<fullname>-<component>"; the fullname defaults to the release name. */}}
{{- define "exthub.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "exthub.name" -}}
{{- printf "%s-%s" (include "exthub.fullname" .root) .component -}}
{{- end -}}

{{- define "exthub.selectorLabels" -}}
app.kubernetes.io/name: exthub
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "exthub.labels" -}}
{{ include "exthub.selectorLabels" . }}
app.kubernetes.io/part-of: exthub
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is given */}}
{{- define "exthub.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{/* An env var value: lists as JSON arrays, booleans as true/false, whole numbers without exponent. */}}
{{- define "exthub.envValue" -}}
{{- if kindIs "slice" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* EXTHUB_* env vars from a settings map: camelCase keys -> SNAKE_CASE, nested maps -> "__"; null is skipped. */}}
{{- define "exthub.settingsEnv" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .values }}
{{- $name := printf "%s%s" $prefix (snakecase $key | upper) }}
{{- if kindIs "map" $value }}
{{- include "exthub.settingsEnv" (dict "prefix" (printf "%s__" $name) "values" $value) }}
{{- else if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ include "exthub.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Kubernetes DNS name of a component's Service. */}}
{{- define "exthub.serviceHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "exthub.name" .) .root.Release.Namespace -}}
{{- end -}}

{{- define "exthub.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "exthub.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "exthub.topologySpread" -}}
{{- $spread := .root.Values.podDefaults.topologySpread -}}
- maxSkew: {{ $spread.zoneSkew }}
  topologyKey: {{ $spread.zoneKey }}
  whenUnsatisfiable: {{ $spread.zoneWhenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "exthub.selectorLabels" . | nindent 6 }}
- maxSkew: {{ $spread.nodeSkew }}
  topologyKey: {{ $spread.nodeKey }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "exthub.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* Key Vault objects a service reads as env vars (synced to a Secret by the CSI driver): alias -> KV name. */}}
{{- define "exthub.envSecrets" -}}
{{- $kv := .root.Values.keyVault.secrets -}}
{{- $out := dict -}}
{{- if or (eq .component "catalog") (eq .component "execution") -}}
{{- $_ := set $out "page-token-secret" $kv.pageToken -}}
{{- end -}}
{{- if .root.Values.settings.telemetry.azureMonitor -}}
{{- $_ := set $out "appinsights-connection-string" $kv.appInsightsConnectionString -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* True when the gateway is rendered (it needs the rendered Envoy configuration). */}}
{{- define "exthub.gatewayEnabled" -}}
{{- if .Values.gateway.envoyConfig -}}true{{- end -}}
{{- end -}}

{{/* The environment variable a Key Vault alias is exposed as. */}}
{{- define "exthub.secretEnvName" -}}
{{- if eq . "page-token-secret" -}}EXTHUB_PAGE_TOKEN_SECRET{{- else if eq . "appinsights-connection-string" -}}APPLICATIONINSIGHTS_CONNECTION_STRING{{- end -}}
{{- end -}}
