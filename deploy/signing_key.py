"""Make a new hub signing key for Key Vault without it passing through Terraform or chart values.

    python -m deploy.signing_key --dir /dev/shm/exthub-key [--previous KID ...]

writes ``<kid>.pem`` (the ES256 private key, mode 0600) and ``keyring.json`` (the new kid first, then the
previous kids that still verify) into a fresh directory, preferably on a RAM-backed file system, and prints
the kid plus the ``az keyvault secret set`` commands that upload both files and the values snippet for the
chart. The files are made by the execution service's own key ring code, so the service loads them as is.
Delete the directory after the upload (``shred -u``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path

from services.execution.signing import MAX_KEYS, SigningKeyRing

KID = re.compile(r"^[A-Za-z0-9_-]{43}$")
MANIFEST = "keyring.json"


def create(directory: Path, previous: Sequence[str] = ()) -> str:
    """A new key in the empty ``directory`` (created 0700), with ``previous`` kids after it in the manifest."""
    for kid in previous:
        if not KID.fullmatch(kid):
            raise ValueError(f"not a key id: {kid!r}")
    if len(previous) >= MAX_KEYS:
        raise ValueError(f"at most {MAX_KEYS - 1} previous keys (the ring keeps {MAX_KEYS})")
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} is not empty")
    ring = SigningKeyRing.load_or_create(directory, hub_id="exthub-key-tool")
    kid = ring.current_kid
    if previous:
        (directory / MANIFEST).write_text(json.dumps({"kids": [kid, *previous]}), encoding="utf-8")
        SigningKeyRing.load_or_create(directory, hub_id="exthub-key-tool")  # the service can read it
    for leftover in directory.glob(".*"):
        leftover.unlink()
    return kid


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m deploy.signing_key", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="a new directory (e.g. under /dev/shm)")
    parser.add_argument("--previous", nargs="*", default=[], help="kids of keys that must still verify")
    parser.add_argument("--vault", default="<key-vault-name>", help="Key Vault name for the printed commands")
    parser.add_argument("--secret", default="exthub-signing-key-N", help="Key Vault secret name for this key")
    args = parser.parse_args(argv)
    kid = create(args.dir, args.previous)
    print(f"kid: {kid}")
    print("upload (the key never leaves this machine otherwise), then delete the directory:")
    print(
        f"  az keyvault secret set --vault-name {args.vault} --name {args.secret} "
        f"--file {args.dir / (kid + '.pem')} --content-type application/x-pem-file --output none"
    )
    print(
        f"  az keyvault secret set --vault-name {args.vault} --name exthub-signing-keyring "
        f"--file {args.dir / MANIFEST} --content-type application/json --output none"
    )
    print(f"  shred -u {args.dir}/* && rmdir {args.dir}")
    print("chart values (keyVault.secrets.signingKeys, newest first):")
    print(f'  - secretName: {args.secret}\n    kid: "{kid}"')
    for old in args.previous:
        print(f'  - secretName: <its secret>\n    kid: "{old}"')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
