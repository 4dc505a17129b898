"""editor_core — MALMEN (Tan, Zhang, Fu, ICLR 2024) as a plain library.

Load a causal LM, compute a weight delta for many fact corrections at once, apply it,
restore it.  This package never touches HTTP, Redis or environment variables.
"""

from editor_core.adapters import ModelAdapter
from editor_core.apply import apply_delta, new_weights, restore, snapshot
from editor_core.config import ARCHITECTURES, ArchSpec, ModelSpec, UnknownArchitectureError
from editor_core.editor import EditorConfig, EditRows, MalmenEditor, WeightDelta
from editor_core.encoding import EditBatch, EditRequest, encode_edits
from editor_core.hypernet import HyperConfig
from editor_core.joint import EditLedger, split_rows
from editor_core.loading import DEFAULT_MODEL, load_model

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "ArchSpec",
    "EditBatch",
    "EditLedger",
    "EditRequest",
    "EditRows",
    "EditorConfig",
    "HyperConfig",
    "MalmenEditor",
    "ModelAdapter",
    "ModelSpec",
    "UnknownArchitectureError",
    "WeightDelta",
    "apply_delta",
    "encode_edits",
    "load_model",
    "new_weights",
    "restore",
    "snapshot",
    "split_rows",
]
