variable "name" {
  type        = string
  description = "Storage account name (globally unique)."
  validation {
    condition     = can(regex("^[a-z0-9]{3,24}$", var.name))
    error_message = "3-24 lowercase letters and digits."
  }
}

variable "location" {
  type        = string
  description = "Azure region."
}

variable "resource_group_name" {
  type        = string
  description = "Resource group of the account."
}

variable "replication_type" {
  type        = string
  description = "LRS, ZRS, GRS, RAGRS, GZRS or RAGZRS."
  default     = "ZRS"
  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS"], var.replication_type)
    error_message = "One of LRS, ZRS, GRS, RAGRS, GZRS, RAGZRS."
  }
}

variable "container_name" {
  type        = string
  description = "The objects container (EXTHUB_AZURE__BLOB_CONTAINER)."
  default     = "exthub-objects"
  validation {
    condition     = can(regex("^[a-z0-9](-?[a-z0-9])+$", var.container_name)) && length(var.container_name) <= 63
    error_message = "3-63 lowercase letters, digits and single hyphens."
  }
}

variable "soft_delete_days" {
  type        = number
  description = "Days deleted blobs and containers are kept."
  default     = 7
  validation {
    condition     = var.soft_delete_days >= 1 && var.soft_delete_days <= 365
    error_message = "Between 1 and 365."
  }
}

variable "public_network_access_enabled" {
  type        = bool
  description = "Reachable outside private endpoints (still limited by the network rules)."
  default     = true
}

variable "allowed_subnet_ids" {
  type        = list(string)
  description = "Subnets (with the Microsoft.Storage service endpoint) allowed to connect."
  default     = []
}

variable "allowed_ip_ranges" {
  type        = list(string)
  description = "Operator IP ranges allowed to connect (storage accepts public ranges only, without /31 and /32)."
  default     = []
}

variable "blob_contributors" {
  type        = map(string)
  description = "Principal ids with Storage Blob Data Contributor on the container and Storage Blob Delegator on the account."
  default     = {}
}

variable "log_analytics_workspace_id" {
  type        = string
  description = "Workspace receiving the blob service's read, write and delete logs."
}

variable "tags" {
  type        = map(string)
  description = "Tags."
  default     = {}
}
