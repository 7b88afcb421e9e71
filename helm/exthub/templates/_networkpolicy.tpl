{{/* NetworkPolicy fragments. */}}
{{- define "exthub.np.peer" -}}
- podSelector:
    matchLabels:
      {{- include "exthub.selectorLabels" . | nindent 6 }}
{{- end -}}
{{- define "exthub.np.dns" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .podLabels | nindent 10 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}
{{- define "exthub.np.azure" -}}
- to:
    {{- range .cidrs }}
    - ipBlock:
        cidr: {{ .cidr }}
        {{- with .except }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
    {{- end }}
  ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end -}}
{{- define "exthub.np.metrics" -}}
- from:
    {{- range .namespaces }}
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ . }}
    {{- end }}
  ports:
    - {protocol: TCP, port: {{ .port }}}
{{- end -}}
