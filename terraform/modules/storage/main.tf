# Blob Storage for execution objects: one private container, no shared key (user-delegation SAS only),
# no public blob access. Storage Blob Data Contributor on the container and Storage Blob Delegator on
# the account (needed to get a user delegation key) go to the identities that hand out object URLs.

terraform {
  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
    }
  }
}

resource "azurerm_storage_account" "this" {
  #checkov:skip=CKV_AZURE_59:Default-deny network rules admit only the AKS node subnet (service endpoint) and the operator IP ranges; private endpoints need the platform's private DNS zones (docs/deploy.md, variants)
  #checkov:skip=CKV2_AZURE_33:Default-deny network rules admit only the AKS node subnet (service endpoint) and the operator IP ranges; private endpoints need the platform's private DNS zones (docs/deploy.md, variants)
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; a customer-managed key needs a platform-owned HSM key and its rotation (docs/deploy.md, variants)
  #checkov:skip=CKV_AZURE_206:Zone-redundant (ZRS) by default for short-lived execution objects; geo-replication is a variable (storage_replication_type)
  #checkov:skip=CKV_AZURE_33:The account has no queues; blob reads, writes and deletes are logged by the diagnostic setting below
  name                     = var.name
  location                 = var.location
  resource_group_name      = var.resource_group_name
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = var.replication_type

  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  allow_nested_items_to_be_public   = false
  public_network_access_enabled     = var.public_network_access_enabled
  https_traffic_only_enabled        = true
  min_tls_version                   = "TLS1_2"
  infrastructure_encryption_enabled = true
  local_user_enabled                = false
  sftp_enabled                      = false
  cross_tenant_replication_enabled  = false

  network_rules {
    default_action             = "Deny"
    bypass                     = ["AzureServices", "Logging", "Metrics"]
    virtual_network_subnet_ids = var.allowed_subnet_ids
    ip_rules                   = var.allowed_ip_ranges
  }

  blob_properties {
    versioning_enabled = true
    delete_retention_policy {
      days = var.soft_delete_days
    }
    container_delete_retention_policy {
      days = var.soft_delete_days
    }
  }

  # account and service SAS need a key, which is disabled; the policy bounds them anyway
  sas_policy {
    expiration_period = "00.01:00:00"
  }

  tags = var.tags
}

resource "azurerm_storage_container" "objects" {
  #checkov:skip=CKV2_AZURE_21:Blob reads are logged by the diagnostic setting below; the check accepts only Log Analytics storage insights, which needs the account key (disabled here)
  name                  = var.container_name
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"
}

locals {
  container_scope = "${azurerm_storage_account.this.id}/blobServices/default/containers/${azurerm_storage_container.objects.name}"
}

resource "azurerm_role_assignment" "blob_contributors" {
  for_each = var.blob_contributors

  scope                = local.container_scope
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = each.value
}

resource "azurerm_role_assignment" "delegators" {
  for_each = var.blob_contributors

  scope                = azurerm_storage_account.this.id
  role_definition_name = "Storage Blob Delegator"
  principal_id         = each.value
}

# Blob read/write/delete logs to the Log Analytics workspace.
resource "azurerm_monitor_diagnostic_setting" "blob" {
  name                       = "blob-to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.this.id}/blobServices/default"
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
  enabled_metric {
    category = "Transaction"
  }
}
