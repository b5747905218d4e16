{{/* Names, labels and the checks every render runs. */}}

{{- define "llmgateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name alone when it already contains the chart's. */}}
{{- define "llmgateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The headless Service's name; its DNS name is what client-side balancing resolves. */}}
{{- define "llmgateway.headlessName" -}}
{{- printf "%s-headless" (include "llmgateway.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{- define "llmgateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmgateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "llmgateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "llmgateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The gateway's pods; the migration Job's pods carry component: migrate, so no Service selects them. */}}
{{- define "llmgateway.podSelectorLabels" -}}
{{ include "llmgateway.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "llmgateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "llmgateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "llmgateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Seconds from SIGTERM to the end of the grace: what the pod must be given, and more. */}}
{{- define "llmgateway.drainSeconds" -}}
{{- addf .Values.drain.delaySeconds .Values.drain.graceSeconds -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: delay + grace + 15 unless set; less than delay + grace + 10
is refused, because the kubelet's SIGKILL would cut the drain or the process's last steps
(settling reservations, the ledger's last rows, closing the database).
*/}}
{{- define "llmgateway.terminationGracePeriodSeconds" -}}
{{- $drain := include "llmgateway.drainSeconds" . | float64 -}}
{{- $minimum := ceil (addf $drain 10) | int -}}
{{- $set := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $set -}}
{{- ceil (addf $drain 15) | int -}}
{{- else if lt (float64 $set) (float64 $minimum) -}}
{{- fail (printf "terminationGracePeriodSeconds is %v, but the drain takes drain.delaySeconds + drain.graceSeconds = %v s and the process needs about 10 s more to settle and close: set it to %d or more, or leave it unset (default: drain + 15)" $set $drain $minimum) -}}
{{- else -}}
{{- $set | int -}}
{{- end -}}
{{- end -}}

{{/*
The liveness probe's failureThreshold: enough periods to outlast the drain, during which
health is NOT_SERVING on purpose; a lower value would let the kubelet kill a draining pod.
*/}}
{{- define "llmgateway.livenessFailureThreshold" -}}
{{- $drain := include "llmgateway.drainSeconds" . | float64 -}}
{{- $period := .Values.probes.liveness.periodSeconds | float64 -}}
{{- $minimum := add1 (floor (divf $drain $period) | int) -}}
{{- $set := .Values.probes.liveness.failureThreshold -}}
{{- if kindIs "invalid" $set -}}
{{- $minimum -}}
{{- else if lt (int $set) $minimum -}}
{{- fail (printf "probes.liveness.failureThreshold is %v: %v x periodSeconds %v s must outlast the drain (%v s, during which health is NOT_SERVING): set it to %d or more, or leave it unset" $set $set $period $drain $minimum) -}}
{{- else -}}
{{- $set | int -}}
{{- end -}}
{{- end -}}

{{/* Checks of values that would drop calls or leak a secret; each failure says what to set. */}}
{{- define "llmgateway.checks" -}}
{{- $readiness := mulf .Values.probes.readiness.periodSeconds .Values.probes.readiness.failureThreshold -}}
{{- if lt (float64 .Values.drain.delaySeconds) $readiness -}}
{{- fail (printf "drain.delaySeconds is %v, shorter than the readiness probe takes to see NOT_SERVING (periodSeconds x failureThreshold = %v s): calls would still be routed to a pod that has stopped accepting them; raise drain.delaySeconds" .Values.drain.delaySeconds $readiness) -}}
{{- end -}}
{{- if not .Values.state.postgres.existingSecret -}}
{{- fail "state.postgres.existingSecret is empty: name a Secret whose key state.postgres.key holds the postgresql:// URL (replicas cannot share SQLite)" -}}
{{- end -}}
{{- with .Values.state.redis -}}
{{- if and .existingSecret .url -}}
{{- fail "state.redis.existingSecret and state.redis.url are both set: keep one (the Secret, if the URL has a password)" -}}
{{- end -}}
{{- if contains "@" .url -}}
{{- fail "state.redis.url carries credentials: put the URL in a Secret and name it in state.redis.existingSecret instead" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The pod and container security settings: the image's UID, nothing writable but /tmp. */}}
{{- define "llmgateway.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "llmgateway.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* LLMGATEWAY_DB, from the Secret only: the URL holds the password. */}}
{{- define "llmgateway.databaseEnv" -}}
- name: LLMGATEWAY_DB
  valueFrom:
    secretKeyRef:
      name: {{ .Values.state.postgres.existingSecret }}
      key: {{ .Values.state.postgres.key }}
{{- end -}}
