"""The bundled LASER reference model (STA → GSTA → fusion), its baselines and the offline table.

Needs the `torch` extra (`pip install 'seqvault[torch]'`). Importing this package does not import
torch; import the submodules (`seqvault.model.laser`, `.baselines`, `.evaluate`, ...) for that.
"""

from __future__ import annotations
