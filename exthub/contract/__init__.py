"""What the hub's clients and its services share, at the level of the contract.

Depends only on the generated stubs (``gen/python``) and pinned libraries, never on ``services``: the
services import from here (dependencies point inward), so a client installs without the server.

* :mod:`exthub.contract.states` — which ``Execution.State`` values are terminal.
* :mod:`exthub.contract.roles` — the app role names.
* :mod:`exthub.contract.errors` — ``google.rpc.Status`` / ``ErrorInfo`` of a failed call or a stored error.
* :mod:`exthub.contract.execution` — execution models, the default execution timeout, what an attempt's outcome
  does to its execution.
* :mod:`exthub.contract.queue` — the work-queue message of an asynchronous attempt.
* :mod:`exthub.contract.structs` — a ``google.protobuf.Struct`` as plain JSON values.
* :mod:`exthub.contract.signatures` — verifying the hub's request signatures and direct tokens (public JWKS).
* :mod:`exthub.contract.dev_tokens` — the local development issuer and cached development tokens.
* :mod:`exthub.contract.jwk`, :mod:`exthub.contract.keyfiles` — JWK and key-file helpers they share.
"""
