"""What every Azure adapter shares: the credential built once per process (``identity``)."""

from services.platform.azure.identity import AzureIdentity, open_identity

__all__ = ["AzureIdentity", "open_identity"]
