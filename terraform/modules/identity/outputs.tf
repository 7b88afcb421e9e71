output "client_id" {
  description = "Client id (the service account's azure.workload.identity/client-id)."
  value       = azurerm_user_assigned_identity.this.client_id
}

output "principal_id" {
  description = "Object id of the identity's service principal (role assignments)."
  value       = azurerm_user_assigned_identity.this.principal_id
}

output "id" {
  description = "Resource id."
  value       = azurerm_user_assigned_identity.this.id
}
