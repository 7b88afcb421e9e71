variable "name" {
  type        = string
  description = "Identity name."
  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}$", var.name))
    error_message = "3-128 letters, digits, hyphens and underscores."
  }
}

variable "location" {
  type        = string
  description = "Azure region."
}

variable "resource_group_name" {
  type        = string
  description = "Resource group of the identity."
}

variable "oidc_issuer_url" {
  type        = string
  description = "The AKS cluster's OIDC issuer URL."
  validation {
    condition     = startswith(var.oidc_issuer_url, "https://")
    error_message = "An https URL (enable the OIDC issuer on the cluster)."
  }
}

variable "service_account_namespace" {
  type        = string
  description = "Namespace of the Kubernetes service account."
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.service_account_namespace))
    error_message = "A Kubernetes namespace name."
  }
}

variable "service_account_name" {
  type        = string
  description = "Name of the Kubernetes service account (the chart's \"<release>-<service>\")."
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.service_account_name))
    error_message = "A Kubernetes service account name."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags."
  default     = {}
}
