# An environment root: providers, state backend and the Exthub stack. Copy this folder per environment
# (dev, staging, prod) and give each its own tfvars and state key.

terraform {
  required_version = ">= 1.9.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.81.0, < 5.0.0"
    }
    azuread = {
      source  = "hashicorp/azuread"
      version = ">= 3.0.0, < 4.0.0"
    }
  }

  # State in the platform team's storage account (Entra ID auth, no access key):
  #   terraform init -backend-config=backend.hcl
  backend "azurerm" {
    use_azuread_auth = true
  }
}

provider "azurerm" {
  # the storage account has shared keys disabled: the provider's data-plane calls use Entra ID
  storage_use_azuread = true
  features {
    key_vault {
      purge_soft_delete_on_destroy = false
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
}

provider "azuread" {}

module "exthub" {
  source = "../../modules/exthub"

  name                          = var.name
  environment                   = var.environment
  location                      = var.location
  core                          = var.core
  namespace                     = var.namespace
  release_name                  = var.release_name
  api_client_id                 = var.api_client_id
  api_app_id_uri                = var.api_app_id_uri
  dns_record_name               = var.dns_record_name
  zone_redundant                = var.zone_redundant
  cosmos_max_throughput         = var.cosmos_max_throughput
  servicebus_capacity           = var.servicebus_capacity
  servicebus_max_delivery_count = var.servicebus_max_delivery_count
  storage_replication_type      = var.storage_replication_type
  log_retention_days            = var.log_retention_days
  operator_ip_ranges            = var.operator_ip_ranges
  tags                          = var.tags
}
