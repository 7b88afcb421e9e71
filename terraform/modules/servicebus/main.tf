# Service Bus: topic execution-requests with one subscription per priority (a correlation filter on the
# application property "priority", max delivery count, dead-lettering) and topic execution-events
# (CloudEvents, message id = event id) with subscription "all"; both drop a repeated message id. Local (SAS) auth is disabled; role
# assignments are scoped to one topic or one subscription each.

terraform {
  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
    }
  }
}

locals {
  # subscription name -> value of the "priority" application property
  priorities = { high = "HIGH", normal = "NORMAL", low = "LOW" }
  topics     = { requests = "execution-requests", events = "execution-events" }
}

resource "azurerm_servicebus_namespace" "this" {
  #checkov:skip=CKV_AZURE_204:Default-deny network rules admit only the AKS node subnet (service endpoint) and the operator IP ranges; private endpoints need the platform's private DNS zones (docs/deploy.md, variants)
  #checkov:skip=CKV_AZURE_201:Microsoft-managed keys; a customer-managed key needs a platform-owned HSM key and its rotation (docs/deploy.md, variants)
  #checkov:skip=CKV_AZURE_199:Double encryption requires a customer-managed key (see CKV_AZURE_201)
  name                          = var.name
  location                      = var.location
  resource_group_name           = var.resource_group_name
  sku                           = "Premium"
  capacity                      = var.capacity
  premium_messaging_partitions  = 1
  local_auth_enabled            = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = var.public_network_access_enabled

  network_rule_set {
    default_action                = "Deny"
    public_network_access_enabled = var.public_network_access_enabled
    trusted_services_allowed      = true
    ip_rules                      = var.allowed_ip_ranges

    dynamic "network_rules" {
      for_each = toset(var.allowed_subnet_ids)
      content {
        subnet_id = network_rules.value
      }
    }
  }

  identity {
    type = "SystemAssigned"
  }

  tags = var.tags
}

resource "azurerm_servicebus_topic" "this" {
  for_each = local.topics

  name                                    = each.value
  namespace_id                            = azurerm_servicebus_namespace.this.id
  requires_duplicate_detection            = true
  duplicate_detection_history_time_window = "PT10M"
  default_message_ttl                     = var.message_ttl
  max_size_in_megabytes                   = 5120
}

resource "azurerm_servicebus_subscription" "requests" {
  for_each = local.priorities

  name                                      = each.key
  topic_id                                  = azurerm_servicebus_topic.this["requests"].id
  max_delivery_count                        = var.max_delivery_count
  lock_duration                             = var.lock_duration
  dead_lettering_on_message_expiration      = true
  dead_lettering_on_filter_evaluation_error = true
  batched_operations_enabled                = true
}

# The subscription's only rule: priority = HIGH | NORMAL | LOW (a correlation filter, evaluated cheaply).
resource "azurerm_servicebus_subscription_rule" "priority" {
  for_each = local.priorities

  name            = "priority"
  subscription_id = azurerm_servicebus_subscription.requests[each.key].id
  filter_type     = "CorrelationFilter"

  correlation_filter {
    properties = {
      priority = each.value
    }
  }
}

resource "azurerm_servicebus_subscription" "events_all" {
  name                                 = "all"
  topic_id                             = azurerm_servicebus_topic.this["events"].id
  max_delivery_count                   = var.max_delivery_count
  lock_duration                        = var.lock_duration
  dead_lettering_on_message_expiration = true
}

resource "azurerm_role_assignment" "senders" {
  for_each = var.senders

  scope                = azurerm_servicebus_topic.this[each.value.topic].id
  role_definition_name = "Azure Service Bus Data Sender"
  principal_id         = each.value.principal_id
}

resource "azurerm_role_assignment" "receivers" {
  for_each = var.receivers

  scope                = azurerm_servicebus_subscription.requests[each.value.subscription].id
  role_definition_name = "Azure Service Bus Data Receiver"
  principal_id         = each.value.principal_id
}

# KEDA reads a subscription's runtime properties (message count), which needs Manage rights: Data Owner,
# on the requests topic only, for the scaler identity only.
resource "azurerm_role_assignment" "scaler" {
  for_each = var.scalers

  scope                = azurerm_servicebus_topic.this["requests"].id
  role_definition_name = "Azure Service Bus Data Owner"
  principal_id         = each.value
}
