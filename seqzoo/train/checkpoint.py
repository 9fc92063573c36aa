"""Checkpoints: atomic directories of safetensors + JSON that load without unpickling anything.

A checkpoint is a directory ``<run_dir>/step_000010/`` holding

- ``model.safetensors``: the model's tensors; a tensor shared under several names (a head tied to the
  embedding) is stored once and its other names are recorded as aliases in ``state.json``;
- ``optimizer.safetensors``: every tensor of the optimiser state, flattened to names ``<param index>.<key>``
  (``3.exp_avg``); the optimiser's non-tensor parts (parameter groups, scalars) go to ``state.json``;
- ``state.json``: the step, the scheduler state, the RNG states (torch CPU/CUDA, python ``random``, numpy; one
  entry per data-parallel rank), the run config (whatever the caller passes, so a CLI can rebuild the model),
  metrics, the format version, and a manifest of SHA-256 hashes and sizes of the two tensor files. The JSON
  carries the SHA-256 of its own canonical form, so an edited or truncated ``state.json`` is detected too.

Writing is atomic: files go into a fresh hidden directory in the same parent, are fsynced, and the directory is
renamed into place (then the parent is fsynced), so a crash never leaves a half-written checkpoint under the
final name. The ``latest`` file in the run directory names the newest checkpoint and is replaced atomically too.
Old checkpoints are pruned by renaming them out of the way before deleting them.

Loading reads only JSON and safetensors (never ``pickle``/``torch.load``), checks the manifest and refuses a
missing, truncated or tampered file with a one-line :class:`SeqzooError` naming the file and what is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from torch import nn

from ..core.errors import SeqzooError

FORMAT = "seqzoo-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
LATEST_FILE = "latest"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_HINT = "re-train or use another checkpoint"


# ---------------------------------------------------------------------------------------------------------------
# RNG state as JSON
# ---------------------------------------------------------------------------------------------------------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng_state() -> dict:
    """This process's RNG states (torch CPU, CUDA if initialised, python ``random``, numpy) as JSON values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": _b64(torch.get_rng_state()),
        "python": [version, list(internal), gauss],
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states are restored when CUDA is available)."""
    torch.set_rng_state(_unb64(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if state.get("cuda") and torch.cuda.is_available():
        states = [_unb64(s) for s in state["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
        else:
            torch.cuda.set_rng_state(states[0])


# ---------------------------------------------------------------------------------------------------------------
# Flattening model and optimiser state to named tensors
# ---------------------------------------------------------------------------------------------------------------
def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _model_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, aliases)``: each distinct tensor once, and ``alias name -> stored name`` for shared ones."""
    tensors, aliases, seen = {}, {}, {}
    for name, t in unwrap_model(model).state_dict().items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().to("cpu", copy=True).contiguous()  # a copy never shares storage
    return tensors, aliases


def _optimizer_parts(optimizer: torch.optim.Optimizer | None) -> tuple[dict[str, torch.Tensor], dict]:
    if optimizer is None:
        return {}, {"param_groups": [], "scalars": {}}
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_state_dict(tensors: dict[str, torch.Tensor], parts: dict) -> dict:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = t
    for pid, values in parts["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in parts["param_groups"]]
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------------------------
# Atomic file-system helpers
# ---------------------------------------------------------------------------------------------------------------
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt", "writer": FORMAT})
    _fsync_path(path)


def _file_digest(path: Path) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "size": path.stat().st_size}


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _write_latest(run_dir: Path, name: str) -> None:
    tmp = run_dir / f".{LATEST_FILE}.tmp-{uuid.uuid4().hex}"
    try:
        _write_bytes(tmp, (name + "\n").encode("utf-8"))
        os.replace(tmp, run_dir / LATEST_FILE)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_path(run_dir)


def _remove_dir(path: Path) -> None:
    """Delete a directory without ever leaving it half-deleted under its own name."""
    trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex}"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _clean_leftovers(run_dir: Path) -> None:
    """Remove temporary directories left by a writer that was killed (only one process writes a run dir)."""
    for p in run_dir.iterdir():
        if p.name.startswith((".tmp-", ".trash-")) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(f".{LATEST_FILE}.tmp-") and p.is_file():
            p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------------------
