variable "name" {
  type        = string
  description = "Name prefix of the workspace and the Application Insights resource."
}

variable "location" {
  type        = string
  description = "Azure region."
}

variable "resource_group_name" {
  type        = string
  description = "Resource group."
}

variable "retention_days" {
  type        = number
  description = "Days logs and telemetry are kept."
  default     = 30
  validation {
    condition     = contains([30, 60, 90, 120, 180, 270, 365, 550, 730], var.retention_days)
    error_message = "One of 30, 60, 90, 120, 180, 270, 365, 550, 730."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags."
  default     = {}
}
