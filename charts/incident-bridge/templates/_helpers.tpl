{{/* vim: set filetype=mustache: */}}

{{/*
The chart's name, overridable so two charts with the same name do not collide.
*/}}
{{- define "incident-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified app name, truncated at 63 characters because Kubernetes name fields are DNS
labels. A release name that already contains the chart name is used as is.
*/}}
{{- define "incident-bridge.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "incident-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object carries.
*/}}
{{- define "incident-bridge.labels" -}}
helm.sh/chart: {{ include "incident-bridge.chart" . }}
{{ include "incident-bridge.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: incident-bridge
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the bridge's pods. They never change after the first install because a
StatefulSet's selector is immutable (and so are its claim templates, which carry them).
*/}}
{{- define "incident-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "incident-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the `helm test` pod: a different app.kubernetes.io/name so that the Service, the PDB
and the spread constraints, which select on the bridge's labels, never count it as a bridge.
*/}}
{{- define "incident-bridge.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "incident-bridge.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The StatefulSet's headless Service: the full name with a suffix, within a DNS label's 63
characters.
*/}}
{{- define "incident-bridge.headlessServiceName" -}}
{{- printf "%s-headless" (include "incident-bridge.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "incident-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "incident-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The bridge's image reference; a digest, when given, pins it regardless of the tag.
*/}}
{{- define "incident-bridge.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{/*
Fixed paths inside the container. The ConfigMap and every secret file share one projected
volume at configDir, so no mount is nested inside another read-only volume.
*/}}
{{- define "incident-bridge.configDir" -}}/etc/incident-bridge{{- end }}
{{- define "incident-bridge.configPath" -}}/etc/incident-bridge/config.toml{{- end }}
{{- define "incident-bridge.secretsDir" -}}/etc/incident-bridge/secrets{{- end }}
{{- define "incident-bridge.defaultDataDir" -}}/var/lib/incident-bridge{{- end }}

{{/* ------------------------------------------------------------------------------------------
  Configuration
------------------------------------------------------------------------------------------- */}}

{{/*
Builds the bridge configuration from .Values.config and stores it as .out.config (a dict):
  - numbers read from values files arrive as floats (8 becomes 8.0), which the bridge's integer
    fields refuse, so whole numbers are turned back into integers;
  - keys that hold secret values are refused: secrets go through .Values.secrets;
  - file paths of secrets the environment cannot carry are written in: *_files lists (e.g.
    sources.<name>.auth[0].token_files), and any secret inside a list of tables such as a
    source's `auth` entries, since an environment variable cannot address a list item.
Call as: include "incident-bridge.buildConfig" (dict "root" $ "out" $holder)
*/}}
{{- define "incident-bridge.buildConfig" -}}
{{- $root := .root -}}
{{- $cfg := deepCopy ($root.Values.config | default dict) -}}
{{- include "incident-bridge.normalizeNumbers" $cfg -}}
{{- include "incident-bridge.refuseInlineSecrets" (dict "node" $cfg "path" "config") -}}
{{- $lists := dict -}}
{{- $order := list -}}
{{- range $e := include "incident-bridge.secretEntries" $root | fromJson | dig "entries" list -}}
  {{- /* The same key set in config and in secrets would leave one of them silently unused. */ -}}
  {{- $at := dict -}}
  {{- include "incident-bridge.configAt" (dict "node" $cfg "segments" $e.segments "out" $at) -}}
  {{- if and $at.found (not (kindIs "invalid" $at.value)) -}}
    {{- fail (printf "config.%s and secrets.%s are both set, and the bridge would use only one of them: keep one" $e.path $e.path) -}}
  {{- end -}}
  {{- if $e.list -}}
    {{- if not (hasKey $lists $e.path) -}}
      {{- $_ := set $lists $e.path list -}}
      {{- $order = append $order $e -}}
    {{- end -}}
    {{- $_ := set $lists $e.path (append (get $lists $e.path) $e.mountPath) -}}
  {{- else if not $e.envName -}}
    {{- include "incident-bridge.setPath" (dict "node" $cfg "segments" $e.segments "value" $e.mountPath "path" $e.path) -}}
  {{- end -}}
{{- end -}}
{{- range $e := $order -}}
  {{- include "incident-bridge.setPath" (dict "node" $cfg "segments" $e.segments "value" (get $lists $e.path) "path" $e.path) -}}
{{- end -}}
{{- $_ := set .out "config" $cfg -}}
{{- end }}

{{/*
The configuration file's text.
*/}}
{{- define "incident-bridge.configToml" -}}
{{- $h := dict -}}
{{- include "incident-bridge.buildConfig" (dict "root" . "out" $h) -}}
{{- toToml $h.config -}}
{{- end }}

{{/*
Turns whole floats into int64, in place, through maps and lists at any depth.
*/}}
{{- define "incident-bridge.normalizeNumbers" -}}
{{- $m := . -}}
{{- range $k, $v := $m -}}
  {{- if kindIs "float64" $v -}}
    {{- if eq $v (floor $v) -}}
      {{- $_ := set $m $k (int64 $v) -}}
    {{- end -}}
  {{- else if kindIs "map" $v -}}
    {{- include "incident-bridge.normalizeNumbers" $v -}}
  {{- else if kindIs "slice" $v -}}
    {{- /* Lists cannot be changed in place: go through a dict keyed by position. */ -}}
    {{- $tmp := dict -}}
    {{- range $i, $item := $v -}}
      {{- $_ := set $tmp (printf "%08d" $i) $item -}}
    {{- end -}}
    {{- include "incident-bridge.normalizeNumbers" $tmp -}}
    {{- $out := list -}}
    {{- range $i, $item := $v -}}
      {{- $out = append $out (get $tmp (printf "%08d" $i)) -}}
    {{- end -}}
    {{- $_ := set $m $k $out -}}
  {{- end -}}
{{- end -}}
{{- end }}

{{/*
Fails on a config key that carries a secret value (token, password, nkey_seed, secrets, tokens,
passwords), at any depth, lists of tables included: the ConfigMap is readable by anyone who can
read the namespace's ConfigMaps.
*/}}
{{- define "incident-bridge.refuseInlineSecrets" -}}
{{- $path := .path -}}
{{- $fileKeys := dict "token" "token_file" "password" "password_file" "nkey_seed" "nkey_seed_file" "secrets" "secret_files" "tokens" "token_files" "passwords" "password_files" -}}
{{- range $k, $v := .node -}}
  {{- $here := printf "%s.%s" $path $k -}}
  {{- if and (hasKey $fileKeys $k) (not (empty $v)) -}}
    {{- fail (printf "%s holds a secret and would land in the ConfigMap: remove it and set secrets.%s.%s instead (value or existingSecret)" $here (trimPrefix "config." $path) (get $fileKeys $k)) -}}
  {{- end -}}
  {{- if kindIs "map" $v -}}
    {{- include "incident-bridge.refuseInlineSecrets" (dict "node" $v "path" $here) -}}
  {{- else if kindIs "slice" $v -}}
    {{- range $i, $item := $v -}}
      {{- if kindIs "map" $item -}}
        {{- include "incident-bridge.refuseInlineSecrets" (dict "node" $item "path" (printf "%s[%d]" $here $i)) -}}
      {{- end -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- end }}

{{/*
Looks up .segments under .node, where a segment "[i]" is the i-th item of a list; sets .out.found
and .out.value.
*/}}
{{- define "incident-bridge.configAt" -}}
{{- $node := .node -}}
{{- $found := true -}}
{{- range $seg := .segments -}}
  {{- if $found -}}
    {{- if hasPrefix "[" $seg -}}
      {{- $i := $seg | trimPrefix "[" | trimSuffix "]" | atoi -}}
      {{- if and (kindIs "slice" $node) (lt $i (len $node)) -}}
        {{- $node = index $node $i -}}
      {{- else -}}
        {{- $found = false -}}
      {{- end -}}
    {{- else if and (kindIs "map" $node) (hasKey $node $seg) -}}
      {{- $node = index $node $seg -}}
    {{- else -}}
      {{- $found = false -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- $_ := set .out "found" $found -}}
{{- $_ := set .out "value" (ternary $node nil $found) -}}
{{- end }}

{{/*
Sets .value at .segments under the dict .node, creating intermediate tables. A segment "[i]"
names the i-th table of a list, which must already be in the config: a secret there belongs to
that entry (e.g. secrets.sources.grafana.auth[0] to config.sources.grafana.auth[0]). .path is
the dotted key, for messages.
*/}}
{{- define "incident-bridge.setPath" -}}
{{- $ctx := . -}}
{{- $node := .node -}}
{{- $segments := .segments -}}
{{- $last := last $segments -}}
{{- range $n, $seg := initial $segments -}}
  {{- $next := index $segments (add1 $n) -}}
  {{- $here := slice $segments 0 (add1 $n) | join "." | replace ".[" "[" -}}
  {{- if hasPrefix "[" $seg -}}
    {{- $i := $seg | trimPrefix "[" | trimSuffix "]" | atoi -}}
    {{- if not (and (kindIs "slice" $node) (lt $i (len $node)) (kindIs "map" (index $node $i))) -}}
      {{- fail (printf "secrets.%s belongs to config.%s, which is not there: the secrets tree mirrors the config, so add that entry (e.g. its scheme) to config" $ctx.path $here) -}}
    {{- end -}}
    {{- $node = index $node $i -}}
  {{- else -}}
    {{- if hasPrefix "[" $next -}}
      {{- if not (kindIs "slice" (get $node $seg)) -}}
        {{- fail (printf "secrets.%s belongs to config.%s%s, which is not there: the secrets tree mirrors the config, so add that entry (e.g. its scheme) to config" $ctx.path $here $next) -}}
      {{- end -}}
    {{- else if not (kindIs "map" (get $node $seg)) -}}
      {{- $_ := set $node $seg dict -}}
    {{- end -}}
    {{- $node = get $node $seg -}}
  {{- end -}}
{{- end -}}
{{- $_ := set $node $last .value -}}
{{- end }}

{{/*
Milliseconds in a duration string of the kind the bridge reads ("30s", "1m30s", "500ms").
Call as: include "incident-bridge.durationMs" (dict "key" "config.server.shutdown_grace" "value" $v)
*/}}
{{- define "incident-bridge.durationMs" -}}
{{- $key := .key -}}
{{- $v := .value -}}
{{- if not (kindIs "string" $v) -}}
  {{- fail (printf "%s: %v is not a duration string like \"30s\"" $key $v) -}}
{{- end -}}
{{- $units := dict "ns" 0 "nsec" 0 "us" 0 "usec" 0 "ms" 1 "msec" 1 "s" 1000 "sec" 1000 "secs" 1000 "second" 1000 "seconds" 1000 "m" 60000 "min" 60000 "mins" 60000 "minute" 60000 "minutes" 60000 "h" 3600000 "hr" 3600000 "hrs" 3600000 "hour" 3600000 "hours" 3600000 "d" 86400000 "day" 86400000 "days" 86400000 -}}
{{- if not (regexMatch "^\\s*([0-9]+\\s*[a-z]+\\s*)+$" $v) -}}
  {{- fail (printf "%s: %q is not a duration like \"30s\" or \"1m30s\"" $key $v) -}}
{{- end -}}
{{- $total := 0 -}}
{{- range $part := regexFindAll "[0-9]+\\s*[a-z]+" $v -1 -}}
  {{- $n := regexFind "^[0-9]+" $part | atoi -}}
  {{- $unit := regexFind "[a-z]+$" $part -}}
  {{- if not (hasKey $units $unit) -}}
    {{- fail (printf "%s: unknown unit %q in %q" $key $unit $v) -}}
  {{- end -}}
  {{- $total = add $total (mul $n (get $units $unit)) -}}
{{- end -}}
{{- $total -}}
{{- end }}

{{/*
The HTTP port, taken from config.server.listen so the container port, probes and Service can
never disagree with what the bridge binds.
*/}}
{{- define "incident-bridge.httpPort" -}}
{{- $h := dict -}}
{{- include "incident-bridge.buildConfig" (dict "root" . "out" $h) -}}
{{- $listen := dig "server" "listen" "0.0.0.0:8080" $h.config | toString -}}
{{- $port := regexFind ":[0-9]+$" $listen | trimPrefix ":" -}}
{{- if not $port -}}
  {{- fail (printf "config.server.listen: %q has no port (expected e.g. 0.0.0.0:8080)" $listen) -}}
{{- end -}}
{{- $host := trimSuffix (printf ":%s" $port) $listen -}}
{{- if has $host (list "127.0.0.1" "localhost" "[::1]") -}}
  {{- fail (printf "config.server.listen: %q is reachable only from inside the container; the kubelet's probes and the Service need 0.0.0.0:%s (or [::]:%s)" $listen $port $port) -}}
{{- end -}}
{{- $port -}}
{{- end }}

{{/*
The store backend; the bridge's default is "embedded".
*/}}
{{- define "incident-bridge.storeBackend" -}}
{{- $h := dict -}}
{{- include "incident-bridge.buildConfig" (dict "root" . "out" $h) -}}
{{- dig "store" "backend" "embedded" $h.config -}}
{{- end }}

{{/*
Where the embedded store's volume is mounted: the directory of config.store.path. The path is
required with the embedded store: the bridge's default is relative to its working directory,
which sits on the read-only root filesystem.
*/}}
{{- define "incident-bridge.dataDir" -}}
{{- $h := dict -}}
{{- include "incident-bridge.buildConfig" (dict "root" . "out" $h) -}}
{{- $path := dig "store" "path" "" $h.config | toString -}}
{{- if not $path -}}
  {{- fail (printf "config.store.path is required with the embedded store: an absolute path on the store volume, e.g. %s/correlation.redb" (include "incident-bridge.defaultDataDir" .)) -}}
{{- end -}}
{{- if not (isAbs $path) -}}
  {{- fail (printf "config.store.path: %q must be absolute; the root filesystem is read-only, only the store volume is writable" $path) -}}
{{- end -}}
{{- $dir := dir $path -}}
{{- if or (eq $dir "/") (eq $dir "/tmp") (hasPrefix (include "incident-bridge.configDir" .) $dir) -}}
  {{- fail (printf "config.store.path: %q must be inside a directory of its own, e.g. %s/correlation.redb" $path (include "incident-bridge.defaultDataDir" .)) -}}
{{- end -}}
{{- $dir -}}
{{- end }}

{{/*
The most replicas that can run at once.
*/}}
{{- define "incident-bridge.maxReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- .Values.autoscaling.maxReplicas | int -}}
{{- else -}}
{{- .Values.replicaCount | int -}}
{{- end -}}
{{- end }}

{{/*
terminationGracePeriodSeconds: the bridge needs shutdown_delay (readiness already failing, still
serving) plus shutdown_grace (draining in-flight work) after SIGTERM; the kubelet's SIGKILL must
come later than that.
*/}}
{{- define "incident-bridge.terminationGracePeriodSeconds" -}}
{{- $h := dict -}}
{{- include "incident-bridge.buildConfig" (dict "root" . "out" $h) -}}
{{- $delay := include "incident-bridge.durationMs" (dict "key" "config.server.shutdown_delay" "value" (dig "server" "shutdown_delay" "0s" $h.config)) | int -}}
{{- $grace := include "incident-bridge.durationMs" (dict "key" "config.server.shutdown_grace" "value" (dig "server" "shutdown_grace" "20s" $h.config)) | int -}}
{{- $needed := div (add $delay $grace 999) 1000 -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $needed (.Values.terminationGraceMarginSeconds | int) -}}
{{- else -}}
{{- $set := .Values.terminationGracePeriodSeconds | int -}}
{{- if le $set $needed -}}
  {{- fail (printf "terminationGracePeriodSeconds is %d but config.server.shutdown_delay + shutdown_grace need %ds: the pod would be killed mid-drain. Raise it above %d, or leave it unset to derive it" $set $needed $needed) -}}
{{- end -}}
{{- $set -}}
{{- end -}}
{{- end }}

{{/*
Checks that span several values; included by the StatefulSet so they run on every render.
*/}}
{{- define "incident-bridge.validate" -}}
{{- $fullname := include "incident-bridge.fullname" . -}}
{{- if gt (len $fullname) 52 -}}
  {{- /* The StatefulSet controller labels each pod with controller-revision-hash =
       <name>-<10-character hash>, and a label value has at most 63 characters. */ -}}
  {{- fail (printf "the full name %q has %d characters; a StatefulSet name may have at most 52 (its pods' controller-revision-hash label adds 11): set fullnameOverride or a shorter release name" $fullname (len $fullname)) -}}
{{- end -}}
{{- $max := include "incident-bridge.maxReplicas" . | int -}}
{{- $backend := include "incident-bridge.storeBackend" . -}}
{{- if and (gt $max 1) (ne $backend "jetstream-kv") -}}
  {{- fail (printf "%s allows %d replicas, but config.store.backend is %q: more than one replica needs config.store.backend = \"jetstream-kv\", a KV bucket on the NATS servers of config.nats. The embedded store lives in one pod's volume, so replicas would not share incident correlation and would open duplicate incidents. Use jetstream-kv, or run one replica." (ternary "autoscaling.maxReplicas" "replicaCount" .Values.autoscaling.enabled) $max $backend) -}}
{{- end -}}
{{- if not (has $backend (list "embedded" "jetstream-kv")) -}}
  {{- fail (printf "config.store.backend: %q is not a store backend (expected \"embedded\" or \"jetstream-kv\")" $backend) -}}
{{- end -}}
{{- if eq $backend "jetstream-kv" -}}
  {{- $h := dict -}}
  {{- include "incident-bridge.buildConfig" (dict "root" . "out" $h) -}}
  {{- $nats := $h.config.nats -}}
  {{- if not (and (kindIs "map" $nats) $nats.url) -}}
    {{- fail (printf "config.store.backend is \"jetstream-kv\"%s, which needs config.nats with config.nats.url: the KV bucket lives on the NATS servers (e.g. config.nats.url: nats://nats.nats.svc:4222 for the official NATS chart in namespace nats). The bridge's default URL, nats://127.0.0.1:4222, would point at the pod itself" (ternary (printf " for %d replicas" $max) "" (gt $max 1))) -}}
  {{- end -}}
{{- end -}}
{{- $_ := include "incident-bridge.httpPort" . -}}
{{- $_ := include "incident-bridge.terminationGracePeriodSeconds" . -}}
{{- if eq $backend "embedded" -}}
  {{- $_ := include "incident-bridge.dataDir" . -}}
{{- end -}}
{{- end }}

{{/* ------------------------------------------------------------------------------------------
  Secrets
------------------------------------------------------------------------------------------- */}}

{{/*
Every configured secret file, as JSON {"entries": [...]}. .Values.secrets mirrors the config:
each leaf sits at the config key of a *_file (one file) or *_files (a list of files) setting,
and gives the content inline (`value`) or as a key of an existing Secret (`existingSecret`).
A list anywhere else mirrors a list of tables in the config (a source's `auth` entries): its
item i holds the secrets of the config's item i, e.g. secrets.sources.grafana.auth[0].secret_files
goes with config.sources.grafana.auth[0].
An entry has:
  segments, path   the config key (list, dotted; "[i]" segments are list items)
  where            path, with the item's position in a *_files list
  list             whether it is one item of a *_files list
  fileName         the file's name under secretsDir, also its key in the chart-made Secret
  mountPath        the file's full path in the container
  envName          INCIDENT_BRIDGE_..._FILE variable (one-file keys outside lists only; the
                   others' paths are written into config.toml)
  inline, value    a chart-made Secret holds it
  secretName, secretKey   where it comes from otherwise
*/}}
{{- define "incident-bridge.secretEntries" -}}
{{- $acc := dict "entries" list "seen" dict -}}
{{- include "incident-bridge.secretWalk" (dict "node" (.Values.secrets | default dict) "segments" list "acc" $acc "root" .) -}}
{{- toJson (dict "entries" $acc.entries) -}}
{{- end }}

{{- define "incident-bridge.secretWalk" -}}
{{- $ctx := . -}}
{{- range $key, $node := .node -}}
  {{- $segments := append $ctx.segments $key -}}
  {{- $path := join "." $segments | replace ".[" "[" -}}
  {{- if not (regexMatch "^[a-z0-9_-]+$" $key) -}}
    {{- fail (printf "secrets.%s: %q must be lower case letters, digits, '_' or '-', as environment overrides are lower-cased into config keys" $path $key) -}}
  {{- end -}}
  {{- if and (eq (len $segments) 3) (eq (first $segments) "sources") (hasSuffix "_files" $key) -}}
    {{- fail (printf "secrets.%s: a source's secrets belong to one of its auth entries, as in the config: secrets.sources.%s.auth[i].%s goes with config.sources.%s.auth[i]" $path (index $segments 1) $key (index $segments 1)) -}}
  {{- end -}}
  {{- if and (kindIs "slice" $node) (not (hasSuffix "_files" $key)) -}}
    {{- /* A list of tables in the config (e.g. a source's auth entries): item i holds the
         secrets of the config's item i. A null or empty item holds none. */ -}}
    {{- range $i, $item := $node -}}
      {{- if kindIs "map" $item -}}
        {{- include "incident-bridge.secretWalk" (dict "node" $item "segments" (append $segments (printf "[%d]" $i)) "acc" $ctx.acc "root" $ctx.root) -}}
      {{- else if not (kindIs "invalid" $item) -}}
        {{- fail (printf "secrets.%s[%d]: expected the secrets of config.%s[%d] as a table (e.g. {token_files: [...]}), or null; a list of secret files belongs at a *_files key" $path $i $path $i) -}}
      {{- end -}}
    {{- end -}}
  {{- else if kindIs "slice" $node -}}
    {{- $i := 0 -}}
    {{- range $item := $node -}}
      {{- $e := include "incident-bridge.secretLeaf" (dict "leaf" $item "segments" $segments "index" $i "root" $ctx.root) | fromJson -}}
      {{- if $e.active -}}
        {{- include "incident-bridge.secretAdd" (dict "acc" $ctx.acc "entry" $e) -}}
        {{- $i = add1 $i -}}
      {{- end -}}
    {{- end -}}
  {{- else if and (kindIs "map" $node) (or (hasKey $node "value") (hasKey $node "existingSecret")) -}}
    {{- if not (hasSuffix "_file" $key) -}}
      {{- fail (printf "secrets.%s: a secret belongs at a *_file config key (e.g. secrets.scwm.token_file), which receives the path of the mounted file" $path) -}}
    {{- end -}}
    {{- $e := include "incident-bridge.secretLeaf" (dict "leaf" $node "segments" $segments "index" -1 "root" $ctx.root) | fromJson -}}
    {{- if $e.active -}}
      {{- include "incident-bridge.secretAdd" (dict "acc" $ctx.acc "entry" $e) -}}
    {{- end -}}
  {{- else if kindIs "map" $node -}}
    {{- include "incident-bridge.secretWalk" (dict "node" $node "segments" $segments "acc" $ctx.acc "root" $ctx.root) -}}
  {{- else if not (kindIs "invalid" $node) -}}
    {{- fail (printf "secrets.%s: expected {value: ...} or {existingSecret: {name: ..., key: ...}}, got %v" $path $node) -}}
  {{- end -}}
{{- end -}}
{{- end }}

{{/*
One leaf as a JSON entry (see secretEntries); .index is -1 outside a list.
*/}}
{{- define "incident-bridge.secretLeaf" -}}
{{- $segments := .segments -}}
{{- $path := join "." $segments | replace ".[" "[" -}}
{{- $where := ternary $path (printf "%s[%d]" $path (int .index)) (lt (int .index) 0) -}}
{{- $leaf := .leaf | default dict -}}
{{- if not (kindIs "map" $leaf) -}}
  {{- fail (printf "secrets.%s: expected {value: ...} or {existingSecret: {name: ..., key: ...}}" $where) -}}
{{- end -}}
{{- $value := $leaf.value | default "" | toString -}}
{{- $existing := $leaf.existingSecret | default dict -}}
{{- $name := $existing.name | default "" -}}
{{- $key := $existing.key | default "" -}}
{{- $last := last $segments | trimSuffix "_files" | trimSuffix "_file" -}}
{{- $base := append (initial $segments) $last | join "-" | replace "_" "-" | replace "[" "" | replace "]" "" -}}
{{- $fileName := ternary $base (printf "%s-%d" $base (int .index)) (lt (int .index) 0) -}}
{{- $e := dict "segments" $segments "path" $path "where" $where "list" (ge (int .index) 0) "fileName" $fileName "mountPath" (printf "%s/%s" (include "incident-bridge.secretsDir" .root) $fileName) "active" true -}}
{{- /* An environment variable can name a table's key, not a list item or a list: those paths are
     written into config.toml instead. */ -}}
{{- if and (lt (int .index) 0) (not (contains "[" $path)) -}}
  {{- $_ := set $e "envName" (printf "INCIDENT_BRIDGE_%s" (join "__" $segments | upper)) -}}
{{- end -}}
{{- if $value -}}
  {{- /* Inline wins, so `--set secrets.X.value=...` works without clearing a default reference. */ -}}
  {{- $_ := set $e "inline" true -}}
  {{- $_ := set $e "value" $value -}}
{{- else if $name -}}
  {{- if not $key -}}
    {{- fail (printf "secrets.%s.existingSecret: name %q needs a key (the entry in that Secret holding the value)" $where $name) -}}
  {{- end -}}
  {{- $_ := set $e "inline" false -}}
  {{- $_ := set $e "secretName" $name -}}
  {{- $_ := set $e "secretKey" $key -}}
{{- else -}}
  {{- $_ := set $e "active" false -}}
{{- end -}}
{{- toJson $e -}}
{{- end }}

{{- define "incident-bridge.secretAdd" -}}
{{- $e := .entry -}}
{{- if hasKey .acc.seen $e.fileName -}}
  {{- fail (printf "secrets.%s and secrets.%s would both be mounted as %s; rename one" (get .acc.seen $e.fileName) $e.where $e.fileName) -}}
{{- end -}}
{{- $_ := set .acc.seen $e.fileName $e.where -}}
{{- $_ := set .acc "entries" (append .acc.entries $e) -}}
{{- end }}

{{/*
Whether the chart makes a Secret (any inline value).
*/}}
{{- define "incident-bridge.hasInlineSecrets" -}}
{{- range $e := include "incident-bridge.secretEntries" . | fromJson | dig "entries" list -}}
{{- if $e.inline }}true{{ end -}}
{{- end -}}
{{- end }}

{{/* ------------------------------------------------------------------------------------------
  Exposure
------------------------------------------------------------------------------------------- */}}

{{/*
The authentication schemes of a source in the built config, as JSON {"schemes": [...]};
"none" does not count as authentication.
Call as: include "incident-bridge.sourceSchemes" (dict "config" $cfg "name" "native")
*/}}
{{- define "incident-bridge.sourceSchemes" -}}
{{- $sources := .config.sources | default dict -}}
{{- $src := (kindIs "map" $sources | ternary $sources dict) | dig .name dict | default dict -}}
{{- $schemes := list -}}
{{- range $a := (kindIs "map" $src | ternary $src dict).auth | default list -}}
  {{- $scheme := (kindIs "map" $a | ternary $a dict).scheme | default "" -}}
  {{- if and $scheme (ne $scheme "none") -}}
    {{- $schemes = append $schemes $scheme -}}
  {{- end -}}
{{- end -}}
{{- toJson (dict "schemes" $schemes) -}}
{{- end }}

{{/*
Whether an Ingress path routes requests for `target` (/v1/incidents, the native commands; /ui,
the console), as the Ingress API matches: Exact a whole path, Prefix whole path elements, and
ImplementationSpecific is taken as a plain string prefix, the widest reading.
Call as: include "incident-bridge.pathReaches" (dict "entry" $pathEntry "target" "/ui")  ->  "true" or ""
*/}}
{{- define "incident-bridge.pathReaches" -}}
{{- $target := .target -}}
{{- $p := .entry.path | default "/" | trimSuffix "/" -}}
{{- $type := .entry.pathType | default "Prefix" -}}
{{- if or (eq $p $target) (hasPrefix (printf "%s/" $target) $p) -}}
true
{{- else if eq $type "Prefix" -}}
{{- if or (eq $p "") (hasPrefix (printf "%s/" $p) $target) }}true{{ end -}}
{{- else if eq $type "ImplementationSpecific" -}}
{{- if hasPrefix $p $target }}true{{ end -}}
{{- end -}}
{{- end }}

{{/*
The Ingress's paths: ingress.paths, plus /v1/incidents with ingress.exposeNativeCommands. Fails
when one of them reaches the native commands and config.sources.native has no authentication:
anyone who reaches the Ingress could then open and close incidents.
Returns JSON {"paths": [{path, pathType}, ...]}.
*/}}
{{- define "incident-bridge.ingressPaths" -}}
{{- $paths := list -}}
{{- range $p := .Values.ingress.paths -}}
  {{- $paths = append $paths (dict "path" $p.path "pathType" $p.pathType) -}}
{{- end -}}
{{- if .Values.ingress.exposeNativeCommands -}}
  {{- $listed := false -}}
  {{- range $p := $paths -}}
    {{- if eq (trimSuffix "/" $p.path) "/v1/incidents" }}{{ $listed = true }}{{ end -}}
  {{- end -}}
  {{- if not $listed -}}
    {{- $paths = append $paths (dict "path" "/v1/incidents" "pathType" "Prefix") -}}
  {{- end -}}
{{- end -}}
{{- if not $paths -}}
  {{- fail "ingress.enabled is true but ingress.paths is empty and ingress.exposeNativeCommands false: there is nothing to route (the usual path is /webhooks)" -}}
{{- end -}}
{{- $h := dict -}}
{{- include "incident-bridge.buildConfig" (dict "root" . "out" $h) -}}
{{- $auth := include "incident-bridge.sourceSchemes" (dict "config" $h.config "name" "native") | fromJson -}}
{{- if not $auth.schemes -}}
  {{- range $p := $paths -}}
    {{- if include "incident-bridge.pathReaches" (dict "entry" $p "target" "/v1/incidents") -}}
      {{- fail (printf "ingress: the path %s (%s) routes POST /v1/incidents, the native commands, but config.sources.native has no auth entries, so anyone who reaches the Ingress could open and close incidents. Add authentication (config.sources.native: {kind: native, auth: [{scheme: bearer}]} with the token under secrets.sources.native.auth[0].token_files), or route only /webhooks (the default ingress.paths, ingress.exposeNativeCommands: false)" $p.path $p.pathType) -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- range $p := $paths -}}
  {{- if include "incident-bridge.pathReaches" (dict "entry" $p "target" "/ui") -}}
    {{- fail (printf "ingress: the path %s (%s) routes /ui, the console, which is reached only through the Service (kubectl port-forward svc/<release> 8080, then http://127.0.0.1:8080/ui): route /webhooks (and /v1/incidents) instead" $p.path $p.pathType) -}}
  {{- end -}}
{{- end -}}
{{- toJson (dict "paths" $paths) -}}
{{- end }}

{{/* ------------------------------------------------------------------------------------------
  Alert rules
------------------------------------------------------------------------------------------- */}}

{{/*
The PromQL label matchers that pick this release's series.
*/}}
{{- define "incident-bridge.alertSelector" -}}
{{- .Values.alertRules.selector | default (printf "job=%q,namespace=%q" (include "incident-bridge.fullname" .) .Release.Namespace) -}}
{{- end }}

{{/*
The labels of one alert: its severity, then alertRules.labels.
Call as: include "incident-bridge.alertLabels" (dict "root" $ "alert" "IncidentBridgeDown")
*/}}
{{- define "incident-bridge.alertLabels" -}}
{{- $r := .root.Values.alertRules -}}
{{- $severity := get ($r.severity | default dict) .alert | default "warning" -}}
{{- toYaml (merge (dict "severity" $severity) ($r.labels | default dict)) -}}
{{- end }}

{{/*
The `for` of one alert. Every alert has one, so a single bad scrape or a restart never pages.
*/}}
{{- define "incident-bridge.alertFor" -}}
{{- $for := get (.root.Values.alertRules.for | default dict) .alert -}}
{{- if not $for -}}
  {{- fail (printf "alertRules.for.%s is empty: every alert needs a `for` (e.g. 5m)" .alert) -}}
{{- end -}}
{{- $for -}}
{{- end }}

{{/*
The runbook_url of one alert: alertRules.runbookBaseUrl#runbook-<alert name lower-cased>, the
anchors of README.md's Runbook section.
*/}}
{{- define "incident-bridge.runbookUrl" -}}
{{- printf "%s#runbook-%s" .root.Values.alertRules.runbookBaseUrl (lower .alert) -}}
{{- end }}

{{/*
The rule file: files/alert-rules.yaml, rendered with alertRules' settings.
*/}}
{{- define "incident-bridge.alertRulesFile" -}}
{{- tpl (.Files.Get "files/alert-rules.yaml") . -}}
{{- end }}

{{/*
The namespace of an object that may live elsewhere (where Prometheus or Grafana looks).
Call as: include "incident-bridge.namespace" (dict "root" $ "override" .Values.x.namespaceOverride)
*/}}
{{- define "incident-bridge.namespace" -}}
{{- .override | default .root.Release.Namespace -}}
{{- end }}
