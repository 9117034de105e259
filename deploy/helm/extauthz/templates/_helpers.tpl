{{/* The chart's name, or nameOverride. */}}
{{- define "extauthz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of every object: fullnameOverride, or the release's name with the chart's unless it holds it. */}}
{{- define "extauthz.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "extauthz.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "extauthz.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "extauthz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "extauthz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "extauthz.labels" -}}
{{ include "extauthz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "extauthz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "extauthz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* secretRef is urn:k8s:secret:<name>:<key>, as the configuration reads a mounted Secret. */}}
{{- define "extauthz.secretRef" -}}
{{- printf "urn:k8s:secret:%s:%s" (index . 0) (index . 1) }}
{{- end }}

{{/*
The configuration file: .Values.config with the listening addresses, the
secrets directory and the references to the Redis and admin Secrets set by
the chart.
*/}}
{{- define "extauthz.config" -}}
{{- $c := deepCopy .Values.config }}
{{- if not (get $c "policies") }}
{{- $_ := set $c "policies" (dict "orders" (dict "url" "https://idp.example.com/oauth2/token" "audience" "https://api.example.com")) }}
{{- $_ := set $c "defaultPolicy" "orders" }}
{{- end }}
{{- $server := get $c "server" | default dict }}
{{- $_ := set $server "grpcAddress" (printf ":%d" (int .Values.ports.grpc)) }}
{{- $_ := set $server "httpAddress" (ternary (printf ":%d" (int .Values.ports.http)) "" (gt (int .Values.ports.http) 0)) }}
{{- $_ := set $server "adminAddress" (printf ":%d" (int .Values.ports.admin)) }}
{{- if .Values.admin.existingSecret }}
{{- $admin := get $server "admin" | default dict }}
{{- $_ := set $admin "token" (include "extauthz.secretRef" (list .Values.admin.existingSecret .Values.admin.tokenKey)) }}
{{- $_ := set $server "admin" $admin }}
{{- end }}
{{- $_ := set $c "server" $server }}
{{- $_ := set $c "secrets" (dict "dir" .Values.secretsDir) }}
{{- $store := get $c "store" | default dict }}
{{- if .Values.redis.existingSecret }}
{{- $_ := set $store "encryptionKey" (include "extauthz.secretRef" (list .Values.redis.existingSecret .Values.redis.encryptionKeyKey)) }}
{{- if .Values.redis.passwordKey }}
{{- $redis := get $store "redis" | default dict }}
{{- $_ := set $redis "password" (include "extauthz.secretRef" (list .Values.redis.existingSecret .Values.redis.passwordKey)) }}
{{- $_ := set $store "redis" $redis }}
{{- end }}
{{- end }}
{{- if and (get $store "redis") (not (get $store "encryptionKey")) }}
{{- fail "config.store.redis needs an encryption key: set redis.existingSecret to a Secret holding it (kubectl create secret generic extauthz-redis --from-literal=encryptionKey=\"$(openssl rand -base64 32)\")" }}
{{- end }}
{{- $_ := set $c "store" $store }}
{{- toYaml $c }}
{{- end }}

{{/*
What only a restart puts into service (config.RestartOnly): the server
section, the in-process tier's size, the log format and tracing. Its hash
annotates the pods; everything else extauthz reloads from the mounted
ConfigMap and Secrets by itself.
*/}}
{{- define "extauthz.restartOnly" -}}
{{- $c := include "extauthz.config" . | fromYaml }}
{{- $store := get $c "store" | default dict }}
{{- $log := get $c "log" | default dict }}
{{- toYaml (dict "server" (get $c "server") "maxEntries" (get $store "maxEntries") "logFormat" (get $log "format") "tracing" (get $c "tracing")) }}
{{- end }}

{{/* The Secrets to mount under secretsDir, each once. */}}
{{- define "extauthz.secretNames" -}}
{{- $names := list }}
{{- range .Values.secretMounts }}{{ $names = append $names .name }}{{ end }}
{{- with .Values.redis.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- with .Values.admin.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- toYaml (uniq $names) }}
{{- end }}

{{/* GOMEMLIMIT: goMemLimitPercent of resources.limits.memory, in MiB. */}}
{{- define "extauthz.goMemLimit" -}}
{{- $q := toString .Values.resources.limits.memory }}
{{- $num := regexFind "^[0-9.]+" $q }}
{{- $unit := trimPrefix $num $q }}
{{- $mult := get (dict "" 1 "k" 1000 "K" 1000 "Ki" 1024 "M" 1000000 "Mi" 1048576 "G" 1000000000 "Gi" 1073741824 "T" 1000000000000 "Ti" 1099511627776) $unit }}
{{- if or (not $num) (not $mult) }}
{{- fail (printf "resources.limits.memory %q: want a quantity such as 512Mi" $q) }}
{{- end }}
{{- printf "%dMiB" (int64 (floor (divf (mulf (float64 $num) $mult (float64 .Values.goMemLimitPercent)) (mulf 100 1048576)))) }}
{{- end }}
