# Everything the Helm chart's values need (python -m deploy.render --tf-outputs reads these names).

output "tenant_id" {
  description = "Entra ID tenant (auth.tenantId)."
  value       = data.azurerm_client_config.current.tenant_id
}

output "api_client_id" {
  description = "The API app's client id (auth.clientId)."
  value       = var.api_client_id
}

output "api_app_id_uri" {
  description = "The API app's application id URI (auth.appIdUri)."
  value       = var.api_app_id_uri
}

output "namespace" {
  description = "Kubernetes namespace the identities are federated with."
  value       = var.namespace
}

output "release_name" {
  description = "Helm release name the identities are federated with."
  value       = var.release_name
}

output "public_host" {
  description = "The gateway's public host name (ingress.host)."
  value       = trimsuffix(azurerm_dns_a_record.gateway.fqdn, ".")
}

output "acr_login_server" {
  description = "Registry of the services' image (image.repository = <login server>/exthub)."
  value       = data.azurerm_container_registry.core.login_server
}

output "app_gateway_subnet_cidrs" {
  description = "Where Application Gateway reaches the gateway pods from (networkPolicy.ingressFromCidrs)."
  value       = data.azurerm_subnet.app_gateway.address_prefixes
}

output "cosmos_endpoint" {
  description = "azure.cosmos.endpoint."
  value       = module.cosmos.endpoint
}

output "cosmos_database" {
  description = "azure.cosmos.database."
  value       = module.cosmos.database
}

output "servicebus_namespace" {
  description = "azure.serviceBus.namespace (fully qualified)."
  value       = module.servicebus.namespace_fqdn
}

output "blob_account_url" {
  description = "azure.blob.accountUrl."
  value       = module.storage.blob_account_url
}

output "blob_container" {
  description = "azure.blob.container."
  value       = module.storage.container
}

output "key_vault_name" {
  description = "keyVault.name."
  value       = module.keyvault.name
}

output "appinsights_secret_name" {
  description = "keyVault.secrets.appInsightsConnectionString."
  value       = azurerm_key_vault_secret.appinsights.name
}

output "page_token_secret_name" {
  description = "keyVault.secrets.pageToken (created by an operator, docs/deploy.md)."
  value       = local.page_token_secret
}

output "identity_client_ids" {
  description = "identities.<service>.clientId, and the KEDA scaler's."
  value       = merge({ for s in local.services : s => module.identity[s].client_id }, { scaler = module.scaler_identity.client_id })
}
