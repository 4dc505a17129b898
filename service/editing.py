"""The worker's view of editor_core: load the editor, compute and store edit rows, solve.

Joint mode: each edit's rows (keys and value differences, computed once against the *base*
weights) are stored under `data_dir/edits/{edit_id}.safetensors` with a JSON sidecar
holding their sha256; a version's weights are `base + solve(all live edits)`.  With an
editor that re-spreads (values="optimise"), each edit also stores its residual target and
subject, and every version re-spreads the targets of all live edits from the base weights.
Sequential mode: each batch is solved against the parent version's weights.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from service.versions import VersionCorruptError, file_sha256

log = logging.getLogger(__name__)

MAX_CHANGED_LISTED = 20  # changed protected prompts a job's check names

SHIPPED_EDITOR = (
    Path(__file__).resolve().parent.parent / "editor_core" / "checkpoints" / "smollm2-135m-instruct"
)


def load_editor(loaded: Any, checkpoint: str | None, config: dict[str, Any]) -> Any:
    """The configured editor; a random-init one (with a loud warning) when none exists."""
    from editor_core.editor import EditorConfig, MalmenEditor, config_fields

    path = Path(checkpoint) if checkpoint else SHIPPED_EDITOR
    if checkpoint or _fits(path, loaded):
        if not path.is_dir():
            raise FileNotFoundError(f"editor checkpoint {path} does not exist")
        log.info("editor checkpoint %s", path)
        return MalmenEditor.from_checkpoint(path, loaded, **config)
    log.warning(
        "!!! no editor checkpoint for this model (the shipped one, %s, is for the default "
        "model and its layers): using a RANDOM-INIT editor. Edits will barely change the "
        "model. Train one with `factpatch train` or set FACTPATCH_EDITOR.",
        path,
    )
    return MalmenEditor.random_init(loaded, config=EditorConfig(**config_fields(config)))


def _fits(path: Path, loaded: Any) -> bool:
    """Whether the shipped checkpoint at `path` was trained for exactly the modules edited
    here.  Only the implicit default is checked this way: a checkpoint that was asked for
    explicitly must fit, and `from_checkpoint` raises when it does not."""
    try:
        modules = json.loads((path / "config.json").read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return path.is_dir()  # let from_checkpoint report a damaged shipped checkpoint
    return bool({n: tuple(s) for n, s in modules.items()} == loaded.adapter.shapes())


@dataclass
class StoredEdit:
    edit_id: str
    prompt: str
    target: str
    rows: dict[str, Any]  # module name -> EditRows of this one edit
    subject: str | None = None
    residual_target: torch.Tensor | None = None  # (n_slots, H): re-spreading editors only
    # the edit ids the residual target was optimised together with (its subject group)
    target_group: tuple[str, ...] | None = None
    # the value clamp the residual target was found with (None: max_norm, stored before
    # the clamp rule): joint versions re-optimise a target whose clamp is not the solve's
    target_clamp: float | None = None
    # prompts about the subject whose next token the edit holds (EditRequest.keep)
    keep: tuple[str, ...] = ()
    paraphrases: tuple[str, ...] = ()  # the fact in other words (EditRequest.paraphrases)

    def request(self) -> Any:
        from editor_core.encoding import EditRequest

        return EditRequest(
            self.prompt, self.target, self.subject or None, self.keep, self.paraphrases
        )


RESIDUAL_TARGET = "residual_target"  # no "/keys" suffix: never read as a module's rows


class RowStore:
    """Per-edit rows on disk, with an in-memory cache (rows are a few KB-MB per edit)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, StoredEdit] = {}

    def save(self, edit: StoredEdit) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for name, r in edit.rows.items():
            tensors[f"{name}/keys"] = r.keys.detach().cpu().float().contiguous()  # (n, d_in)
            tensors[f"{name}/values"] = r.values.detach().cpu().float().contiguous()  # (n, d_out)
        if edit.residual_target is not None:
            tensors[RESIDUAL_TARGET] = edit.residual_target.detach().cpu().float().contiguous()
        path = self.root / f"{edit.edit_id}.safetensors"
        tmp = path.with_suffix(".partial")
        save_file(tensors, str(tmp))
        tmp.replace(path)
        sidecar = {
            "edit_id": edit.edit_id,
            "prompt": edit.prompt,
            "target": edit.target,
            "subject": edit.subject,
            "target_group": list(edit.target_group) if edit.target_group else None,
            "target_clamp": edit.target_clamp,
            "keep": list(edit.keep),
            "paraphrases": list(edit.paraphrases),
            "sha256": file_sha256(path),
        }
        (self.root / f"{edit.edit_id}.json").write_text(json.dumps(sidecar))
        self._cache[edit.edit_id] = edit

    def load(self, edit_id: str) -> StoredEdit:
        if edit_id in self._cache:
            return self._cache[edit_id]
        from editor_core.editor import EditRows

        meta = json.loads((self.root / f"{edit_id}.json").read_text())
        path = self.root / f"{edit_id}.safetensors"
        if file_sha256(path) != meta["sha256"]:
            raise VersionCorruptError(f"stored rows of edit {edit_id} fail their sha256")
        flat = load_file(str(path))
        rows: dict[str, Any] = {}
        for key, t in flat.items():
            if key.endswith("/keys"):
                name = key[: -len("/keys")]
                values = flat[f"{name}/values"]
                owner = torch.zeros(t.shape[0], dtype=torch.long)
                rows[name] = EditRows(keys=t, values=values, owner=owner)
        edit = StoredEdit(
            edit_id,
            meta["prompt"],
            meta["target"],
            rows,
            meta.get("subject"),
            flat.get(RESIDUAL_TARGET),
            tuple(meta["target_group"]) if meta.get("target_group") else None,
            meta.get("target_clamp"),
            tuple(meta.get("keep") or ()),
            tuple(meta.get("paraphrases") or ()),
        )
        self._cache[edit_id] = edit
        return edit


