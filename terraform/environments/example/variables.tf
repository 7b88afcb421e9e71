variable "name" {
  type        = string
  description = "Short name prefix of every resource."
  default     = "exthub"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.name))
    error_message = "2-10 lowercase letters and digits, starting with a letter."
  }
}

variable "environment" {
  type        = string
  description = "Environment name (dev, staging, prod, …): part of every resource name."
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,7}$", var.environment))
    error_message = "2-8 lowercase letters and digits, starting with a letter."
  }
}

variable "location" {
  type        = string
  description = "Azure region of the stack (the cluster's region)."
  validation {
    condition     = can(regex("^[a-z]+[a-z0-9]*$", var.location))
    error_message = "An Azure region name such as westeurope."
  }
}

variable "core" {
  type = object({
    resource_group_name          = string
    aks_name                     = string
    acr_name                     = string
    app_gateway_name             = string
    dns_zone_name                = string
    dns_zone_resource_group_name = string
    vnet_name                    = string
    vnet_resource_group_name     = string
    aks_subnet_name              = string
    app_gateway_subnet_name      = string
  })
  description = "The core platform this stack runs on (read by data source, never changed here)."
  validation {
    condition     = alltrue([for v in values(var.core) : length(v) > 0])
    error_message = "Every core platform name is required."
  }
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of the Helm release."
  default     = "exthub"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "A Kubernetes namespace name."
  }
}

variable "release_name" {
  type        = string
  description = "Helm release name (service accounts are \"<release>-<service>\")."
  default     = "exthub"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$", var.release_name))
    error_message = "1-40 lowercase letters, digits and hyphens."
  }
}

variable "api_client_id" {
  type        = string
  description = "Client id of the API's Entra ID app registration (audience; app roles Agent, Executions.Run, …)."
  validation {
    condition     = can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.api_client_id))
    error_message = "A GUID."
  }
}

variable "api_app_id_uri" {
  type        = string
  description = "Application id URI of the API app (e.g. api://exthub)."
  validation {
    condition     = can(regex("^(api://|https://)[^ ]+$", var.api_app_id_uri))
    error_message = "An api:// or https:// URI."
  }
}

variable "dns_record_name" {
  type        = string
  description = "Record in the core DNS zone for the gateway (the public host is <record>.<zone>)."
  default     = "exthub"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.dns_record_name))
    error_message = "One DNS label."
  }
}

variable "zone_redundant" {
  type        = bool
  description = "Zone-redundant data stores."
  default     = true
}

variable "cosmos_max_throughput" {
  type        = number
  description = "Autoscale maximum RU/s per Cosmos DB container."
  default     = 1000
  validation {
    condition     = var.cosmos_max_throughput >= 1000 && var.cosmos_max_throughput % 1000 == 0
    error_message = "A multiple of 1000, at least 1000."
  }
}

variable "servicebus_capacity" {
  type        = number
  description = "Service Bus Premium messaging units."
  default     = 1
  validation {
    condition     = contains([1, 2, 4, 8, 16], var.servicebus_capacity)
    error_message = "1, 2, 4, 8 or 16."
  }
}

variable "servicebus_max_delivery_count" {
  type        = number
  description = "Deliveries of a queued execution before it is dead-lettered."
  default     = 10
  validation {
    condition     = var.servicebus_max_delivery_count >= 2 && var.servicebus_max_delivery_count <= 100
    error_message = "Between 2 and 100."
  }
}

variable "storage_replication_type" {
  type        = string
  description = "Replication of the objects storage account."
  default     = "ZRS"
  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "One of LRS, ZRS, GRS, RAGRS, GZRS, RAGZRS."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days logs and telemetry are kept."
  default     = 30
  validation {
    condition     = contains([30, 60, 90, 120, 180, 270, 365, 550, 730], var.log_retention_days)
    error_message = "One of 30, 60, 90, 120, 180, 270, 365, 550, 730."
  }
}

variable "operator_ip_ranges" {
  type        = list(string)
  description = "Public CIDRs of operators and the Terraform runner (data-plane access through the firewalls)."
  default     = []
  validation {
    condition     = alltrue([for c in var.operator_ip_ranges : can(cidrnetmask(c))])
    error_message = "IPv4 CIDRs."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags of every resource."
  default     = {}
}
