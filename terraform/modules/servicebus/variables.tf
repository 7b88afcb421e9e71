variable "name" {
  type        = string
  description = "Namespace name (globally unique)."
  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{4,48}[a-zA-Z0-9]$", var.name))
    error_message = "6-50 letters, digits and hyphens, starting with a letter."
  }
}

variable "location" {
  type        = string
  description = "Azure region."
}

variable "resource_group_name" {
  type        = string
  description = "Resource group of the namespace."
}

variable "capacity" {
  type        = number
  description = "Premium messaging units."
  default     = 1
  validation {
    condition     = contains([1, 2, 4, 8, 16], var.capacity)
    error_message = "1, 2, 4, 8 or 16."
  }
}

variable "max_delivery_count" {
  type        = number
  description = "Deliveries before a message is dead-lettered."
  default     = 10
  validation {
    condition     = var.max_delivery_count >= 2 && var.max_delivery_count <= 100
    error_message = "Between 2 and 100 (1 would dead-letter on the first failure)."
  }
}

variable "lock_duration" {
  type        = string
  description = "Peek-lock duration (ISO 8601); the agents renew it as their heartbeat."
  default     = "PT1M"
  validation {
    condition     = can(regex("^PT([1-5]M|[0-9]{1,3}S)$", var.lock_duration))
    error_message = "An ISO 8601 duration up to PT5M, e.g. PT1M or PT30S."
  }
}

variable "message_ttl" {
  type        = string
  description = "Default time to live of a message (ISO 8601); expired messages are dead-lettered."
  default     = "P14D"
}

variable "public_network_access_enabled" {
  type        = bool
  description = "Reachable outside private endpoints (still limited by the network rule set)."
  default     = true
}

variable "allowed_subnet_ids" {
  type        = list(string)
  description = "Subnets (with the Microsoft.ServiceBus service endpoint) allowed to connect."
  default     = []
}

variable "allowed_ip_ranges" {
  type        = list(string)
  description = "Operator IP ranges (CIDR) allowed to connect."
  default     = []
}

variable "senders" {
  type = map(object({
    principal_id = string
    topic        = string
  }))
  description = "Azure Service Bus Data Sender, each on one topic (requests or events)."
  default     = {}
  validation {
    condition     = alltrue([for s in values(var.senders) : contains(["requests", "events"], s.topic)])
    error_message = "topic is requests or events."
  }
}

variable "receivers" {
  type = map(object({
    principal_id = string
    subscription = string
  }))
  description = "Azure Service Bus Data Receiver, each on one execution-requests subscription (high, normal, low)."
  default     = {}
  validation {
    condition     = alltrue([for r in values(var.receivers) : contains(["high", "normal", "low"], r.subscription)])
    error_message = "subscription is high, normal or low."
  }
}

variable "scalers" {
  type        = map(string)
  description = "Principal ids of KEDA's scaler identity (Data Owner on the execution-requests topic)."
  default     = {}
}

variable "tags" {
  type        = map(string)
  description = "Tags."
  default     = {}
}
