"""The shared core of sheepdog: what both halves stand on, importing neither of them.

Config loading (strict YAML, ``${VAR}`` expansion, secrets from ``X_file``, errors that name the
key path), the core settings (listen, state, logging, auth), secrets, the clock, logging, the
database, the runtime, reloads and the operations endpoints.
"""
