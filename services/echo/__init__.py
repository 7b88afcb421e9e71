"""The sample extension ``echo``: verifies the hub's signature and echoes its request."""

from services.echo.app import EchoConfig, create_echo_app
from services.echo.signature import (
    SIGNATURE_HEADER,
    FileJwksSource,
    HttpJwksSource,
    JwksSource,
    SignatureInvalid,
    SignatureVerifier,
    StaticJwksSource,
)

__all__ = [
    "SIGNATURE_HEADER",
    "EchoConfig",
    "FileJwksSource",
    "HttpJwksSource",
    "JwksSource",
    "SignatureInvalid",
    "SignatureVerifier",
    "StaticJwksSource",
    "create_echo_app",
]
