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
The configuration file: .Values.config with the listening addresses, TLS on
the check ports, the admin token and socket, the secrets directory and the
references to the Redis and admin Secrets set by the chart.
*/}}
{{- define "extauthz.config" -}}
{{- include "extauthz.checkValues" . }}
{{- $c := deepCopy .Values.config }}
{{- if not (get $c "policies") }}
{{- $_ := set $c "policies" (dict "orders" (dict "url" "https://idp.example.com/oauth2/token" "audience" "https://api.example.com")) }}
{{- $_ := set $c "defaultPolicy" "orders" }}
{{- end }}
{{- $server := get $c "server" | default dict }}
{{- if hasKey $server "tls" }}
{{- fail "config.server.tls: set TLS on the check ports with the chart's tls values (tls.enabled, tls.existingSecret, tls.clientCA, tls.allowedCallers), which also mount the Secret and make the readiness probe GET /readyz on the admin port" }}
{{- end }}
{{- $_ := set $server "grpcAddress" (printf ":%d" (int .Values.ports.grpc)) }}
{{- $_ := set $server "httpAddress" (ternary (printf ":%d" (int .Values.ports.http)) "" .Values.httpMode.enabled) }}
{{- $_ := set $server "adminAddress" (printf ":%d" (int .Values.ports.admin)) }}
{{- $admin := get $server "admin" | default dict }}
{{- if get $admin "token" }}
{{- fail "config.server.admin.token: name the Secret holding the token in admin.existingSecret (and its key in admin.tokenKey) instead; the ConfigMap is no place for it" }}
{{- end }}
{{- if get $admin "socket" }}
{{- fail "config.server.admin.socket: set admin.socket.enabled (and admin.socket.path) instead, which mounts the writable volume the socket needs" }}
{{- end }}
{{- if .Values.admin.existingSecret }}
{{- $_ := set $admin "token" (include "extauthz.secretRef" (list .Values.admin.existingSecret .Values.admin.tokenKey)) }}
{{- end }}
{{- if .Values.admin.socket.enabled }}
{{- $_ := set $admin "socket" .Values.admin.socket.path }}
{{- end }}
{{- if $admin }}
{{- $_ := set $server "admin" $admin }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $tls := dict "cert" (include "extauthz.secretRef" (list .Values.tls.existingSecret .Values.tls.certKey)) "key" (include "extauthz.secretRef" (list .Values.tls.existingSecret .Values.tls.keyKey)) }}
{{- with .Values.tls.clientCA.key }}
{{- $_ := set $tls "clientCA" (include "extauthz.secretRef" (list (include "extauthz.clientCASource" $) .)) }}
{{- end }}
{{- with .Values.tls.allowedCallers }}
{{- $_ := set $tls "allowedCallers" . }}
{{- end }}
{{- $_ := set $server "tls" $tls }}
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
checkValues fails the rendering, saying what to set, for values that
cannot work or that would quietly serve less protection than they read as.
*/}}
{{- define "extauthz.checkValues" -}}
{{- if and .Values.httpMode.enabled (lt (int .Values.ports.http) 1) }}
{{- fail "httpMode.enabled: give HTTP mode its port in ports.http (8001)" }}
{{- end }}
{{- $tls := .Values.tls }}
{{- if $tls.enabled }}
{{- if not $tls.existingSecret }}
{{- fail "tls.enabled: name the Secret with the server certificate and key in tls.existingSecret (cert-manager's, or kubectl create secret tls extauthz-tls --cert=tls.crt --key=tls.key)" }}
{{- end }}
{{- if and $tls.clientCA.existingSecret $tls.clientCA.configMap }}
{{- fail "tls.clientCA: the CA is in tls.clientCA.existingSecret or in tls.clientCA.configMap, not both" }}
{{- end }}
{{- if and (or $tls.clientCA.existingSecret $tls.clientCA.configMap) (not $tls.clientCA.key) }}
{{- fail "tls.clientCA.key: name the key of the CA certificate (e.g. ca.crt, or root-cert.pem in istio-ca-root-cert)" }}
{{- end }}
{{- if and $tls.allowedCallers (not $tls.clientCA.key) }}
{{- fail "tls.allowedCallers needs tls.clientCA.key: a caller's identity is believed only from a certificate that chains to the client CA" }}
{{- end }}
{{- range $tls.allowedCallers }}
{{- if not (or (hasPrefix "dns:" .) (contains "://" .)) }}
{{- fail (printf "tls.allowedCallers: %q is neither a URI SAN (spiffe://cluster.local/ns/<namespace>/sa/<service account>) nor dns:<name>" .) }}
{{- end }}
{{- end }}
{{- with $tls.clientCA.configMap }}
{{- if has . (include "extauthz.secretNames" $ | fromYamlArray) }}
{{- fail (printf "tls.clientCA.configMap %s: a Secret of that name is mounted at the same place (<secretsDir>/%s); name the CA's Secret in tls.clientCA.existingSecret instead" . .) }}
{{- end }}
{{- end }}
{{- else if or $tls.clientCA.key $tls.allowedCallers }}
{{- fail "tls.clientCA or tls.allowedCallers is set but tls.enabled is false: the check ports would answer every caller in plaintext; set tls.enabled=true and tls.existingSecret" }}
{{- end }}
{{- if .Values.admin.socket.enabled }}
{{- $path := .Values.admin.socket.path }}
{{- if or (not (hasPrefix "/" $path)) (gt (len $path) 104) }}
{{- fail (printf "admin.socket.path %q: want an absolute path of at most 104 bytes" $path) }}
{{- end }}
{{- $dir := dir $path }}
{{- if has $dir (list "/" "/etc/extauthz" .Values.secretsDir .Values.projectedToken.directory) }}
{{- fail (printf "admin.socket.path %q: its directory, where the chart mounts an emptyDir, must be a directory of its own (such as /var/run/extauthz)" $path) }}
{{- end }}
{{- end }}
{{- $np := .Values.networkPolicy }}
{{- range $np.checkFrom }}
{{- if not (or .namespaceSelector .podSelector .ipBlock) }}
{{- fail "networkPolicy.checkFrom: every peer needs a namespaceSelector, a podSelector or an ipBlock" }}
{{- end }}
{{- end }}
{{- range $np.extraIngress }}
{{- if or (not .from) (not .ports) }}
{{- fail "networkPolicy.extraIngress: every rule names its ports and its from peers (a rule without them admits every port, or every source)" }}
{{- end }}
{{- end }}
{{- $ap := .Values.istio.authorizationPolicy }}
{{- if $ap.enabled }}
{{- if not $ap.principals }}
{{- fail "istio.authorizationPolicy.principals: name the principals of the proxies that call extauthz, e.g. cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account" }}
{{- end }}
{{- range $ap.principals }}
{{- if or (hasPrefix "spiffe://" .) (not (contains "/ns/" .)) }}
{{- fail (printf "istio.authorizationPolicy.principals: %q is not <trust domain>/ns/<namespace>/sa/<service account> (Istio's principals have no spiffe://)" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* clientCASource is the Secret or ConfigMap holding the client CA. */}}
{{- define "extauthz.clientCASource" -}}
{{- .Values.tls.clientCA.configMap | default .Values.tls.clientCA.existingSecret | default .Values.tls.existingSecret }}
{{- end }}

{{/* adminTLS is "true" when config.server.admin.tls serves the admin port over HTTPS. */}}
{{- define "extauthz.adminTLS" -}}
{{- $t := dig "server" "admin" "tls" dict .Values.config }}
{{- if or (get $t "cert") (get $t "key") (get $t "clientCA") }}true{{ end }}
{{- end }}

{{/* adminScheme is the admin port's scheme, for probes and scrapes. */}}
{{- define "extauthz.adminScheme" -}}
{{- ternary "HTTPS" "HTTP" (eq (include "extauthz.adminTLS" .) "true") }}
{{- end }}

{{/*
What only a restart puts into service (config.RestartOnly): the listening
addresses, the gRPC server's limits, HTTP mode's header limit, whether the
admin port and the check ports serve TLS (not their certificates, CAs or
allowed callers, which reload), the admin socket, the shutdown timeout, the
in-process tier's size, the log format and tracing. Its hash annotates the
pods; everything else extauthz reloads from the mounted ConfigMap and
Secrets by itself.
*/}}
{{- define "extauthz.restartOnly" -}}
{{- $c := include "extauthz.config" . | fromYaml }}
{{- $s := get $c "server" }}
{{- $admin := get $s "admin" | default dict }}
{{- $http := get $s "http" | default dict }}
{{- $server := dict "grpcAddress" (get $s "grpcAddress") "httpAddress" (get $s "httpAddress") "adminAddress" (get $s "adminAddress") }}
{{- $_ := set $server "grpc" (get $s "grpc") }}
{{- $_ := set $server "httpMaxHeaderBytes" (get $http "maxHeaderBytes") }}
{{- $_ := set $server "adminTLS" (eq (include "extauthz.adminTLS" .) "true") }}
{{- $_ := set $server "adminSocket" (get $admin "socket") }}
{{- $_ := set $server "tls" (hasKey $s "tls") }}
{{- $_ := set $server "shutdownTimeout" (get $s "shutdownTimeout") }}
{{- $store := get $c "store" | default dict }}
{{- $log := get $c "log" | default dict }}
{{- toYaml (dict "server" $server "maxEntries" (get $store "maxEntries") "logFormat" (get $log "format") "tracing" (get $c "tracing")) }}
{{- end }}

{{/* The operator's Secrets to mount under secretsDir, each once. */}}
{{- define "extauthz.secretNames" -}}
{{- $names := list }}
{{- range .Values.secretMounts }}{{ if not .namespace }}{{ $names = append $names .name }}{{ end }}{{ end }}
{{- with .Values.redis.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- with .Values.admin.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- if .Values.tls.enabled }}
{{- with .Values.tls.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- with .Values.tls.clientCA.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- end }}
{{- toYaml (uniq $names) }}
{{- end }}

{{/*
The Secrets of Middlewares' namespaces (secretMounts with a namespace), each
once: the copy secretName mounted at <secretsDir>/namespaces/<namespace>/<name>,
in a volume named after a hash of the two (a volume's name is a DNS label).
*/}}
{{- define "extauthz.namespacedSecrets" -}}
{{- $seen := dict }}
{{- $out := list }}
{{- range .Values.secretMounts }}
{{- if .namespace }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" .namespace) }}
{{- fail (printf "secretMounts: namespace %q is not a namespace (a DNS label)" .namespace) }}
{{- end }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$" (toString .name)) }}
{{- fail (printf "secretMounts: name %q is not a Secret's name" (toString .name)) }}
{{- end }}
{{- $key := printf "%s/%s" .namespace .name }}
{{- $secretName := .secretName | default (printf "%s.%s" .namespace .name) }}
{{- if has $secretName (include "extauthz.secretNames" $ | fromYamlArray) }}
{{- fail (printf "secretMounts: %s is mounted from %s, which is also mounted as extauthz's own Secret: the Middlewares of %s would read it; mount a copy of %s's own Secret" $key $secretName .namespace .namespace) }}
{{- end }}
{{- with get $seen $key }}
{{- if ne . $secretName }}
{{- fail (printf "secretMounts: %s is mounted twice, from %s and from %s" $key . $secretName) }}
{{- end }}
{{- else }}
{{- $_ := set $seen $key $secretName }}
{{- $out = append $out (dict "volume" (printf "ns-secret-%s" (sha256sum $key | trunc 16)) "secretName" $secretName "mountPath" (printf "%s/namespaces/%s/%s" $.Values.secretsDir .namespace .name)) }}
{{- end }}
{{- else if eq (toString .name) "namespaces" }}
{{- fail "secretMounts: a Secret named namespaces would be mounted where the Secrets of other namespaces are (<secretsDir>/namespaces): give it another name" }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* The check ports' names: grpc, and http with HTTP mode. */}}
{{- define "extauthz.checkPorts" -}}
{{- toYaml (ternary (list "grpc" "http") (list "grpc") .Values.httpMode.enabled) }}
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
