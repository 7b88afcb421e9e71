output "blob_account_url" {
  description = "Blob endpoint (EXTHUB_AZURE__BLOB_ACCOUNT_URL)."
  value       = trimsuffix(azurerm_storage_account.this.primary_blob_endpoint, "/")
}

output "container" {
  description = "The objects container (EXTHUB_AZURE__BLOB_CONTAINER)."
  value       = azurerm_storage_container.objects.name
}

output "account_id" {
  description = "Account resource id."
  value       = azurerm_storage_account.this.id
}
