# Key Vault (RBAC mode) for the hub's secrets: the page-token secret and the signing keys (created by an
# operator, never by Terraform, so they never reach the state) and the Application Insights connection
# string (written here). Readers get Key Vault Secrets User on the vault or on one secret.

terraform {
  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
    }
  }
}

resource "azurerm_key_vault" "this" {
  #checkov:skip=CKV2_AZURE_32:Default-deny network rules admit only the AKS node subnet (service endpoint) and the operator IP ranges; private endpoints need the platform's private DNS zones (docs/deploy.md, variants)
  name                          = var.name
  location                      = var.location
  resource_group_name           = var.resource_group_name
  tenant_id                     = var.tenant_id
  sku_name                      = "standard"
  rbac_authorization_enabled    = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = var.public_network_access_enabled

  network_acls {
    default_action             = "Deny"
    bypass                     = "AzureServices"
    virtual_network_subnet_ids = var.allowed_subnet_ids
    ip_rules                   = var.allowed_ip_ranges
  }

  tags = var.tags
}

# Whoever runs Terraform writes the secrets it owns (the Application Insights connection string).
resource "azurerm_role_assignment" "writer" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = var.writer_principal_id
}

resource "azurerm_role_assignment" "vault_readers" {
  for_each = var.vault_readers

  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = each.value
}

# Secret-scoped readers: the scope is the secret's resource id (the secret may be created later by an
# operator; the assignment does not need it to exist).
resource "azurerm_role_assignment" "secret_readers" {
  for_each = var.secret_readers

  scope                = "${azurerm_key_vault.this.id}/secrets/${each.value.secret}"
  role_definition_name = "Key Vault Secrets User"
  principal_id         = each.value.principal_id
}
