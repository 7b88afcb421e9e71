# The Exthub stack for one environment: the core platform (AKS, ACR, DNS zone, Application Gateway) is
# read by data source; this module creates the resource group, the data stores, the messaging, Key Vault,
# observability, one identity per service (plus KEDA's scaler identity), the least-privilege role
# assignments (each scoped to ONE resource) and the gateway's DNS record.

terraform {
  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
    }
    azuread = {
      source = "hashicorp/azuread"
    }
  }
}

data "azurerm_client_config" "current" {}

# ---- core platform (owned by the platform team) --------------------------------------------------------
data "azurerm_kubernetes_cluster" "core" {
  name                = var.core.aks_name
  resource_group_name = var.core.resource_group_name
}

data "azurerm_container_registry" "core" {
  name                = var.core.acr_name
  resource_group_name = var.core.resource_group_name
}

data "azurerm_dns_zone" "core" {
  name                = var.core.dns_zone_name
  resource_group_name = var.core.dns_zone_resource_group_name
}

data "azurerm_application_gateway" "core" {
  name                = var.core.app_gateway_name
  resource_group_name = var.core.resource_group_name
}

data "azurerm_subnet" "aks_nodes" {
  name                 = var.core.aks_subnet_name
  virtual_network_name = var.core.vnet_name
  resource_group_name  = var.core.vnet_resource_group_name
}

data "azurerm_subnet" "app_gateway" {
  name                 = var.core.app_gateway_subnet_name
  virtual_network_name = var.core.vnet_name
  resource_group_name  = var.core.vnet_resource_group_name
}

# The API's app registration (its client id is the audience of callers' tokens); its service principal
# holds the app roles (Agent, …) the services are given below.
data "azuread_service_principal" "api" {
  client_id = var.api_client_id
}

locals {
  prefix = "${var.name}-${var.environment}"
  # globally unique names without hyphens (storage) or with a 24-character limit (Key Vault)
  compact = substr(replace(local.prefix, "-", ""), 0, 20)
  tags    = merge(var.tags, { application = "exthub", environment = var.environment })

  services = toset(["catalog", "execution", "agent"])
  # the chart names each service account "<release>-<service>"
  service_accounts = { for s in local.services : s => "${var.release_name}-${s}" }

  appinsights_secret = "exthub-appinsights-connection-string"
  page_token_secret  = "exthub-page-token-secret"
  allowed_subnets    = [data.azurerm_subnet.aks_nodes.id]
}

resource "azurerm_resource_group" "this" {
  name     = "${local.prefix}-rg"
  location = var.location
  tags     = local.tags
}

# ---- identities: one per service, federated with its Kubernetes service account -------------------------
module "identity" {
  source   = "../identity"
  for_each = local.services

  name                      = "${local.prefix}-${each.key}"
  location                  = var.location
  resource_group_name       = azurerm_resource_group.this.name
  oidc_issuer_url           = data.azurerm_kubernetes_cluster.core.oidc_issuer_url
  service_account_namespace = var.namespace
  service_account_name      = local.service_accounts[each.key]
  tags                      = local.tags
}

# KEDA's operator reads the subscriptions' depth with this identity (TriggerAuthentication identityId).
module "scaler_identity" {
  source = "../identity"

  name                      = "${local.prefix}-scaler"
  location                  = var.location
  resource_group_name       = azurerm_resource_group.this.name
  oidc_issuer_url           = data.azurerm_kubernetes_cluster.core.oidc_issuer_url
  service_account_namespace = var.keda_namespace
  service_account_name      = var.keda_service_account
  tags                      = local.tags
}

# Services call each other with tokens for the API's scope; the execution service and the agents hold Agent.
resource "azuread_app_role_assignment" "agent_role" {
  for_each = toset(["execution", "agent"])

  app_role_id         = data.azuread_service_principal.api.app_role_ids["Agent"]
  principal_object_id = module.identity[each.key].principal_id
  resource_object_id  = data.azuread_service_principal.api.object_id
}

# ---- data and messaging -------------------------------------------------------------------------------
module "cosmos" {
  source = "../cosmos"

