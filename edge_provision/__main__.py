"""``python -m edge_provision`` runs the command-line interface."""

from __future__ import annotations

from edge_provision.cli import main

if __name__ == "__main__":  # pragma: no cover - exercised through subprocess tests
    main()
