"""editor_core — MALMEN (Tan, Zhang, Fu, ICLR 2024) as a plain library.

Load a causal LM, compute a weight delta for many fact corrections at once, apply it,
restore it.  This package never touches HTTP, Redis or environment variables.
"""

from editor_core.adapters import ModelAdapter
from editor_core.config import ARCHITECTURES, ArchSpec, ModelSpec, UnknownArchitectureError
from editor_core.encoding import EditBatch, EditRequest, encode_edits
from editor_core.loading import DEFAULT_MODEL, load_model

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "ArchSpec",
    "EditBatch",
    "EditRequest",
    "ModelAdapter",
    "ModelSpec",
    "UnknownArchitectureError",
    "encode_edits",
    "load_model",
]
