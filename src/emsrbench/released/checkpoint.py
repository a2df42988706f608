"""Reading a released checkpoint and renaming its tensors to ours through an explicit table.

A table is a list of :class:`Row`: one per tensor of the release, naming the key it has in our
network's state dict, or saying why our network has no place for it (then its shape, and for
constant buffers its value, are still checked).  :func:`remap` accounts for every key both
ways: a release key without a row, a row without its release key, a tensor of the wrong shape
and a key of ours that no row fills are each a one-line :class:`EmsrError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import EmsrError

# Wrappers a state dict may sit under, most preferred first.  The study's training scripts save
# bare state dicts (train_stage{1,2,3}.py unwrap DistributedDataParallel first); BasicSR, whose
# SPyNet file the study uses, nests under "params" (and "params_ema" for EMA weights).
WRAPPERS = ("params_ema", "params", "state_dict")
# What torch.save(DataParallel(model).state_dict()) puts before every key.
DDP_PREFIX = "module."


@dataclass(frozen=True)
class Row:
    release: str  # key in the released file
    ours: str | None  # key in our network's state dict; None: our network has no place for it
    why: str = ""  # for ours None: why the tensor is not needed
    shape: tuple | None = None  # for ours None: the shape the release has there
    value: torch.Tensor | None = None  # for ours None: a constant the release must hold (buffers)
    linear: bool = False  # an nn.Linear weight (out, in) that our 1x1 conv holds as (out, in, 1, 1)
    optional: bool = False  # may be absent from the file (buffers some savers leave out)


def conv(release: str, ours: str) -> list[Row]:
    """weight and bias of a conv (or GroupNorm, or transposed conv) kept under another name."""
    return [Row(f"{release}.{p}", f"{ours}.{p}") for p in ("weight", "bias")]


def rename(rows: list[Row], release_prefix: str, our_prefix: str) -> list[Row]:
    """``rows`` of a sub-network moved under ``release_prefix.`` / ``our_prefix.``."""

    def join(prefix, key):
        return f"{prefix}.{key}" if prefix else key

    return [
        Row(
            join(release_prefix, r.release),
            None if r.ours is None else join(our_prefix, r.ours),
            r.why,
            r.shape,
            r.value,
            r.linear,
            r.optional,
        )
        for r in rows
    ]


def unused(rows: list[Row], shapes: dict[str, tuple], why: str) -> list[Row]:
    """``rows`` turned into tensors our network does not hold, each with the shape it has in
    ``shapes`` (the state-dict shapes of the module the rows were written for)."""
    return [Row(r.release, None, why, shapes[r.ours], r.value, r.linear, r.optional) for r in rows]


def shapes_of(module: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def meta_shapes(build) -> dict[str, tuple]:
    """State-dict shapes of the module ``build()`` makes, built on the meta device (no memory,
    no initialisation cost)."""
    with torch.device("meta"):
        return shapes_of(build())


def read_release(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released checkpoint, unwrapped (:data:`WRAPPERS`, :data:`DDP_PREFIX`)."""
    path = Path(path)
    if not path.is_file():
        raise EmsrError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, foreign pickle, not a torch file: each its own type
        text = str(err).strip()
        first = text.splitlines()[0].split(". ")[0] if text else ""  # torch's messages run on for lines
        raise EmsrError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {first})") from None
    state = payload
    if isinstance(payload, dict):
        for key in WRAPPERS:
            if isinstance(payload.get(key), dict):
                state = payload[key]
                break
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        what = sorted(map(str, payload))[:5] if isinstance(payload, dict) else type(payload).__name__
        raise EmsrError(f"{path}: not a state dict of tensors (top level: {what})")
    if all(k.startswith(DDP_PREFIX) for k in state):
        state = {k[len(DDP_PREFIX) :]: v for k, v in state.items()}
    return state


def _values(t: torch.Tensor) -> list[float]:
    return [round(x, 4) for x in t.flatten().tolist()]


def remap(
    state: dict[str, torch.Tensor], rows: list[Row], ours: dict[str, tuple], source: str, what: str
) -> dict[str, torch.Tensor]:
    """Our state dict (keys and shapes of ``ours``) from the release ``state`` through ``rows``.

    ``source`` (the file) and ``what`` (e.g. "GPEMSR stage II x8 indexer") start every message."""
    rows_by_key = {}
    for row in rows:
        if row.release in rows_by_key:
            raise EmsrError(f"{source}: {what} table lists {row.release} twice")  # a table bug, not the file's
        rows_by_key[row.release] = row
    unmapped = [k for k in state if k not in rows_by_key]
    if unmapped:
        raise EmsrError(
            f"{source}: {what}: unmapped key {unmapped[0]} ({len(unmapped)} of the file's {len(state)} keys "
            f"are not in the release layout these settings expect)"
        )
    out: dict[str, torch.Tensor] = {}
    for row in rows:
        if row.release not in state:
            if row.optional:
                continue
            target = f"our {row.ours}" if row.ours else row.why
            raise EmsrError(f"{source}: {what}: missing key {row.release} (for {target})")
        tensor = state[row.release]
        want = ours.get(row.ours) if row.ours else row.shape
        if want is None:
            raise EmsrError(f"{source}: {what}: {row.release} maps to {row.ours}, which these settings do not build")
        want_release = want[:2] if row.linear else want
        if tuple(tensor.shape) != tuple(want_release):
            raise EmsrError(
                f"{source}: {what}: {row.release} has shape {tuple(tensor.shape)}, expected "
                f"{tuple(want_release)}" + (f" (our {row.ours})" if row.ours else "")
            )
        if row.value is not None and not torch.equal(tensor.float(), row.value.float().reshape(tensor.shape)):
            raise EmsrError(
                f"{source}: {what}: {row.release} is {_values(tensor)}, expected the constant "
                f"{_values(row.value)} ({row.why})"
            )
        if row.ours:
            out[row.ours] = tensor.reshape(want) if row.linear else tensor
    for key in ours:
        if key not in out:
            raise EmsrError(
                f"{source}: {what}: no release key fills our {key} (these settings differ from the release)"
            )
    return out