  name                = "${local.prefix}-cosmos"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
  max_throughput      = var.cosmos_max_throughput
  zone_redundant      = var.zone_redundant
  allowed_subnet_ids  = local.allowed_subnets
  allowed_ip_ranges   = var.operator_ip_ranges
  data_contributors = {
    catalog   = { principal_id = module.identity["catalog"].principal_id, container = "catalog" }
    execution = { principal_id = module.identity["execution"].principal_id, container = "executions" }
  }
  tags = local.tags
}

module "servicebus" {
  source = "../servicebus"

  name                = "${local.prefix}-sb"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
  capacity            = var.servicebus_capacity
  max_delivery_count  = var.servicebus_max_delivery_count
  allowed_subnet_ids  = local.allowed_subnets
  allowed_ip_ranges   = var.operator_ip_ranges
  senders = {
    execution-requests = { principal_id = module.identity["execution"].principal_id, topic = "requests" }
    execution-events   = { principal_id = module.identity["execution"].principal_id, topic = "events" }
  }
  # the agents receive; the execution service reads and redrives the dead-letter queues
  receivers = merge(
    { for s in ["high", "normal", "low"] : "agent-${s}" => { principal_id = module.identity["agent"].principal_id, subscription = s } },
    { for s in ["high", "normal", "low"] : "execution-${s}" => { principal_id = module.identity["execution"].principal_id, subscription = s } },
  )
  scalers = { scaler = module.scaler_identity.principal_id }
  tags    = local.tags
}

module "storage" {
  source = "../storage"

  name                       = "${local.compact}obj"
  location                   = var.location
  resource_group_name        = azurerm_resource_group.this.name
  replication_type           = var.storage_replication_type
  allowed_subnet_ids         = local.allowed_subnets
  allowed_ip_ranges          = var.operator_ip_ranges
  blob_contributors          = { execution = module.identity["execution"].principal_id }
  log_analytics_workspace_id = module.observability.workspace_id
  tags                       = local.tags
}

# ---- secrets and telemetry ------------------------------------------------------------------------------
module "keyvault" {
  source = "../keyvault"

  name                = "${local.compact}kv"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
  tenant_id           = data.azurerm_client_config.current.tenant_id
  allowed_subnet_ids  = local.allowed_subnets
  allowed_ip_ranges   = var.operator_ip_ranges
  writer_principal_id = data.azurerm_client_config.current.object_id
  # the execution service reads the signing keys, the page-token secret and the connection string
  vault_readers = { execution = module.identity["execution"].principal_id }
  secret_readers = {
    catalog-page-token  = { principal_id = module.identity["catalog"].principal_id, secret = local.page_token_secret }
    catalog-appinsights = { principal_id = module.identity["catalog"].principal_id, secret = local.appinsights_secret }
    agent-appinsights   = { principal_id = module.identity["agent"].principal_id, secret = local.appinsights_secret }
  }
  tags = local.tags
}

module "observability" {
  source = "../observability"

  name                = local.prefix
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
  retention_days      = var.log_retention_days
  tags                = local.tags
}

# The connection string is an ingestion endpoint plus key: it goes to Key Vault, and the pods read it
# through the CSI driver. (It is in the Terraform state anyway, as an attribute of Application Insights.)
resource "azurerm_key_vault_secret" "appinsights" {
  #checkov:skip=CKV_AZURE_41:The connection string does not expire; it changes only with the Application Insights resource, and Terraform rewrites it then
  name         = local.appinsights_secret
  key_vault_id = module.keyvault.id
  value        = module.observability.connection_string
  content_type = "text/plain"
  depends_on   = [module.keyvault]
}

# ---- the public name of the gateway: an alias record on Application Gateway's frontend IP ---------------
resource "azurerm_dns_a_record" "gateway" {
  name                = var.dns_record_name
  zone_name           = data.azurerm_dns_zone.core.name
  resource_group_name = data.azurerm_dns_zone.core.resource_group_name
  ttl                 = 300
  target_resource_id  = one([for f in data.azurerm_application_gateway.core.frontend_ip_configuration : f.public_ip_address_id if f.public_ip_address_id != ""])
  tags                = local.tags
}
