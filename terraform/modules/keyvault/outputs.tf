output "id" {
  description = "Vault resource id."
  value       = azurerm_key_vault.this.id
}

output "name" {
  description = "Vault name (keyVault.name in the chart)."
  value       = azurerm_key_vault.this.name
}

output "writer_assignment_id" {
  description = "The writer's role assignment (secrets Terraform writes depend on it)."
  value       = azurerm_role_assignment.writer.id
}
