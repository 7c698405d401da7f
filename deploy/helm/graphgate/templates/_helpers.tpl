{{/*
Names: the usual Helm conventions, cut to the 63 characters of a DNS label.
*/}}
{{- define "graphgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "graphgate.fullname" -}}
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

{{- define "graphgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "graphgate.labels" -}}
helm.sh/chart: {{ include "graphgate.chart" . }}
{{ include "graphgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: graphgate
{{- end }}

{{- define "graphgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "graphgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "graphgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "graphgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "graphgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Redis (redis.enabled): names, labels and the URL graphgate is given.
*/}}
{{- define "graphgate.redis.fullname" -}}
{{- printf "%s-redis" (include "graphgate.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "graphgate.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "graphgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "graphgate.redis.labels" -}}
helm.sh/chart: {{ include "graphgate.chart" . }}
{{ include "graphgate.redis.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: graphgate
{{- end }}

{{- define "graphgate.redis.url" -}}
{{- printf "redis://%s:6379/0" (include "graphgate.redis.fullname" .) }}
{{- end }}

{{/*
Secrets: the Secret that holds them, whether the chart creates it, and the
settings it carries (setting name -> values key).
*/}}
{{- define "graphgate.secretSettings" -}}
backend_password: backendPassword
metrics_token: metricsToken
static_client_secret: staticClientSecret
{{- end }}

{{- define "graphgate.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "graphgate.fullname" .) }}
{{- end }}

{{- define "graphgate.createSecret" -}}
{{- if and (not .Values.secrets.existingSecret) (or .Values.secrets.backendPassword .Values.secrets.metricsToken .Values.secrets.staticClientSecret (include "graphgate.generatesMetricsToken" .)) -}}
true
{{- end }}
{{- end }}

{{/*
Whether the chart makes up the metrics token: with auth = oidc and neither a
token nor config.metrics_public, graphgate keeps /metrics closed, because it
names tenants, and Prometheus could not scrape it. Only without an existing Secret and without a given token.
*/}}
{{- define "graphgate.generatesMetricsToken" -}}
{{- if not (or .Values.secrets.existingSecret .Values.secrets.metricsToken .Values.config.metrics_public) -}}
true
{{- end }}
{{- end }}

{{/*
The metrics token the chart-made Secret holds: the given one, else the one the
release's Secret already holds (so upgrades keep it), else a new random one.
`lookup` sees nothing under `helm template` (Argo CD): give secrets.metricsToken
or an existingSecret there, or the token changes with every render.
*/}}
{{- define "graphgate.metricsTokenValue" -}}
{{- if .Values.secrets.metricsToken -}}
{{- .Values.secrets.metricsToken -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "graphgate.secretName" .) -}}
{{- $kept := "" -}}
{{- if and $existing $existing.data -}}
{{- $kept = index $existing.data .Values.secrets.keys.metricsToken | default "" -}}
{{- end -}}
{{- if $kept -}}
{{- $kept | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
Whether the metrics token is (or may be) set: a chart-made Secret with the
value (given or generated), or an existing Secret (its key is optional there).
*/}}
{{- define "graphgate.hasMetricsToken" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.metricsToken (include "graphgate.generatesMetricsToken" .) -}}
true
{{- end }}
{{- end }}

{{/*
One setting value as an environment variable string: lists joined with commas,
maps as JSON, whole numbers without the float64 exponent YAML parsing gives them.
*/}}
{{- define "graphgate.envValue" -}}
{{- $v := . -}}
{{- if kindIs "slice" $v -}}
{{- join "," $v -}}
{{- else if kindIs "map" $v -}}
{{- toJson $v -}}
{{- else if kindIs "float64" $v -}}
{{- if eq $v (floor $v) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else -}}
{{- toString $v -}}
{{- end -}}
{{- end }}

{{/*
The effective settings (a YAML map of setting -> string), after the chart's own.
*/}}
{{- define "graphgate.settings" -}}
{{- $settings := dict -}}
{{- $catalog := .Values.catalog.enabled -}}
{{- range $key, $value := .Values.config -}}
{{- if and $catalog (eq $key "tenants") -}}
{{- else if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) -}}
{{- $_ := set $settings $key (include "graphgate.envValue" $value) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $settings "host" "0.0.0.0" -}}
{{- $_ := set $settings "port" (toString .Values.containerPort) -}}
{{- $_ := set $settings "transport" "http" -}}
{{- $_ := set $settings "data_dir" "/data" -}}
{{- if .Values.redis.enabled -}}
{{- $_ := set $settings "state_url" (include "graphgate.redis.url" .) -}}
{{- end -}}
{{- if not (hasKey $settings "stateless_http") -}}
{{- $_ := set $settings "stateless_http" (ternary "true" "false" (gt (int .Values.replicaCount) 1)) -}}
{{- end -}}
{{- toYaml $settings -}}
{{- end }}

{{/*
Refuse, at render time, what graphgate would refuse at start-up, and what would
start but misbehave on Kubernetes.
*/}}
{{- define "graphgate.validate" -}}
{{- $c := .Values.config -}}
{{- range $key, $_ := (include "graphgate.secretSettings" . | fromYaml) -}}
{{- if hasKey $c $key -}}
{{- fail (printf "config.%s: a secret; set it under secrets (or secrets.existingSecret), not in config" $key) -}}
{{- end -}}
{{- end -}}
{{- range $key := list "host" "port" "transport" "data_dir" "demo" -}}
{{- if hasKey $c $key -}}
{{- fail (printf "config.%s: set by the chart (host 0.0.0.0, port from containerPort, transport http, data_dir /data; no demo)" $key) -}}
{{- end -}}
{{- end -}}
{{- range $key, $_ := $c -}}
{{- if not (regexMatch "^[a-z][a-z0-9_]*$" $key) -}}
{{- fail (printf "config.%s: setting names are lower case, as in README.md (e.g. public_url)" $key) -}}
{{- end -}}
{{- end -}}
{{- if not (has (toString $c.auth) (list "oidc" "dev")) -}}
{{- fail "config.auth: must be oidc (or dev for a trial); graphgate refuses to serve 0.0.0.0 without authentication" -}}
{{- end -}}
{{- if not $c.public_url -}}
{{- fail "config.public_url: required (the URL clients use, e.g. https://graphgate.example.com)" -}}
{{- end -}}
{{- if and (eq (toString $c.auth) "oidc") (not $c.issuer) -}}
{{- fail "config.issuer: required when config.auth is oidc" -}}
{{- end -}}
{{- if not $c.tenants -}}
{{- fail "config.tenants: required (a list of tenant names, or a map tenant -> database)" -}}
{{- end -}}
{{- if and (has (toString $c.registration) (list "shim" "proxy")) (not $c.static_client_id) -}}
{{- fail (printf "config.static_client_id: required for registration = %s" $c.registration) -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (eq (toString ($c.backend | default "embedded")) "embedded") -}}
{{- fail "config.backend: the embedded database lives inside one pod; with replicaCount > 1 use a database server (falkordb://, bolt://, neo4j://)" -}}
{{- end -}}
{{- if and .Values.redis.enabled $c.state_url -}}
{{- fail "config.state_url: leave it unset when redis.enabled (the chart points graphgate at its Redis)" -}}
{{- end -}}
{{- end }}

{{/*
An HTTP probe with the Host header graphgate accepts.
*/}}
{{- define "graphgate.probe" -}}
{{- $probe := deepCopy .probe -}}
{{- if and $probe.httpGet .root.Values.probeHostHeader -}}
{{- $headers := $probe.httpGet.httpHeaders | default list -}}
{{- $headers = append $headers (dict "name" "Host" "value" .root.Values.probeHostHeader) -}}
{{- $_ := set $probe.httpGet "httpHeaders" $headers -}}
{{- end -}}
{{- toYaml $probe -}}
{{- end }}
