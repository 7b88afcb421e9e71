output "namespace_fqdn" {
  description = "Fully qualified namespace (EXTHUB_AZURE__SERVICEBUS_NAMESPACE)."
  value       = "${azurerm_servicebus_namespace.this.name}.servicebus.windows.net"
}

output "namespace_id" {
  description = "Namespace resource id."
  value       = azurerm_servicebus_namespace.this.id
}

output "subscriptions" {
  description = "Priority -> subscription name of execution-requests."
  value       = { for name, priority in local.priorities : priority => azurerm_servicebus_subscription.requests[name].name }
}
