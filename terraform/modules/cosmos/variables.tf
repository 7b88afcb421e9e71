variable "name" {
  type        = string
  description = "Cosmos DB account name (globally unique)."
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,42}[a-z0-9]$", var.name))
    error_message = "3-44 lowercase letters, digits and hyphens."
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

variable "database_name" {
  type        = string
  description = "The one database."
  default     = "exthub"
}

variable "containers" {
  type        = list(string)
  description = "One container per document-store collection (partition key path /partition); each needs its composite indexes in local.composite_indexes (main.tf)."
  default     = ["catalog", "executions"]
  validation {
    condition     = length(var.containers) > 0 && alltrue([for c in var.containers : can(regex("^[a-z][a-z0-9-]{0,62}$", c))])
    error_message = "At least one container; names are lowercase letters, digits and hyphens."
  }
}

variable "max_throughput" {
  type        = number
  description = "Autoscale maximum RU/s of each container."
  default     = 1000
  validation {
    condition     = var.max_throughput >= 1000 && var.max_throughput % 1000 == 0
    error_message = "A multiple of 1000, at least 1000."
  }
}

variable "zone_redundant" {
  type        = bool
  description = "Spread the account over availability zones."
  default     = true
}

variable "public_network_access_enabled" {
  type        = bool
  description = "Reachable outside private endpoints (still limited to allowed_subnet_ids and allowed_ip_ranges)."
  default     = true
}

variable "allowed_subnet_ids" {
  type        = list(string)
  description = "Subnets (with the Microsoft.AzureCosmosDB service endpoint) allowed to connect: the AKS node subnet."
  default     = []
}

variable "allowed_ip_ranges" {
  type        = list(string)
  description = "Operator IP ranges (CIDR) allowed to connect."
  default     = []
}

variable "data_contributors" {
  type = map(object({
    principal_id = string
    container    = string
  }))
  description = "Principals with Cosmos DB Built-in Data Contributor on one container each."
  default     = {}
  validation {
    condition     = alltrue([for a in values(var.data_contributors) : a.container != ""])
    error_message = "Every data contributor names its one container."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags."
  default     = {}
}
