# An example environment; copy to <env>.tfvars and replace every value.
#   terraform init -backend-config=backend.hcl
#   terraform plan -var-file=example.tfvars -out plan && terraform apply plan
#   terraform output -json > outputs.json
name        = "exthub"
environment = "example"
location    = "westeurope"

core = {
  resource_group_name          = "platform-example-rg"
  aks_name                     = "platform-example-aks"
  acr_name                     = "platformexampleacr"
  app_gateway_name             = "platform-example-appgw"
  dns_zone_name                = "example.com"
  dns_zone_resource_group_name = "platform-dns-rg"
  vnet_name                    = "platform-example-vnet"
  vnet_resource_group_name     = "platform-example-rg"
  aks_subnet_name              = "aks-nodes"
  app_gateway_subnet_name      = "app-gateway"
}

namespace       = "exthub"
release_name    = "exthub"
api_client_id   = "11111111-1111-1111-1111-111111111111"
api_app_id_uri  = "api://exthub"
dns_record_name = "exthub"

zone_redundant                = true
cosmos_max_throughput         = 4000
servicebus_capacity           = 1
servicebus_max_delivery_count = 10
storage_replication_type      = "ZRS"
log_retention_days            = 90
operator_ip_ranges            = ["203.0.113.0/24"]

tags = {
  owner = "platform-team"
}
