"""Command implementations of the CLI, one module per area; ``cli.py`` assembles them.

Each module defines click commands and a ``register(group)`` function. They share
:mod:`edge_provision._cli.common` and never import ``edge_provision.cli``.
"""