class EditBackend:
    """Turns batches of edits into new edited-module weights (float32 math, model dtype out)."""

    def __init__(self, loaded: Any, editor: Any, rows: RowStore):
        from editor_core.apply import snapshot

        self.loaded = loaded
        self.adapter = loaded.adapter
        self.editor = editor
        self.rows = rows
        self.base_masters = snapshot(self.adapter)  # float32, row convention
        self.dtype = next(loaded.model.parameters()).dtype
        self.check = True  # score the protected prompts after each version (`protect`)
        self.protected_revision: int | None = None

    def protect(self, prompts: list[Any], check: bool = True, revision: int | None = None) -> None:
        """Protect `prompts` (editor_core LocalityPrompts; [] protects none) in every solve
        from now on (`MalmenEditor.protect`: the answers are read now, from the base weights
        the worker's model holds) and, with `check`, score them after each version
        (`check_protected`).  `revision`: the list's (`service.protected`), recorded with
        every version."""
        # the worker re-reads the list on its base weights: prompts already read are kept
        held = self.editor.protect(prompts, same_weights=True)
        self.check = check
        self.protected_revision = revision
        cfg = self.editor.config
        if held is None:
            log.info("protecting no prompts (revision %s)", revision)
            return
        log.info(
            "protecting %d prompts (weight %g, %s, revision %s, sha256 %s)",
            len(held),
            cfg.protect_weight,
            f"up to {cfg.protect_rounds} re-solves" if cfg.protect_rounds else "all held",
            revision,
            held.sha256[:12],
        )

    def protect_meta(self) -> dict[str, Any]:
        """What a version records about the protected prompts ({} when there are none):
        how many, with what weight, and how many its solve held."""
        held = getattr(self.editor, "protected", None)
        if held is None:
            return {}
        cfg = self.editor.config
        return {
            "protected": {
                "prompts": len(held),
                "weight": cfg.protect_weight,
                "rounds": cfg.protect_rounds,
                "held": len(self.editor.last_held),
                "sha256": held.sha256,
                "revision": self.protected_revision,
            }
        }

    def check_protected(self) -> dict[str, Any] | None:
        """On the weights the model holds now: how many protected prompts keep the unedited
        model's answer at every scored token, and the first changed ones; None without
        protected prompts or with the check off."""
        from editor_core.evaluate import changed_prompts

        held = getattr(self.editor, "protected", None)
        if held is None or not self.check:
            return None
        changed = changed_prompts(self.loaded.model, self.loaded.tokenizer, held.record)
        return {
            "checked": len(held),
            "kept": len(held) - len(changed),
            "changed": [held.prompts[i].prompt for i in changed[:MAX_CHANGED_LISTED]],
        }

    @property
    def editor_sha256(self) -> str | None:
        return getattr(self.editor, "checkpoint_sha256", None)

    def compute(self, edits: list[dict[str, Any]], n_live: int | None = None) -> list[StoredEdit]:
        """Rows of every new edit in ONE editor batch, against the weights now in the model;
        `n_live`: the live edits of the joint solve they go into, these included (default:
        this batch alone) — an optimising editor's value clamp may depend on it."""
        from editor_core.encoding import EditRequest
        from editor_core.joint import split_rows

        # an edit without a subject is keyed on the one its prompt names (subject-keyed
        # editors); the stored edit keeps it, so every joint version reads it the same way
        requests = self.editor.with_subjects(
            [
                EditRequest(
                    e["prompt"],
                    e["target"],
                    e.get("subject") or None,
                    e.get("keep") or (),
                    e.get("paraphrases") or (),
                )
                for e in edits
            ]
        )
        targets: list[torch.Tensor | None] = [None] * len(requests)
        groups: list[tuple[str, ...] | None] = [None] * len(requests)
        clamp = None
        if getattr(self.editor, "respreads", False):
            found = self.editor.residual_targets(requests, n_edits=n_live)
            z = found.z.cpu()  # (n, n_slots, H)
            rows = self.editor.joint_rows(requests, z)  # this batch alone: kept for fallback
            targets = list(z)
            groups = list(self.editor.target_groups(requests, [e["edit_id"] for e in edits]))
            clamp = found.clamp
        else:
            rows = self.editor.compute_rows(requests)
        per_edit = split_rows(rows, len(requests))
        return [
            StoredEdit(
                e["edit_id"],
                e["prompt"],
                e["target"],
                r,
                req.subject,
                zt,
                g,
                clamp,
                req.keep,
                req.paraphrases,
            )
            for e, req, r, zt, g in zip(edits, requests, per_edit, targets, groups, strict=True)
        ]

    def joint(
        self, live: list[str], new: list[StoredEdit], withdraw: set[str]
    ) -> tuple[dict[str, torch.Tensor], list[str], dict[str, Any]]:
        """(new weights, live edit ids, metrics) for base + solve(lineage + new − withdrawn)."""
        from editor_core.apply import new_weights
        from editor_core.editor import WeightDelta
        from editor_core.joint import EditLedger

        t0 = time.perf_counter()
        ledger = EditLedger()
        for edit_id in live:
            if edit_id not in withdraw:
                e = self.rows.load(edit_id)
                ledger.add(edit_id, e.prompt, e.rows)
        superseded = []
        for e in new:
            old = ledger.add(e.edit_id, e.prompt, e.rows)
            if old is not None:
                superseded.append(old)
        ids = list(ledger.ids())
        if not ids:  # everything withdrawn: the base weights themselves
            tensors = {
                n: self.adapter.from_rows(m).to(self.dtype).contiguous()
                for n, m in self.base_masters.items()
            }
            return tensors, [], {"n_live": 0, "solve_s": 0.0}
        live_edits = {e.edit_id: e for e in new}
        live_edits.update({i: self.rows.load(i) for i in ids if i not in live_edits})
        respread = self._respread(ids, live_edits)
        ed = self.editor
        if respread is not None:
            requests, z, _ = respread
            delta = ed.respread_delta(requests, z)
        else:
            shifts = ed.hold_protected(
                lambda: ledger.solve(ed.lambdas(), ed.config.solve_dtype, ed.priors(len(ids)))
            )
            rows = {
                n: _cat_rows([ledger.rows_for(i)[n] for i in ids if n in ledger.rows_for(i)])
                for n in shifts
            }
            delta = ed.gated(WeightDelta(shifts, rows))
        shifts = delta.shifts
        tensors = new_weights(self.adapter, delta, self.base_masters)  # gated: hooks, not weights
        metrics = {
            "n_live": len(ids),
            "respread": respread is not None,
            "preserve": self.editor.preserve_weight(len(ids)),  # μ of this solve
            "targets_reoptimised": respread[2] if respread is not None else 0,
            "superseded": superseded,
            "solve_s": round(time.perf_counter() - t0, 4),
            "shift_norms": {n: round(float(s.float().norm()), 6) for n, s in shifts.items()},
            "scope_gate": delta.gate.threshold if delta.gate is not None else None,
            **self.protect_meta(),
        }
        return tensors, ids, metrics

    def _respread(
        self, ids: list[str], edits: dict[str, StoredEdit]
    ) -> tuple[list[Any], torch.Tensor, int] | None:
        """(every live edit's request and residual target, to re-spread from the base
        weights — the worker's model holds them in joint mode —, how many residual targets
        were re-optimised because a subject's live edits had not been optimised together,
        or for a new value clamp), or None when the editor does
        not re-spread or an edit has no residual target of this editor's shape (stored by
        another editor configuration): then the stored rows are summed instead."""

        if not getattr(self.editor, "respreads", False):
            return None
        targets = [edits[i].residual_target for i in ids]
        hidden = int(self.loaded.model.get_output_embeddings().weight.shape[1])
        shape = (self.editor.config.value_opt.n_slots, hidden)
        if any(z is None or tuple(z.shape) != shape for z in targets):
            log.warning("some live edits have no residual target for this editor: summing rows")
            return None
        requests = [edits[i].request() for i in ids]
        z, groups, redone = self.editor.refresh_targets(
            requests,
            ids,
            targets,
            [edits[i].target_group for i in ids],
            clamps=[edits[i].target_clamp for i in ids],
        )
        clamp = self.editor.target_clamp(len(ids))
        for k in redone:  # re-optimised (a subject's live edits as one group, or a new clamp)
            e = edits[ids[k]]
            e.residual_target, e.target_group, e.target_clamp = z[k], groups[k], clamp
            self.rows.save(e)
        if redone:
            log.info(
                "re-optimised the residual targets of %d edits (subjects edited in several "
                "batches, or the value clamp of %d live edits: %g)",
                len(redone),
                len(ids),
                clamp,
            )
        return requests, z, len(redone)

    def sequential(
        self, new: list[StoredEdit], parent: dict[str, torch.Tensor], parent_live: list[str]
    ) -> tuple[dict[str, torch.Tensor], list[str], dict[str, Any]]:
        """Solve the batch against the parent's weights (rows were computed on them; the
        model holds them while this runs).  Holding protected prompts, a re-spreading
        editor spreads the batch's residual targets again in each round: its rows depend
        on what the solve holds."""
        from editor_core.apply import new_weights

        t0 = time.perf_counter()
        merged: dict[str, Any] = {}
        for name in self.adapter.names:
            parts = [e.rows[name] for e in new if name in e.rows]
            merged[name] = _cat_rows(parts)
        masters = {n: self.adapter.to_rows(t).float() for n, t in parent.items()}
        ed = self.editor
        targets = [e.residual_target for e in new if e.residual_target is not None]
        if ed.protected is not None and ed.respreads and len(targets) == len(new):
            requests = [e.request() for e in new]
            shifts = ed.respread_solve(requests, torch.stack(targets), masters=masters)
        else:
            shifts = ed.hold_protected(lambda: ed.solve(merged, len(new)), masters=masters)
        tensors = new_weights(self.adapter, shifts, masters)
        metrics = {
            "n_live": len(parent_live) + len(new),
            "solve_s": round(time.perf_counter() - t0, 4),
            **self.protect_meta(),
        }
        return tensors, parent_live + [e.edit_id for e in new], metrics


def _cat_rows(parts: list[Any]) -> Any:
    from editor_core.editor import EditRows

    owners = [torch.full((p.keys.shape[0],), i, dtype=torch.long) for i, p in enumerate(parts)]
    return EditRows(
        keys=torch.cat([p.keys for p in parts]),
        values=torch.cat([p.values for p in parts]),
        owner=torch.cat(owners),
    )
