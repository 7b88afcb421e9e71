# The stack's outputs, unchanged: `terraform output -json > outputs.json` feeds python -m deploy.render.

output "tenant_id" {
  description = "Entra ID tenant (auth.tenantId)."
  value       = module.exthub.tenant_id
}

output "api_client_id" {
  description = "The API app's client id (auth.clientId)."
  value       = module.exthub.api_client_id
}

output "api_app_id_uri" {
  description = "The API app's application id URI (auth.appIdUri)."
  value       = module.exthub.api_app_id_uri
}

output "namespace" {
  description = "Kubernetes namespace the identities are federated with."
  value       = module.exthub.namespace
}

output "release_name" {
  description = "Helm release name the identities are federated with."
  value       = module.exthub.release_name
}

output "public_host" {
  description = "The gateway's public host name (ingress.host)."
  value       = module.exthub.public_host
}

output "acr_login_server" {
  description = "Registry of the services' image (image.repository = <login server>/exthub)."
  value       = module.exthub.acr_login_server
}

output "app_gateway_subnet_cidrs" {
  description = "Where Application Gateway reaches the gateway pods from (networkPolicy.ingressFromCidrs)."
  value       = module.exthub.app_gateway_subnet_cidrs
}

output "cosmos_endpoint" {
  description = "azure.cosmos.endpoint."
  value       = module.exthub.cosmos_endpoint
}

output "cosmos_database" {
  description = "azure.cosmos.database."
  value       = module.exthub.cosmos_database
}

output "servicebus_namespace" {
  description = "azure.serviceBus.namespace (fully qualified)."
  value       = module.exthub.servicebus_namespace
}

output "blob_account_url" {
  description = "azure.blob.accountUrl."
  value       = module.exthub.blob_account_url
}

output "blob_container" {
  description = "azure.blob.container."
  value       = module.exthub.blob_container
}

output "key_vault_name" {
  description = "keyVault.name."
  value       = module.exthub.key_vault_name
}

output "appinsights_secret_name" {
  description = "keyVault.secrets.appInsightsConnectionString."
  value       = module.exthub.appinsights_secret_name
}

output "page_token_secret_name" {
  description = "keyVault.secrets.pageToken (created by an operator, docs/deploy.md)."
  value       = module.exthub.page_token_secret_name
}

output "identity_client_ids" {
  description = "identities.<service>.clientId, and the KEDA scaler's."
  value       = module.exthub.identity_client_ids
}
