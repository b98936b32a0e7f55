"""What the fleet deployment tests share (a module of its own, not conftest.py, so test files
can import it): where the repository and deploy/ are."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
