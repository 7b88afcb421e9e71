variable "name" {
  type        = string
  description = "Key Vault name (globally unique)."
  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$", var.name))
    error_message = "3-24 letters, digits and hyphens, starting with a letter."
  }
}

variable "location" {
  type        = string
  description = "Azure region."
}

variable "resource_group_name" {
  type        = string
  description = "Resource group of the vault."
}

variable "tenant_id" {
  type        = string
  description = "Entra ID tenant of the vault."
}

variable "public_network_access_enabled" {
  type        = bool
  description = "Reachable outside private endpoints (still limited by the network ACLs)."
  default     = true
}

variable "allowed_subnet_ids" {
  type        = list(string)
  description = "Subnets (with the Microsoft.KeyVault service endpoint) allowed to connect: the AKS node subnet."
  default     = []
}

variable "allowed_ip_ranges" {
  type        = list(string)
  description = "Operator IP ranges allowed to connect (to create the secrets)."
  default     = []
}

variable "writer_principal_id" {
  type        = string
  description = "The principal running Terraform (Key Vault Secrets Officer, to write the secrets Terraform owns)."
}

variable "vault_readers" {
  type        = map(string)
  description = "Principal ids with Key Vault Secrets User on the whole vault."
  default     = {}
}

variable "secret_readers" {
  type = map(object({
    principal_id = string
    secret       = string
  }))
  description = "Key Vault Secrets User on one secret each."
  default     = {}
  validation {
    condition     = alltrue([for r in values(var.secret_readers) : can(regex("^[0-9a-zA-Z-]{1,127}$", r.secret))])
    error_message = "secret is a Key Vault secret name."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags."
  default     = {}
}
