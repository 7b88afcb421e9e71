output "connection_string" {
  description = "Application Insights connection string (stored in Key Vault, never in chart values)."
  value       = azurerm_application_insights.this.connection_string
  sensitive   = true
}

output "workspace_id" {
  description = "Log Analytics workspace resource id."
  value       = azurerm_log_analytics_workspace.this.id
}