def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """The directory name used for step ``step`` of a run: ``run_dir/step_000010``."""
    return Path(run_dir) / f"step_{step:06d}"


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler_state: dict | None = None, step: int = 0, config: dict | None = None,
                    metrics: dict | None = None, rng: list[dict] | None = None, extra: dict | None = None,
                    update_latest: bool = True) -> Path:
    """Write a checkpoint directory at ``path`` atomically and point ``<parent>/latest`` at it.

    ``rng`` is a list of RNG states, one per data-parallel rank (default: this process's state);
    ``scheduler_state`` is a JSON-friendly dict (see :func:`seqzoo.train.optim.scheduler_state`). An existing
    checkpoint at ``path`` is replaced. Returns the path.
    """
    final = Path(path)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(parent)
    model_tensors, aliases = _model_tensors(model)
    opt_tensors, opt_parts = _optimizer_parts(optimizer)
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"aliases": aliases, "num_parameters": sum(t.numel() for t in model_tensors.values()),
                  "num_tensors": len(model_tensors)},
        "optimizer": opt_parts,
        "scheduler": scheduler_state,
        "rng": rng if rng is not None else [capture_rng_state()],
        "config": config or {},
        "metrics": metrics or {},
        "extra": extra or {},
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=parent))
    try:
        os.chmod(tmp, 0o755)
        _write_safetensors(tmp / MODEL_FILE, model_tensors)
        _write_safetensors(tmp / OPTIMIZER_FILE, opt_tensors)
        state["manifest"] = {name: _file_digest(tmp / name) for name in (MODEL_FILE, OPTIMIZER_FILE)}
        try:
            body = _canonical(state)
        except (TypeError, ValueError) as e:
            raise SeqzooError(f"cannot save checkpoint {final}: state is not JSON-serialisable ({e})") from None
        state["state_sha256"] = hashlib.sha256(body).hexdigest()
        _write_bytes(tmp / STATE_FILE, json.dumps(state, indent=1, sort_keys=True).encode("utf-8"))
        _fsync_path(tmp)
        if final.exists():
            _remove_dir(final)
        os.replace(tmp, final)
        _fsync_path(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if update_latest:
        _write_latest(parent, final.name)
    return final


def prune_checkpoints(run_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` ``step_*`` checkpoints of a run (never the one ``latest`` names)."""
    run_dir = Path(run_dir)
    latest = latest_checkpoint(run_dir)
    dirs = _step_dirs(run_dir)
    removed = []
    for _, p in dirs[:-keep] if keep > 0 else []:
        if latest is not None and p.resolve() == latest.resolve():
            continue
        _remove_dir(p)
        removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------------------------------
# Finding and loading
# ---------------------------------------------------------------------------------------------------------------
def _step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run directory, or ``None``.

    Uses the ``latest`` pointer, but a newer ``step_*`` directory wins (a crash between renaming a checkpoint into
    place and updating the pointer leaves the pointer one behind).
    """
    run_dir = Path(run_dir)
    candidates = _step_dirs(run_dir)
    pointer = run_dir / LATEST_FILE
    if pointer.is_file():
        target = run_dir / pointer.read_text(encoding="utf-8", errors="replace").strip()
        if target.name and (target / STATE_FILE).is_file():
            m = _STEP_DIR.match(target.name)
            step = int(m.group(1)) if m else _read_step(target)
            candidates.append((step, target))
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[0])[1]


def _read_step(path: Path) -> int:
    try:
        return int(json.loads((path / STATE_FILE).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a checkpoint directory, else the latest checkpoint of the run directory."""
    p = Path(path)
    if not p.exists():
        raise SeqzooError(f"checkpoint path {str(p)!r} does not exist; give a checkpoint or run directory")
    if not p.is_dir():
        raise SeqzooError(f"checkpoint path {str(p)!r} is a file; give a checkpoint directory or a run directory")
    if (p / STATE_FILE).exists() or (p / MODEL_FILE).exists():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise SeqzooError(f"no checkpoint in {str(p)!r} (no step_* directory with {STATE_FILE}); "
                          "train first or give a checkpoint directory")
    return latest


def _read_state(ckpt: Path) -> dict:
    f = ckpt / STATE_FILE
    if not f.is_file():
        raise SeqzooError(f"checkpoint {ckpt}: {STATE_FILE} is missing; {_HINT}")
    try:
        state = json.loads(f.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SeqzooError(f"checkpoint {ckpt}: {STATE_FILE} is corrupt (not valid JSON: {e}); {_HINT}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SeqzooError(f"checkpoint {ckpt}: {STATE_FILE} is not a seqzoo checkpoint state; {_HINT}")
    claimed = state.pop("state_sha256", None)
    if claimed != hashlib.sha256(_canonical(state)).hexdigest():
        raise SeqzooError(f"checkpoint {ckpt}: {STATE_FILE} is corrupt or was edited (integrity hash mismatch); "
                          f"{_HINT}")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SeqzooError(f"checkpoint {ckpt}: {STATE_FILE} has format version {version!r}; this seqzoo reads "
                          f"versions up to {FORMAT_VERSION}; upgrade seqzoo")
    return state


def _read_verified(ckpt: Path, state: dict, name: str) -> bytes:
    f = ckpt / name
    expected = state.get("manifest", {}).get(name)
    if expected is None:
        raise SeqzooError(f"checkpoint {ckpt}: {STATE_FILE} has no manifest entry for {name}; {_HINT}")
    if not f.is_file():
        raise SeqzooError(f"checkpoint {ckpt}: {name} is missing; {_HINT}")
    data = f.read_bytes()
    if len(data) != expected["size"]:
        what = "truncated" if len(data) < expected["size"] else "too long"
        raise SeqzooError(f"checkpoint {ckpt}: {name} is corrupt ({what}: {len(data)} bytes, expected "
                          f"{expected['size']}); {_HINT}")
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise SeqzooError(f"checkpoint {ckpt}: {name} is corrupt (sha256 mismatch); {_HINT}")
    return data


def _load_tensors(ckpt: Path, state: dict, name: str) -> dict[str, torch.Tensor]:
    data = _read_verified(ckpt, state, name)
    try:
        return safetensors.torch.load(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt file
        raise SeqzooError(f"checkpoint {ckpt}: {name} is corrupt (not readable as safetensors: "
                          f"{type(e).__name__}); {_HINT}") from None


def _model_state_dict(ckpt: Path, state: dict) -> dict[str, torch.Tensor]:
    tensors = _load_tensors(ckpt, state, MODEL_FILE)
    for alias, target in state["model"].get("aliases", {}).items():
        if target not in tensors:
            raise SeqzooError(f"checkpoint {ckpt}: {STATE_FILE} names alias {alias!r} of missing tensor "
                              f"{target!r}; {_HINT}")
        tensors[alias] = tensors[target]
    return tensors


@dataclass
class Checkpoint:
    """A loaded, verified checkpoint (see :func:`load_checkpoint`)."""

    path: Path
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict | None
    scheduler_state: dict | None
    rng: list[dict]
    config: dict
    metrics: dict
    extra: dict = field(default_factory=dict)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and verify a checkpoint; ``path`` is a checkpoint directory or a run directory (its latest one)."""
    ckpt = resolve_checkpoint(path)
    state = _read_state(ckpt)
    model_state = _model_state_dict(ckpt, state)
    opt_tensors = _load_tensors(ckpt, state, OPTIMIZER_FILE)
    opt_parts = state.get("optimizer") or {"param_groups": [], "scalars": {}}
    optimizer_state = _optimizer_state_dict(opt_tensors, opt_parts) if opt_parts["param_groups"] else None
    return Checkpoint(path=ckpt, step=int(state["step"]), model_state=model_state,
                      optimizer_state=optimizer_state, scheduler_state=state.get("scheduler"),
                      rng=list(state.get("rng") or []), config=state.get("config") or {},
                      metrics=state.get("metrics") or {}, extra=state.get("extra") or {})


def apply_model_state(model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy ``tensors`` into ``model``, with a one-line error naming the first mismatch."""
    model = unwrap_model(model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s) (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) (first: {unexpected[0]})")
        raise SeqzooError(f"checkpoint {where} does not match this model: {', '.join(parts)}; "
                          "build the model with the checkpoint's config")
    for k, t in expected.items():
        if tuple(t.shape) != tuple(tensors[k].shape):
            raise SeqzooError(f"checkpoint {where} does not match this model: {k} has shape "
                              f"{list(tensors[k].shape)} in the checkpoint, {list(t.shape)} in the model; "
                              "build the model with the checkpoint's config")
    model.load_state_dict(tensors, strict=True)


def load_model_state(path: str | os.PathLike, model: nn.Module) -> dict:
    """Load only the weights of a checkpoint (dir or run dir) into ``model``; returns :func:`checkpoint_info`."""
    ckpt = resolve_checkpoint(path)
    state = _read_state(ckpt)
    apply_model_state(model, _model_state_dict(ckpt, state), str(ckpt))
    return _info(ckpt, state)


def _info(ckpt: Path, state: dict) -> dict:
    return {
        "path": str(ckpt),
        "step": int(state["step"]),
        "format_version": state["format_version"],
        "created": state.get("created"),
        "num_parameters": state["model"]["num_parameters"],
        "num_tensors": state["model"]["num_tensors"],
        "files": {name: entry["size"] for name, entry in state["manifest"].items()},
        "config": state.get("config") or {},
        "metrics": state.get("metrics") or {},
    }


def checkpoint_info(path: str | os.PathLike, *, verify: bool = True) -> dict:
    """Summary of a checkpoint (dir or run dir): path, step, parameter count, file sizes, config, metrics.

    With ``verify`` (the default) both tensor files are checked against the manifest as well.
    """
    ckpt = resolve_checkpoint(path)
    state = _read_state(ckpt)
    if verify:
        for name in (MODEL_FILE, OPTIMIZER_FILE):
            _read_verified(ckpt, state, name)
    return _info(ckpt, state)
