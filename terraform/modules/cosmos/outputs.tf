output "endpoint" {
  description = "Account endpoint (EXTHUB_AZURE__COSMOS_ENDPOINT)."
  value       = azurerm_cosmosdb_account.this.endpoint
}

output "database" {
  description = "Database name (EXTHUB_AZURE__COSMOS_DATABASE)."
  value       = azurerm_cosmosdb_sql_database.this.name
}

output "account_id" {
  description = "Account resource id."
  value       = azurerm_cosmosdb_account.this.id
}
