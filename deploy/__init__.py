"""Deployment tooling: the runtime lock for the image, the one command that renders a deployment
(``python -m deploy.render``), the signing-key helper and the installer of the offline checkers."""
