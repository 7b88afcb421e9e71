"""Authentication and authorization: token verification (:mod:`.verifier`), the caller's principal
(:mod:`.principal`) and per-method access rules (:mod:`.access`).

The development issuer, the role names and the dev-issuer constants are the contract's
(:mod:`exthub.contract.dev_tokens`, :mod:`exthub.contract.roles`).
"""
