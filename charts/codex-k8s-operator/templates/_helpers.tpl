{{/*
Names are fixed (one install per cluster), the same as in manifests/base.
*/}}
{{- define "codex.partOf" -}}codex-k8s-operator{{- end -}}

{{/* Selector labels of a component: stable across upgrades, shared with manifests/base. */}}
{{- define "codex.selectorLabels" -}}
app.kubernetes.io/part-of: {{ include "codex.partOf" . }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object; pass (dict "root" $ "component" "operator"), component optional. */}}
{{- define "codex.labels" -}}
app.kubernetes.io/part-of: {{ include "codex.partOf" . }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* An image reference from images.<name>: (dict "root" $ "image" .Values.images.operator). */}}
{{- define "codex.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if .image.registry -}}
{{ .image.registry }}/{{ .image.repository }}:{{ $tag }}
{{- else -}}
{{ .image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{- define "codex.gatewayServiceAccount" -}}
system:serviceaccount:{{ .Values.namespaces.system }}:codex-gateway
{{- end -}}

{{- define "codex.operatorServiceAccount" -}}
system:serviceaccount:{{ .Values.namespaces.system }}:codex-operator
{{- end -}}

{{/* The pod-level security context of the operator and the gateway (image user 10001). */}}
{{- define "codex.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container security context of every container of the chart: PSS restricted and more. */}}
{{- define "codex.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The TOML configuration: values.config plus the [kubernetes] keys the chart
derives from other values. A derived key set in values.config to something
else is an error, not silently overridden.
*/}}
{{- define "codex.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $kube := get $config "kubernetes" | default dict -}}
{{- $endpoint := get $kube "model_endpoint" | default dict -}}
{{- $runner := .Values.images.runner -}}
{{- $derived := dict
      "sessions_namespace" .Values.namespaces.sessions
      "operator_namespace" .Values.namespaces.system
      "runner_image" (include "codex.image" (dict "root" . "image" $runner))
      "runner_image_pull_policy" $runner.pullPolicy
      "runner_service_account" "codex-runner"
      "runner_priority_class" .Values.runnerPriorityClass.name -}}
{{- $derivedEndpoint := dict
      "api_key_secret_name" .Values.modelApiKey.existingSecret
      "api_key_secret_key" .Values.modelApiKey.key -}}
{{- range $key, $value := $derived }}
{{- if and (hasKey $kube $key) (ne (toString (get $kube $key)) (toString $value)) }}
{{- fail (printf "config.kubernetes.%s is set by the chart (%s); remove it from config" $key (toString $value)) }}
{{- end }}
{{- $_ := set $kube $key $value }}
{{- end }}
{{- range $key, $value := $derivedEndpoint }}
{{- if and (hasKey $endpoint $key) (ne (toString (get $endpoint $key)) (toString $value)) }}
{{- fail (printf "config.kubernetes.model_endpoint.%s is set by the chart from modelApiKey (%s); remove it from config" $key (toString $value)) }}
{{- end }}
{{- $_ := set $endpoint $key $value }}
{{- end }}
{{- $_ := set $kube "model_endpoint" $endpoint -}}
{{- if include "codex.warmRunners" . }}
{{- $warm := get $kube "warm_runners" | default dict -}}
{{- $derivedWarm := dict
      "operator_namespace_labels" (dict "kubernetes.io/metadata.name" .Values.namespaces.system)
      "operator_pod_labels" (include "codex.selectorLabels" (dict "component" "operator") | fromYaml)
      "signing_key_file" (include "codex.agentKeyFile" .) -}}
{{- range $key, $value := $derivedWarm }}
{{- if and (hasKey $warm $key) (ne (toJson (get $warm $key)) (toJson $value)) }}
{{- fail (printf "config.kubernetes.warm_runners.%s is set by the chart (%s); remove it from config" $key (toJson $value)) }}
{{- end }}
{{- $_ := set $warm $key $value }}
{{- end }}
{{- $_ := set $kube "warm_runners" $warm -}}
{{- end }}
{{- $_ := set $config "kubernetes" $kube -}}
{{- if .Values.modelProxy.enabled }}
{{- $proxy := get $config "model_proxy" | default dict -}}
{{- $derivedProxy := dict
      "url" (printf "http://codex-model-proxy.%s.svc:%d" .Values.namespaces.system (int .Values.modelProxy.port))
      "namespace_labels" (dict "kubernetes.io/metadata.name" .Values.namespaces.system)
      "pod_labels" (include "codex.selectorLabels" (dict "component" "model-proxy") | fromYaml) -}}
{{- range $key, $value := $derivedProxy }}
{{- if and (hasKey $proxy $key) (ne (toJson (get $proxy $key)) (toJson $value)) }}
{{- fail (printf "config.model_proxy.%s is set by the chart from modelProxy (%s); remove it from config" $key (toJson $value)) }}
{{- end }}
{{- $_ := set $proxy $key $value }}
{{- end }}
{{- $_ := set $config "model_proxy" $proxy -}}
{{- end }}
# Rendered by the codex-k8s-operator chart from values.config; validate with
#   codex-operator config validate codex-mcp.toml

{{ include "codex.toml.table" (dict "path" (list) "table" $config) | trim }}
{{- end -}}

{{/*
A TOML table: (dict "path" (list "a" "b") "table" $map). Scalars and inline
arrays first, then sub-tables ([a.b.c]) and arrays of tables ([[a.b.c]]).
Keys are sorted; null values are left out (TOML has no null).
*/}}
{{- define "codex.toml.table" -}}
{{- $path := .path -}}
{{- $table := .table -}}
{{- range $key := keys $table | sortAlpha }}
{{- $value := get $table $key }}
{{- if and (not (kindIs "invalid" $value)) (not (kindIs "map" $value)) (not (include "codex.toml.isTableArray" $value)) }}
{{ include "codex.toml.key" $key }} = {{ include "codex.toml.value" $value }}
{{- end }}
{{- end }}
{{- range $key := keys $table | sortAlpha }}
{{- $value := get $table $key }}
{{- $sub := append $path $key }}
{{- if kindIs "map" $value }}

[{{ include "codex.toml.path" $sub }}]
{{- include "codex.toml.table" (dict "path" $sub "table" $value) }}
{{- else if include "codex.toml.isTableArray" $value }}
{{- range $item := $value }}

[[{{ include "codex.toml.path" $sub }}]]
{{- include "codex.toml.table" (dict "path" $sub "table" $item) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* "true" for a non-empty list whose items are all dicts (an array of tables). */}}
{{- define "codex.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) -}}
{{- $all := true -}}
{{- range . }}{{ if not (kindIs "map" .) }}{{ $all = false }}{{ end }}{{ end -}}
{{- if $all }}true{{ end -}}
{{- end -}}
{{- end -}}

{{- define "codex.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "codex.toml.path" -}}
{{- $parts := list -}}
{{- range . }}{{ $parts = append $parts (include "codex.toml.key" .) }}{{ end -}}
{{- join "." $parts -}}
{{- end -}}

{{/*
A TOML value. Helm reads numbers from values files as floats, so a whole
number is written as an integer (the configuration accepts integers for
floats, never the reverse); strings are JSON-escaped, which is valid TOML.
*/}}
{{- define "codex.toml.value" -}}
{{- if kindIs "string" . -}}
{{ toJson . }}
{{- else if kindIs "bool" . -}}
{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ toJson . }}{{ end -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) -}}
{{ . }}
{{- else if kindIs "slice" . -}}
{{- $items := list -}}
{{- range . }}{{ $items = append $items (include "codex.toml.value" .) }}{{ end -}}
[{{ join ", " $items }}]
{{- else if kindIs "map" . -}}
{{- $items := list -}}
{{- $map := . -}}
{{- range $key := keys $map | sortAlpha }}{{ $items = append $items (printf "%s = %s" (include "codex.toml.key" $key) (include "codex.toml.value" (get $map $key))) }}{{ end -}}
{ {{- join ", " $items -}} }
{{- else -}}
{{ fail (printf "config: cannot write %v (%s) as TOML" . (kindOf .)) }}
{{- end -}}
{{- end -}}

{{/* The Secret holding the in-chart Redis's password: generated (redis.yaml) or redis.auth.existingSecret. */}}
{{- define "codex.redisAuthSecret" -}}
{{- .Values.redis.auth.existingSecret | default "codex-redis-auth" -}}
{{- end -}}

{{- define "codex.redisAuthKey" -}}
{{- if .Values.redis.auth.existingSecret -}}{{ .Values.redis.auth.existingSecretKey }}{{- else -}}password{{- end -}}
{{- end -}}

{{/* The in-chart Redis's password as an environment variable `name` of a container, from the Secret. */}}
{{- define "codex.redisPasswordEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "codex.redisAuthSecret" .root }}
      key: {{ include "codex.redisAuthKey" .root }}
{{- end -}}

{{/*
The Redis URL environment variable of the gateway. For the in-chart Redis the
password comes from its Secret into REDIS_PASSWORD, and the kubelet expands
$(REDIS_PASSWORD) into REDIS_URL when it starts the container: the pod spec
holds only the reference.
*/}}
{{- define "codex.redisEnv" -}}
{{- if .Values.redis.enabled }}
{{ include "codex.redisPasswordEnv" (dict "root" . "name" "REDIS_PASSWORD") }}
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@codex-redis.%s.svc:6379/0" .Values.namespaces.system | quote }}
{{- else if .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.externalUrl }}
- name: REDIS_URL
  value: {{ .Values.redis.externalUrl | quote }}
{{- end }}
{{- end -}}

{{/* Checks across values that the schema cannot express with clear messages. */}}
{{- define "codex.validate" -}}
{{- if and (gt (int .Values.gateway.replicas) 1) (not (include "codex.redisEnv" .)) }}
{{- fail "gateway.replicas > 1 needs Redis (redis.enabled, redis.externalUrl or redis.existingSecret): the replicas share MCP sessions, rate limits and budgets through it" }}
{{- end }}
{{- if and .Values.redis.enabled (or .Values.redis.externalUrl .Values.redis.existingSecret) }}
{{- fail "redis.externalUrl / redis.existingSecret need redis.enabled=false (the in-chart Redis would be unused)" }}
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.redis.externalUrl .Values.redis.existingSecret }}
{{- fail "set only one of redis.externalUrl and redis.existingSecret" }}
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.redis.auth.existingSecret }}
{{- fail "redis.auth is the password of the in-chart Redis (redis.enabled=true); an external Redis's password goes into its URL (redis.existingSecret)" }}
{{- end }}
{{- with .Values.gateway.tokenReview }}
{{- if and .enabled (not .audiences) (not .anyAudience) }}
{{- fail "gateway.tokenReview.enabled needs gateway.tokenReview.audiences, e.g. [codex-gateway] (clients mint tokens with `kubectl create token NAME --audience codex-gateway`): without an audience every ServiceAccount token of the cluster would be accepted. If that is really wanted, set gateway.tokenReview.anyAudience=true (dangerous)" }}
{{- end }}
{{- if and .audiences .anyAudience }}
{{- fail "set gateway.tokenReview.audiences or gateway.tokenReview.anyAudience, not both" }}
{{- end }}
{{- if and .anyAudience (not .enabled) }}
{{- fail "gateway.tokenReview.anyAudience needs gateway.tokenReview.enabled" }}
{{- end }}
{{- end }}
{{- if and .Values.webhook.enabled .Values.webhook.certificate.existingSecret (not .Values.webhook.certificate.caBundle) }}
{{- fail "webhook.certificate.existingSecret needs webhook.certificate.caBundle (base64 PEM of the CA that signed it)" }}
{{- end }}
{{- if and .Values.webhook.enabled .Values.webhook.certificate.caBundle (not .Values.webhook.certificate.existingSecret) }}
{{- fail "webhook.certificate.caBundle is only used with webhook.certificate.existingSecret" }}
{{- end }}
{{- if and (ne .Values.gateway.service.type "NodePort") (ne .Values.gateway.service.type "LoadBalancer") (not (kindIs "invalid" .Values.gateway.service.nodePort)) }}
{{- fail "gateway.service.nodePort needs gateway.service.type NodePort or LoadBalancer" }}
{{- end }}
{{- if eq .Values.namespaces.system .Values.namespaces.sessions }}
{{- fail "namespaces.system and namespaces.sessions must differ (runner pods must not share a namespace with the operator's and gateway's credentials)" }}
{{- end }}
{{- end -}}

{{/* NetworkPolicy rules shared by the operator and the gateway. */}}
{{- define "codex.np.dns" -}}
# DNS, in kube-system.
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end }}
{{- define "codex.np.apiServer" -}}
# The Kubernetes API server.
- ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- with .cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- end }}
{{- define "codex.np.redis" -}}
{{- if .Values.redis.enabled }}
# The in-chart Redis.
- to:
    - podSelector:
        matchLabels:
          {{- include "codex.selectorLabels" (dict "component" "redis") | nindent 10 }}
  ports:
    - {protocol: TCP, port: 6379}
{{- else if or .Values.redis.externalUrl .Values.redis.existingSecret }}
# The external Redis.
- ports:
    {{- range .Values.networkPolicy.externalRedis.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- with .Values.networkPolicy.externalRedis.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
{{- define "codex.np.metrics" -}}
# Prometheus.
- ports:
    - {protocol: TCP, port: 9090}
  {{- with . }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The rollout, spread and disruption rules of a replicated component (operator, gateway):
(dict "root" $ "component" "gateway" "values" .Values.gateway). */}}
{{- define "codex.rollingUpdate" -}}
strategy:
  type: RollingUpdate
  rollingUpdate:
    maxUnavailable: 0
    maxSurge: 1
{{- end -}}

{{- define "codex.affinity" -}}
affinity:
  {{- if .values.affinity }}
  {{- toYaml .values.affinity | nindent 2 }}
  {{- else }}
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "codex.selectorLabels" (dict "component" .component) | nindent 14 }}
  {{- end }}
{{- end -}}

{{- define "codex.podDisruptionBudget" -}}
{{- if and .values.podDisruptionBudget.enabled (gt (int .values.replicas) 1) }}
# A voluntary disruption (a node drain) keeps one {{ .component }} running.
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: codex-{{ .component }}
  namespace: {{ .root.Values.namespaces.system }}
  labels:
    {{- include "codex.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      {{- include "codex.selectorLabels" (dict "component" .component) | nindent 6 }}
---
{{- end }}
{{- end -}}

{{/* The model proxy's signing key: generated (model-proxy.yaml) or modelProxy.signingKey.existingSecret. */}}
{{/* "true" when warm runners are on (config.kubernetes.warm_runners.idle_seconds > 0). */}}
{{- define "codex.warmRunners" -}}
{{- $warm := get (get (.Values.config | default dict) "kubernetes" | default dict) "warm_runners" | default dict -}}
{{- if gt (int (get $warm "idle_seconds" | default 0)) 0 -}}true{{- end -}}
{{- end -}}

{{- define "codex.agentKeySecret" -}}
{{- .Values.warmRunners.signingKey.existingSecret | default "codex-agent-signing-key" -}}
{{- end -}}

{{- define "codex.agentKeyKey" -}}
{{- if .Values.warmRunners.signingKey.existingSecret -}}{{ .Values.warmRunners.signingKey.existingSecretKey }}{{- else -}}private.pem{{- end -}}
{{- end -}}

{{- define "codex.agentKeyFile" -}}
/etc/codex-agent-key/{{ include "codex.agentKeyKey" . }}
{{- end -}}

{{- define "codex.signingKeySecret" -}}
{{- .Values.modelProxy.signingKey.existingSecret | default "codex-model-proxy-signing-key" -}}
{{- end -}}

{{- define "codex.signingKeyKey" -}}
{{- if .Values.modelProxy.signingKey.existingSecret -}}{{ .Values.modelProxy.signingKey.existingSecretKey }}{{- else -}}signing-key{{- end -}}
{{- end -}}

{{/* The signing key as the environment variable config.model_proxy.signing_key_env (operator and proxy). */}}
{{- define "codex.signingKeyEnv" -}}
{{- $proxyConfig := get .Values.config "model_proxy" | default dict -}}
- name: {{ get $proxyConfig "signing_key_env" | default "CODEX_PROXY_SIGNING_KEY" }}
  valueFrom:
    secretKeyRef:
      name: {{ include "codex.signingKeySecret" . }}
      key: {{ include "codex.signingKeyKey" . }}
{{- end -}}

{{/*
Every model endpoint the install calls: [kubernetes.model_endpoint] (its
Secret from modelApiKey) and each [[kubernetes.wall_bounce_providers]], with
the configuration's defaults for what values.config leaves out (the same as
codex_api.config; tests/unit/test_chart_render.py compares them). A list of
dicts as JSON: env, secret, key, ports, cidrs, namespaceLabels, podLabels.
*/}}
{{- define "codex.modelEndpoints" -}}
{{- $kube := get .Values.config "kubernetes" | default dict -}}
{{- $main := get $kube "model_endpoint" | default dict -}}
{{- $endpoints := list (dict
      "env" (get $main "api_key_env" | default "CODEX_MODEL_API_KEY")
      "secret" .Values.modelApiKey.existingSecret
      "key" .Values.modelApiKey.key
      "ports" (get $main "egress_ports" | default (list 443))
      "cidrs" (get $main "egress_cidrs" | default list)
      "namespaceLabels" (get $main "in_cluster_namespace_labels" | default dict)
      "podLabels" (get $main "in_cluster_pod_labels" | default dict)) -}}
{{- range (get $kube "wall_bounce_providers" | default list) }}
{{- $endpoints = append $endpoints (dict
      "env" (get . "api_key_env" | default (printf "CODEX_WB_%s_API_KEY" (upper (replace "-" "_" .provider_id))))
      "secret" (get . "api_key_secret_name" | default "codex-model-api-key")
      "key" (get . "api_key_secret_key" | default "api-key")
      "ports" (get . "egress_ports" | default (list 443))
      "cidrs" (get . "egress_cidrs" | default list)
      "namespaceLabels" (get . "in_cluster_namespace_labels" | default dict)
      "podLabels" (get . "in_cluster_pod_labels" | default dict)) }}
{{- end }}
{{- toJson $endpoints -}}
{{- end -}}

{{/* The model proxy's egress to one model endpoint: its CIDRs, its pods, or else the public internet
(never private, link-local or metadata addresses: codex_operator.netpol_builder's list). */}}
{{- define "codex.np.modelEndpoint" -}}
{{- $ports := .ports -}}
{{- $rules := list -}}
{{- if .cidrs }}
- to:
    {{- range .cidrs }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  ports:
    {{- range $ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- if or .namespaceLabels .podLabels }}
- to:
    - {{- with .namespaceLabels }}
      namespaceSelector:
        matchLabels:
          {{- toYaml . | nindent 10 }}
      {{- end }}
      {{- with .podLabels }}
      podSelector:
        matchLabels:
          {{- toYaml . | nindent 10 }}
      {{- end }}
  ports:
    {{- range $ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- if not (or .cidrs .namespaceLabels .podLabels) }}
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except: [0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 169.254.169.254/32, 172.16.0.0/12, 192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 224.0.0.0/4, 240.0.0.0/4]
    - ipBlock:
        cidr: ::/0
        except: ["::1/128", "fc00::/7", "fd00:ec2::254/128", "fe80::/10", "ff00::/8"]
  ports:
    {{- range $ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- end -}}
