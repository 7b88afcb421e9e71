"""The Exthub gateway: one Envoy configuration template rendered for ``local`` or ``azure``.

- :mod:`gateway.render`: ``render_config(target, **params)`` and the ``python -m gateway.render`` CLI.
- :mod:`gateway.envoy`: run a real Envoy with a rendered configuration (tests, benchmarks, ``exthub up``).
"""
