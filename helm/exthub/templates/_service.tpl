{{/*
One Python service (catalog, execution or agent): ServiceAccount (workload identity), Deployment, Service.
Called with (dict "root" $ "component" "<name>" "grpcService" "<full gRPC service name>").
*/}}
{{- define "exthub.pythonService" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $cfg := index $root.Values $component -}}
{{- $ctx := dict "root" $root "component" $component -}}
{{- $name := include "exthub.name" $ctx -}}
{{- $envSecrets := include "exthub.envSecrets" $ctx | fromJson -}}
{{- $tenant := $root.Values.auth.tenantId -}}
{{- $authority := $root.Values.auth.authorityHost -}}
{{- $azure := $root.Values.azure -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "exthub.labels" $ctx | nindent 4 }}
  annotations:
    azure.workload.identity/client-id: {{ (index $root.Values.identities $component).clientId | quote }}
    azure.workload.identity/tenant-id: {{ $tenant | quote }}
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "exthub.labels" $ctx | nindent 4 }}
spec:
  {{- $scaled := or (and (ne $component "agent") $cfg.autoscaling.enabled) (and (eq $component "agent") $cfg.keda.enabled) }}
  {{- if not $scaled }}
  replicas: {{ $cfg.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  selector:
    matchLabels:
      {{- include "exthub.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "exthub.labels" $ctx | nindent 8 }}
        azure.workload.identity/use: "true"
      annotations:
        checksum/keyvault: {{ include "exthub.secretProviderClasses" $ctx | sha256sum }}
        {{- if $root.Values.metrics.scrape }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $cfg.ports.http | quote }}
        prometheus.io/path: {{ $root.Values.metrics.path | quote }}
        {{- end }}
    spec:
      serviceAccountName: {{ $name }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $root.Values.podDefaults.terminationGracePeriodSeconds }}
      {{- with $root.Values.podDefaults.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- include "exthub.podSecurityContext" (dict "uid" 10001) | nindent 8 }}
      topologySpreadConstraints:
        {{- include "exthub.topologySpread" $ctx | nindent 8 }}
      {{- with $root.Values.podDefaults.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.podDefaults.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $component }}
          image: {{ include "exthub.image" $root.Values.image | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["services.{{ $component }}"]
          ports:
            - name: grpc
              containerPort: {{ $cfg.ports.grpc }}
              protocol: TCP
            - name: http
              containerPort: {{ $cfg.ports.http }}
              protocol: TCP
          env:
            - name: EXTHUB_BACKEND
              value: azure
            - name: EXTHUB_HOST
              value: "0.0.0.0"
            - name: EXTHUB_DATA_DIR
              value: /var/lib/exthub
            - name: EXTHUB_PUBLIC_URL
              value: {{ $root.Values.publicUrl | quote }}
            - name: EXTHUB_AUTH__ISSUERS
              value: {{ list (printf "https://sts.windows.net/%s/" $tenant) (printf "https://%s/%s/v2.0" $authority $tenant) | toJson | quote }}
            - name: EXTHUB_AUTH__AUDIENCES
              value: {{ list $root.Values.auth.appIdUri $root.Values.auth.clientId | toJson | quote }}
            - name: EXTHUB_AUTH__JWKS_URI
              value: {{ printf "https://%s/%s/discovery/v2.0/keys" $authority $tenant | quote }}
            - name: EXTHUB_AZURE__CLIENT_ID
              value: {{ (index $root.Values.identities $component).clientId | quote }}
            - name: EXTHUB_AZURE__SERVICE_TOKEN_SCOPE
              value: {{ $azure.serviceTokenScope | quote }}
            {{- if ne $component "agent" }}
            - name: EXTHUB_AZURE__COSMOS_ENDPOINT
              value: {{ $azure.cosmos.endpoint | quote }}
            - name: EXTHUB_AZURE__COSMOS_DATABASE
              value: {{ $azure.cosmos.database | quote }}
            {{- end }}
            {{- if ne $component "catalog" }}
            - name: EXTHUB_AZURE__SERVICEBUS_NAMESPACE
              value: {{ $azure.serviceBus.namespace | quote }}
            {{- end }}
            {{- if eq $component "catalog" }}
            - name: EXTHUB_CATALOG_PORT
              value: {{ $cfg.ports.grpc | quote }}
            - name: EXTHUB_CATALOG_HTTP_PORT
              value: {{ $cfg.ports.http | quote }}
            {{- else if eq $component "execution" }}
            - name: EXTHUB_EXECUTION_PORT
              value: {{ $cfg.ports.grpc | quote }}
            - name: EXTHUB_OBJECTS_PORT
              value: {{ $cfg.ports.http | quote }}
            - name: EXTHUB_CATALOG_ADDRESS
              value: {{ printf "%s:%v" (include "exthub.serviceHost" (dict "root" $root "component" "catalog")) $root.Values.catalog.ports.grpc | quote }}
            - name: EXTHUB_AGENT_ADDRESS
              value: {{ printf "%s:%v" (include "exthub.serviceHost" (dict "root" $root "component" "agent")) $root.Values.agent.ports.grpc | quote }}
            - name: EXTHUB_AZURE__BLOB_ACCOUNT_URL
              value: {{ $azure.blob.accountUrl | quote }}
            - name: EXTHUB_AZURE__BLOB_CONTAINER
              value: {{ $azure.blob.container | quote }}
            - name: EXTHUB_SIGNING_DIR
              value: /var/run/secrets/exthub/signing
            {{- else if eq $component "agent" }}
            - name: EXTHUB_AGENT_PORT
              value: {{ $cfg.ports.grpc | quote }}
            - name: EXTHUB_AGENT_HTTP_PORT
              value: {{ $cfg.ports.http | quote }}
            - name: EXTHUB_EXECUTION_ADDRESS
              value: {{ printf "%s:%v" (include "exthub.serviceHost" (dict "root" $root "component" "execution")) $root.Values.execution.ports.grpc | quote }}
            - name: EXTHUB_AGENT_ID
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- end }}
            {{- range $alias, $_ := $envSecrets }}
            - name: {{ include "exthub.secretEnvName" $alias }}
              valueFrom:
                secretKeyRef:
                  name: {{ $name }}-keyvault
                  key: {{ $alias }}
            {{- end }}
            - name: OTEL_SERVICE_NAME
              value: {{ printf "exthub-%s" $component | quote }}
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: {{ printf "service.namespace=exthub,deployment.environment=%s,k8s.namespace.name=%s" $root.Values.telemetry.deploymentEnvironment $root.Release.Namespace | quote }}
            - name: OTEL_TRACES_SAMPLER
              value: {{ $root.Values.telemetry.sampler | quote }}
            - name: OTEL_TRACES_SAMPLER_ARG
              value: {{ $root.Values.telemetry.samplerArg | quote }}
            {{- with $root.Values.telemetry.otlp.endpoint }}
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ . | quote }}
            - name: OTEL_EXPORTER_OTLP_PROTOCOL
              value: {{ $root.Values.telemetry.otlp.protocol | quote }}
            {{- end }}
            {{- with include "exthub.settingsEnv" (dict "prefix" "EXTHUB_" "values" $root.Values.settings) | trim }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with include "exthub.settingsEnv" (dict "prefix" "EXTHUB_" "values" $cfg.settings) | trim }}
            {{- . | nindent 12 }}
            {{- end }}
          startupProbe:
            grpc:
              port: {{ $cfg.ports.grpc }}
            periodSeconds: 2
            failureThreshold: 60
          readinessProbe:
            grpc:
              port: {{ $cfg.ports.grpc }}
              service: {{ .grpcService }}
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 2
          livenessProbe:
            grpc:
              port: {{ $cfg.ports.grpc }}
            periodSeconds: 10
            timeoutSeconds: 2
            failureThreshold: 3
          lifecycle:
            preStop:
              sleep:
                seconds: 5
          resources:
            {{- toYaml $cfg.resources | nindent 12 }}
          securityContext:
            {{- include "exthub.containerSecurityContext" (dict "uid" 10001) | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /var/lib/exthub
            - name: tmp
              mountPath: /tmp
            {{- if $envSecrets }}
            - name: keyvault
              mountPath: /var/run/secrets/exthub/keyvault
              readOnly: true
            {{- end }}
            {{- if eq $component "execution" }}
            - name: signing
              mountPath: /var/run/secrets/exthub/signing
              readOnly: true
            {{- end }}
      volumes:
        - name: data
          emptyDir:
            sizeLimit: 256Mi
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if $envSecrets }}
        - name: keyvault
          csi:
            driver: secrets-store.csi.k8s.io
            readOnly: true
            volumeAttributes:
              secretProviderClass: {{ $name }}-keyvault
        {{- end }}
        {{- if eq $component "execution" }}
        - name: signing
          csi:
            driver: secrets-store.csi.k8s.io
            readOnly: true
            volumeAttributes:
              secretProviderClass: {{ $name }}-signing
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "exthub.labels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "exthub.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $cfg.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: kubernetes.io/h2c
    - name: http
      port: {{ $cfg.ports.http }}
      targetPort: http
      protocol: TCP
      appProtocol: http
{{- end -}}

