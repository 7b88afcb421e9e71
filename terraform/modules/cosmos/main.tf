# Cosmos DB (NoSQL API) for the document store: one database, one container per collection, partition key
# path /partition (items are {"id", "partition", "body"}). Keys are disabled: the services use Entra ID
# with a data-plane role assignment scoped to the one container each needs.

terraform {
  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
    }
  }
}

locals {
  # "Cosmos DB Built-in Data Contributor" (a data-plane role definition of every account)
  data_contributor_role = "00000000-0000-0000-0000-000000000002"

  # Cosmos DB refuses an ORDER BY on more than one property without a matching composite index, and the
  # document store orders every query by its keys, then /id, then /partition. One index per order the services
  # query a container with (services/platform/backends.py COSMOS_SORT_ORDERS, through
  # cosmos_filter.indexing_policy; tests/deploy checks both are equal). Add an order there and here together.
  composite_indexes = {
    catalog = [
      [{ path = "/id", order = "Ascending" }, { path = "/partition", order = "Ascending" }],
      [{ path = "/body/extension_id", order = "Ascending" }, { path = "/id", order = "Ascending" }, { path = "/partition", order = "Ascending" }],
      [{ path = "/body/semver_key", order = "Descending" }, { path = "/id", order = "Ascending" }, { path = "/partition", order = "Ascending" }],
    ]
    executions = [
      [{ path = "/id", order = "Ascending" }, { path = "/partition", order = "Ascending" }],
      [{ path = "/body/create_time", order = "Descending" }, { path = "/id", order = "Ascending" }, { path = "/partition", order = "Ascending" }],
      [{ path = "/body/sequence", order = "Ascending" }, { path = "/id", order = "Ascending" }, { path = "/partition", order = "Ascending" }],
      [{ path = "/body/due_time", order = "Ascending" }, { path = "/id", order = "Ascending" }, { path = "/partition", order = "Ascending" }],
    ]
  }
}

resource "azurerm_cosmosdb_account" "this" {
  #checkov:skip=CKV_AZURE_101:Default-deny network rules admit only the AKS node subnet (service endpoint) and the operator IP ranges; private endpoints need the platform's private DNS zones (docs/deploy.md, variants)
  #checkov:skip=CKV_AZURE_100:Microsoft-managed keys; a customer-managed key needs a platform-owned HSM key and its rotation (docs/deploy.md, variants)
  name                = var.name
  location            = var.location
  resource_group_name = var.resource_group_name
  offer_type          = "Standard"
  kind                = "GlobalDocumentDB"

  local_authentication_disabled      = true
  access_key_metadata_writes_enabled = false
  minimal_tls_version                = "Tls12"
  automatic_failover_enabled         = true

  public_network_access_enabled     = var.public_network_access_enabled
  is_virtual_network_filter_enabled = true
  ip_range_filter                   = var.allowed_ip_ranges

  dynamic "virtual_network_rule" {
    for_each = toset(var.allowed_subnet_ids)
    content {
      id = virtual_network_rule.value
    }
  }

  consistency_policy {
    consistency_level = "Session"
  }

  geo_location {
    location          = var.location
    failover_priority = 0
    zone_redundant    = var.zone_redundant
  }

  backup {
    type = "Continuous"
    tier = "Continuous7Days"
  }

  tags = var.tags
}

resource "azurerm_cosmosdb_sql_database" "this" {
  name                = var.database_name
  resource_group_name = var.resource_group_name
  account_name        = azurerm_cosmosdb_account.this.name
}

resource "azurerm_cosmosdb_sql_container" "this" {
  for_each = toset(var.containers)

  name                  = each.value
  resource_group_name   = var.resource_group_name
  account_name          = azurerm_cosmosdb_account.this.name
  database_name         = azurerm_cosmosdb_sql_database.this.name
  partition_key_paths   = ["/partition"]
  partition_key_kind    = "Hash"
  partition_key_version = 2

  autoscale_settings {
    max_throughput = var.max_throughput
  }

  indexing_policy {
    indexing_mode = "consistent"
    included_path {
      path = "/*"
    }
    excluded_path {
      path = "/\"_etag\"/?"
    }
    dynamic "composite_index" {
      for_each = local.composite_indexes[each.value]
      content {
        dynamic "index" {
          for_each = composite_index.value
          content {
            path  = index.value.path
            order = index.value.order
          }
        }
      }
    }
  }
}

# One assignment per principal, scoped to ONE container.
resource "azurerm_cosmosdb_sql_role_assignment" "data" {
  for_each = var.data_contributors

  resource_group_name = var.resource_group_name
  account_name        = azurerm_cosmosdb_account.this.name
  role_definition_id  = "${azurerm_cosmosdb_account.this.id}/sqlRoleDefinitions/${local.data_contributor_role}"
  principal_id        = each.value.principal_id
  scope               = "${azurerm_cosmosdb_account.this.id}/dbs/${azurerm_cosmosdb_sql_database.this.name}/colls/${azurerm_cosmosdb_sql_container.this[each.value.container].name}"
}
