"""Local stand-ins for the Azure services (development and tests only; not shipped in the image)."""