{{/*
The Secrets Store CSI driver's SecretProviderClasses of one service (workload identity of that service):
"<name>-keyvault" (env secrets, synced to the Secret "<name>-keyvault") and, for execution,
"<name>-signing" (the signing key ring, mounted as EXTHUB_SIGNING_DIR).
*/}}
{{- define "exthub.secretProviderClasses" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $name := include "exthub.name" . -}}
{{- $envSecrets := include "exthub.envSecrets" . | fromJson -}}
{{- $kv := $root.Values.keyVault -}}
{{- $clientId := (index $root.Values.identities $component).clientId -}}
{{- if $envSecrets }}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {{ $name }}-keyvault
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "exthub.labels" . | nindent 4 }}
spec:
  provider: azure
  parameters:
    usePodIdentity: "false"
    useVMManagedIdentity: "false"
    clientID: {{ $clientId | quote }}
    keyvaultName: {{ $kv.name | quote }}
    tenantId: {{ $root.Values.auth.tenantId | quote }}
    objects: |
      array:
      {{- range $alias, $object := $envSecrets }}
        - |
          objectName: {{ $object }}
          objectType: secret
          objectAlias: {{ $alias }}
      {{- end }}
  secretObjects:
    - secretName: {{ $name }}-keyvault
      type: Opaque
      labels:
        {{- include "exthub.labels" . | nindent 8 }}
      data:
        {{- range $alias, $_ := $envSecrets }}
        - objectName: {{ $alias }}
          key: {{ $alias }}
        {{- end }}
{{- end }}
{{- if eq $component "execution" }}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {{ $name }}-signing
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "exthub.labels" . | nindent 4 }}
spec:
  provider: azure
  parameters:
    usePodIdentity: "false"
    useVMManagedIdentity: "false"
    clientID: {{ $clientId | quote }}
    keyvaultName: {{ $kv.name | quote }}
    tenantId: {{ $root.Values.auth.tenantId | quote }}
    objects: |
      array:
        - |
          objectName: {{ $kv.secrets.signingKeyring }}
          objectType: secret
          objectAlias: keyring.json
      {{- range $kv.secrets.signingKeys }}
        - |
          objectName: {{ .secretName }}
          objectType: secret
          objectAlias: {{ .kid }}.pem
      {{- end }}
{{- end }}
{{- end -}}
