"""Train, checkpoint, resume and evaluate an image classifier, on one device or several.

:func:`fit` is the book's training loop: AdamW with a warm-up then cosine schedule, mixed precision
on a GPU (float32 on a CPU, so runs repeat bit for bit), atomic checkpoints after every epoch, exact
resume, early stopping on the validation AUC, and ``DistributedDataParallel`` under ``torchrun``.
Checkpoints hold only tensors and plain containers and are read with ``weights_only=True``.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.std import tqdm  # text progress bars in every front end

import helpers
from helpers.data import FocalLoss
from helpers.io import write_atomically
from helpers.models import build_model

__all__ = ["HISTORY_COLUMNS", "fit", "predict", "plot_history", "load_checkpoint",
           "save_checkpoint", "auc_score", "resolve_amp", "distributed_context",
           "init_distributed", "set_loader_epoch", "tta_variants", "load_run", "run_config"]

#: Columns of the history frame :func:`fit` returns (and ``history.csv``).
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_auc", "lr", "seconds",
                   "images_per_s", "skipped"]

CHECKPOINT_FORMAT = "helpers.train/1"


def distributed_context() -> tuple[int, int]:
    """Return ``(rank, world_size)``: ``(0, 1)`` unless a process group is running.

    Not called in a chapter; used by `set_loader_epoch`, `fit`.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int, int]:
    """Start the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``).

    NCCL on CUDA (one GPU per process, chosen by ``LOCAL_RANK``), Gloo on CPU. Returns
    ``(rank, world_size, local_rank)``; ``(0, 1, 0)`` without ``torchrun``.

    Not called in a chapter; used by `train_run`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            torch.distributed.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        else:
            torch.distributed.init_process_group("gloo")
    return rank, world, local_rank


def _all_sum(values: list[float], device: torch.device, world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    torch.distributed.all_reduce(t)
    return t.tolist()


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None,
                                 torch.Tensor | None] | None:
    """(images, targets, meta, index) of a dict batch (helpers.data) or an (x, y[, meta]) tuple."""
    if batch is None:
        return None
    if isinstance(batch, dict):
        if batch.get("image") is None or len(batch["image"]) == 0:
            return None
        return batch["image"], batch.get("target"), batch.get("meta"), batch.get("index")
    parts = list(batch) if isinstance(batch, (list, tuple)) else [batch]
    images, targets, meta = (parts + [None, None])[:3]
    return images, targets, meta, None


def _forward(net: nn.Module, images: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
    return net(images) if meta is None else net(images, meta)


def _make_criterion(kind: str, pos_weight: float | torch.Tensor | None,
                    device: torch.device) -> nn.Module:
    if kind == "bce":
        pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32,
                                                                device=device).reshape(-1)
        return nn.BCEWithLogitsLoss(pos_weight=pw)
    if kind == "ce":
        return nn.CrossEntropyLoss()
    if kind == "focal":
        return FocalLoss().to(device)
    raise ValueError(f"unknown loss {kind!r}; choose bce, ce or focal")


def _loss(criterion: nn.Module, kind: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if kind in ("bce", "focal") and logits.ndim == 2 and logits.shape[1] == 1:
        return criterion(logits[:, 0], targets.float())
    if kind == "bce":
        raise ValueError(f"loss 'bce' needs a model with 1 output, got {logits.shape[1]}")
    return criterion(logits, targets.long())


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if logits.ndim == 2 and logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=1)


def auc_score(targets: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC: binary (``scores`` 1-D) or macro one-vs-rest (``scores`` ``(n, K)``).

    NaN instead of an error when undefined (one class only); in the multi-class case classes
    absent from ``targets`` are left out of the macro average.

    Not called in a chapter; used by `_evaluate`.
    """
    from sklearn.metrics import roc_auc_score

    targets = np.asarray(targets).astype(int)
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        return float("nan") if len(np.unique(targets)) < 2 else float(roc_auc_score(targets, scores))
    aucs = [roc_auc_score(targets == k, scores[:, k]) for k in range(scores.shape[1])
            if 0 < (targets == k).sum() < len(targets)]
    return float(np.mean(aucs)) if aucs else float("nan")


def resolve_amp(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``amp`` on ``device``, or ``None`` for float32.

    ``"auto"``: bfloat16 on a CUDA GPU that supports it, else float16 (with a gradient scaler);
    float32 on CPU and Apple GPUs (repeatable runs). ``"bf16"`` / ``"fp16"`` force a type,
    ``"off"`` / ``False`` disable.

    Introduced in chapter 8 (training a CNN).
    """
    key = "auto" if amp is True else "off" if amp is False or amp is None else str(amp).lower()
    if key in ("off", "no", "none", "fp32", "float32") or (key == "auto" and device.type != "cuda"):
        return None
    if key == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if key in ("bf16", "bfloat16"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("amp='bf16': this GPU does not support bfloat16; use 'fp16'")
        return torch.bfloat16
    if key in ("fp16", "float16", "half"):
        if device.type == "cpu":
            raise ValueError("amp='fp16' needs a GPU; use 'bf16' or 'off' on CPU")
        return torch.float16
    raise ValueError(f"unknown amp setting {amp!r}; choose auto, bf16, fp16 or off")


def set_loader_epoch(loader: Iterable, seed: int, epoch: int) -> None:
    """Make ``loader``'s shuffling and worker seeds depend on ``seed`` and ``epoch`` only.

    A ``DistributedSampler`` gets ``set_epoch``; a random sampler and the loader's own generator
    (which seeds its workers) get fresh generators seeded from ``(seed, epoch)``, so a resumed run
    sees the same batches as an uninterrupted one.

    Not called in a chapter; used by `fit`.
    """
    rank, _ = distributed_context()
    base = (seed * 1_000_003 + epoch) * 1009
    sampler = getattr(loader, "sampler", None)
    if sampler is None:
        return
    inner = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    sampler = sampler if inner is None else inner
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    elif hasattr(sampler, "generator"):
        sampler.generator = torch.Generator().manual_seed(base)
    if hasattr(loader, "generator"):
        loader.generator = torch.Generator().manual_seed(base + 1 + rank)


def _skipped(loader: Any, seen: int) -> int:
    """Samples one pass over ``loader`` should have yielded on this rank, less the ``seen`` ones."""
    try:
        if getattr(loader, "batch_size", None) and getattr(loader, "drop_last", False):
            return max(0, len(loader) * loader.batch_size - seen)
        return max(0, len(loader.sampler) - seen)
    except (TypeError, AttributeError):
        return 0


def _rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out = {
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(obj: dict[str, Any], path: os.PathLike | str) -> Path:
    """Write ``obj`` with ``torch.save`` through :func:`helpers.io.write_atomically`, durably.

    If anything fails before the rename, the old file at ``path`` is untouched.

    Not called in a chapter; used by `fit`.
    """
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    write_atomically(Path(path), save, durable=True)
    return Path(path)


def load_checkpoint(path: os.PathLike | str) -> dict[str, Any]:
    """Load a checkpoint onto the CPU with ``torch.load(weights_only=True)``.

    Raises ``ValueError`` naming the file when it holds pickled Python objects beyond tensors and
    plain containers (loading it could run code) or is not a checkpoint at all.

    Introduced in chapter 8 (training a CNN).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f" such as {found.group(1)}" if found else ""
        raise ValueError(f"{path}: refused, the checkpoint holds pickled Python objects{what}, "
                         "not only tensors and plain containers (loading it could run code)") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable checkpoint ({str(err).splitlines()[0][:120]})") from None


def _plain(value: Any) -> Any:
    """Config values as JSON/weights_only-safe plain types (tensors and numpy scalars as numbers)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` and DDP wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def warmup_cosine(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def _to_device(t: torch.Tensor | None, device: torch.device, channels_last: bool = False):
    if t is None:
        return None
    t = t.to(device, non_blocking=True)
    if channels_last and t.ndim == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


@dataclass
class _Step:
    """What one optimisation step needs: optimiser, schedule, gradient scaler, loss and device."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    loss: str
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    world: int

    def states(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_states(self, checkpoint: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])

    def forward(self, net: nn.Module, images: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
        """``net`` on a batch moved to the device, under autocast when mixed precision is on."""
        images = _to_device(images, self.device, self.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return _forward(net, images, _to_device(meta, self.device))


def _evaluate(net: nn.Module, loader: Iterable, step: _Step, progress: bool,
              desc: str) -> tuple[float, float, int]:
    """(loss, AUC, skipped) over the whole validation set, gathered across ranks."""
    net.eval()
    logits_l, targets_l, index_l = [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
            parts = _unpack(batch)
            if parts is None:
                continue
            images, targets, meta, index = parts
            logits_l.append(step.forward(net, images, meta).float().cpu())
            targets_l.append(targets.cpu())
            index_l.append(index.cpu() if index is not None else None)
    skipped = _skipped(loader, sum(len(t) for t in targets_l))
    logits = torch.cat(logits_l) if logits_l else torch.empty(0, 1)
    targets = torch.cat(targets_l) if targets_l else torch.empty(0)
    index = torch.cat(index_l) if index_l and all(i is not None for i in index_l) else None
    if step.world > 1:
        parts = [None] * step.world
        torch.distributed.all_gather_object(parts, (logits, targets, index, skipped))
        logits = torch.cat([p[0] for p in parts])
        targets = torch.cat([p[1] for p in parts])
        skipped = sum(p[3] for p in parts)
        if all(p[2] is not None for p in parts):
            # DistributedSampler pads the last round with repeats: keep each index once
            _, first = np.unique(torch.cat([p[2] for p in parts]).numpy(), return_index=True)
            keep = torch.from_numpy(np.sort(first))
            logits, targets = logits[keep], targets[keep]
    if len(targets) == 0:
        return float("nan"), float("nan"), skipped
    loss = float(_loss(step.criterion, step.loss, logits.to(step.device), targets.to(step.device)).item())
    return loss, auc_score(targets.numpy(), _probabilities(logits).numpy()), skipped


def _train_epoch(net: nn.Module, loader: Iterable, step: _Step, progress: bool,
                 desc: str) -> tuple[float, int]:
    """One pass over the training batches, the loop of chapter 8 with AMP: (summed loss, images seen)."""
    net.train()
    loss_sum, seen, last_parts = 0.0, 0, None
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        parts, weight = _unpack(batch), 1.0
        if parts is None:
            if step.world == 1 or last_parts is None:
                continue
            # every image of this batch was unreadable; the other ranks still step, so
            # this one must join the gradient all-reduce: a stand-in batch with weight 0
            parts, weight = last_parts, 0.0
        last_parts = parts
        images, targets, meta, _ = parts
        logits = step.forward(net, images, meta)
        batch_loss = _loss(step.criterion, step.loss, logits, _to_device(targets, step.device)) * weight
        n = len(images) if weight else 0
        step.optimizer.zero_grad(set_to_none=True)
        step.scaler.scale(batch_loss).backward()
        step.scaler.step(step.optimizer)
        step.scaler.update()
        step.scheduler.step()
        loss_sum += float(batch_loss.detach()) * n
        seen += n
    return loss_sum, seen


def _epoch(net: nn.Module, model: nn.Module, train_loader: Iterable, val_loader: Iterable | None,
           step: _Step, epoch: int, progress: bool) -> dict[str, float]:
    """Train one epoch, evaluate, and return the epoch's history row (:data:`HISTORY_COLUMNS`)."""
    t0 = time.perf_counter()
    loss_sum, seen = _train_epoch(net, train_loader, step, progress, f"train {epoch + 1}")
    loss_sum, seen, train_skipped = _all_sum([loss_sum, seen, _skipped(train_loader, seen)],
                                             step.device, step.world)
    train_seconds = time.perf_counter() - t0
    val_loss, val_auc, val_skipped = float("nan"), float("nan"), 0
    if val_loader is not None:   # the plain module: no DDP collectives
        val_loss, val_auc, val_skipped = _evaluate(model, val_loader, step, progress, f"val {epoch + 1}")
    return {"epoch": epoch + 1, "train_loss": loss_sum / seen if seen else float("nan"),
            "val_loss": val_loss, "val_auc": val_auc, "lr": step.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "images_per_s": seen / train_seconds if train_seconds > 0 else float("nan"),
            "skipped": int(train_skipped + val_skipped)}


def _start(last_path: Path | None, resume: bool, model: nn.Module, step: _Step, seed: int, epochs: int,
           main: bool) -> tuple[list[dict[str, float]], dict[str, float], int]:
    """(history, early-stopping state, epochs done): from ``last.pt`` when resuming, else a seeded start."""
    if resume and last_path is not None and last_path.is_file():
        ck = load_checkpoint(last_path)
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{last_path}: not a {CHECKPOINT_FORMAT} checkpoint")
        model.load_state_dict(ck["model"])
        step.load_states(ck)
        _set_rng_state(ck["rng"])
        if main:
            print(f"resume: continuing after epoch {int(ck['epoch'])} of {epochs} "
                  f"from {helpers.display_path(last_path)}")
        history = [dict(zip(ck["history"], row)) for row in zip(*ck["history"].values())]
        return history, dict(ck["best"]), int(ck["epoch"])
    if resume and main:
        print("resume: no checkpoint yet, starting at epoch 1")
    helpers.seed_everything(seed)
    return [], {"score": -math.inf, "epoch": 0, "bad_epochs": 0, "stopped": 0}, 0


def _keep_best(best: dict[str, float], row: dict[str, float], patience: int | None, epochs: int) -> bool:
    """Update the early-stopping state with an epoch's row; True when the epoch is the best so far."""
    # the score to keep the best epoch by: AUC, or -loss where AUC is undefined
    val_auc, val_loss = row["val_auc"], row["val_loss"]
    score = (val_auc if math.isfinite(val_auc)
             else -val_loss if math.isfinite(val_loss) else row["epoch"] - 1)
    improved = score > best["score"]
    if improved:
        best.update(score=score, epoch=row["epoch"], bad_epochs=0)
    else:
        best["bad_epochs"] += 1
    if patience is not None and best["bad_epochs"] >= patience and row["epoch"] < epochs:
        best["stopped"] = 1
    return improved


def _save_last(out: Path, model: nn.Module, step: _Step, history: list[dict[str, float]],
               best: dict[str, float], config: dict[str, Any]) -> None:
    """Rewrite ``last.pt`` (everything an exact resume needs) and ``history.csv``."""
    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    save_checkpoint({"format": CHECKPOINT_FORMAT, "epoch": history[-1]["epoch"], "model": _cpu_state(model),
                     **step.states(), "rng": _rng_state(),
                     "history": {c: [float(v) for v in frame[c]] for c in HISTORY_COLUMNS},
                     "best": dict(best), "config": config}, out / "last.pt")
    write_history(frame, out / "history.csv")


def _parallel(model: nn.Module, device: torch.device, world: int, compile: bool) -> nn.Module:
    """The module the training loop calls: DDP-wrapped under ``torchrun``, compiled on request."""
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if compile else net


def _finish(model: nn.Module, out: Path | None, best_state: dict[str, torch.Tensor] | None,
            history: list[dict[str, float]], world: int) -> pd.DataFrame:
    """Load the best epoch's weights into ``model``; the history as a frame."""
    if world > 1:
        torch.distributed.barrier()
    if out is not None and (out / "best.pt").is_file():
        model.load_state_dict(load_checkpoint(out / "best.pt")["model"])
    elif best_state is not None:
        model.load_state_dict(best_state)
    return pd.DataFrame(history, columns=HISTORY_COLUMNS).astype({"epoch": int, "skipped": int})


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None, *,
        epochs: int, lr: float = 1e-3, weight_decay: float = 1e-4, warmup_epochs: float = 1,
        loss: str = "bce", pos_weight: float | torch.Tensor | None = None,
        device: torch.device | str | None = None, amp: str | bool = "auto",
        channels_last: bool = True, compile: bool = False,
        out_dir: os.PathLike | str | None = None, resume: bool = False,
        patience: int | None = None, seed: int = 0, progress: bool = True,
        config: dict[str, Any] | None = None) -> pd.DataFrame:
    """Train ``model`` for ``epochs`` epochs and return the history, one row per epoch.

    Batches are ``helpers.data`` dicts (an all-unreadable batch may be ``None``) or
    ``(images, targets[, meta])`` tuples. ``loss``: ``"bce"`` (one output; ``pos_weight``
    up-weights melanomas), ``"ce"`` (K outputs) or ``"focal"``. The learning rate warms up
    linearly over ``warmup_epochs``, then follows a cosine to zero (per step).

    With ``out_dir``, every epoch atomically rewrites ``last.pt`` (all an exact resume needs, plus
    ``config``) and ``history.csv``, and the best epoch by validation AUC goes to ``best.pt``;
    ``resume=True`` carries on from ``last.pt`` as if never interrupted. ``patience``: epochs
    without a better AUC before stopping. The model ends with the best epoch's weights. Under
    ``torchrun`` only rank 0 writes files and validation predictions of all ranks are pooled.

    Introduced in chapter 7 (the data pipeline).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    rank, world = distributed_context()
    main = rank == 0
    device = torch.device(device) if device is not None else helpers.device(verbose=main)
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    amp_dtype = resolve_amp(amp, device)
    channels_last = channels_last and device.type != "mps"
    out = Path(out_dir) if out_dir is not None else None
    model = _unwrap(model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    steps_per_epoch = max(1, len(train_loader))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=lr, weight_decay=weight_decay)
    schedule = warmup_cosine(round(warmup_epochs * steps_per_epoch), epochs * steps_per_epoch)
    step = _Step(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
                 torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
                 _make_criterion(loss, pos_weight, device), loss, device, amp_dtype, channels_last, world)
    cfg = _plain({"epochs": epochs, "lr": lr, "weight_decay": weight_decay,
                  "warmup_epochs": warmup_epochs, "loss": loss, "pos_weight": pos_weight,
                  "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
                  "channels_last": channels_last, "compile": compile, "patience": patience,
                  "seed": seed, "world_size": world, **(config or {})})
    history, best, start = _start(out / "last.pt" if out else None, resume, model, step, seed, epochs, main)

    net, best_state = _parallel(model, device, world, compile), None
    epoch_bar = tqdm(range(start, epochs), desc="epochs", initial=start, total=epochs,
                     disable=not (progress and main))
    for epoch in epoch_bar:
        if best["stopped"]:
            break
        set_loader_epoch(train_loader, seed, epoch)
        row = _epoch(net, model, train_loader, val_loader, step, epoch, progress and main)
        history.append(row)
        epoch_bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_auc=f"{row['val_auc']:.3f}")
        if _keep_best(best, row, patience, epochs):
            if out is None:
                best_state = _cpu_state(model)
            elif main:
                save_checkpoint({"format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "model": _cpu_state(model),
                                 "val_auc": row["val_auc"], "config": cfg}, out / "best.pt")
        if best["stopped"] and main:
            tqdm.write(f"early stop: no better validation AUC for {patience} epochs; "
                       f"best was epoch {best['epoch']}")
        if out is not None and main:
            _save_last(out, model, step, history, best, cfg)
        if world > 1:
            torch.distributed.barrier()
        if best["stopped"]:
            break
    epoch_bar.close()
    return _finish(model, out, best_state, history, world)


def write_history(frame: pd.DataFrame, path: Path) -> None:
    """``history.csv``, written atomically."""
    write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))


def tta_variants(images: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The first ``n`` (1-8) of the 8 flips/rotations of a batch of images (``n=1``: as is).

    Introduced in chapter 8 (training a CNN).
    """
    if not 1 <= n <= 8:
        raise ValueError(f"tta must be between 1 and 8, got {n}")
    dims = (-2, -1)
    ops = [lambda x: x, lambda x: x.flip(-1), lambda x: x.flip(-2),
           lambda x: torch.rot90(x, 1, dims), lambda x: torch.rot90(x, 2, dims),
           lambda x: torch.rot90(x, 3, dims), lambda x: torch.rot90(x.flip(-1), 1, dims),
           lambda x: torch.rot90(x.flip(-1), 3, dims)]
    return [op(images) for op in ops[:n]]


def run_config(run: os.PathLike | str) -> dict[str, Any]:
    """The settings of a run folder: its ``config.json`` as a dict (``ValueError`` when missing).

    Not called in a chapter; used by `out_of_fold`, `load_run`, `train_run`.
    """
    path = Path(run) / "config.json"
    if not path.is_file():
        raise ValueError(f"{path}: no such file; not a run folder written by `python -m helpers train`")
    return json.loads(path.read_text(encoding="utf-8"))


def load_run(run: os.PathLike | str) -> tuple[nn.Module, dict[str, Any], Path, int]:
    """Rebuild the trained model of a run folder written by ``python -m helpers train``.

    Builds the model of ``config.json`` without downloading anything and loads ``best.pt`` (else
    ``last.pt``, else the half-precision ``model.pt`` of a kept run). Returns ``(model, config,
    weights path, epoch of those weights)``. A missing config or weights that do not fit the
    architecture raise ``ValueError`` naming the file.

    Introduced in chapter 6 (patient context).
    """
    run = Path(run)
    config = run_config(run)
    weights = next((run / name for name in ("best.pt", "last.pt") if (run / name).is_file()),
                   run / "model.pt")
    checkpoint = load_checkpoint(weights)
    if weights.name == "model.pt":      # half-precision weights only, epoch from the summary
        summary = run / "summary.json"
        epoch = json.loads(summary.read_text(encoding="utf-8"))["best_epoch"] if summary.is_file() else 0
        checkpoint = {"model": {k: v.float() if v.is_floating_point() else v
                                for k, v in checkpoint.items()}, "epoch": epoch}
    model = build_model(config["model"], int(config.get("num_classes", 1)), pretrained=False,
                        n_meta=int(config.get("n_meta") or 0), verbose=False)
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError) as err:
        raise ValueError(f"{weights}: does not fit a {config['model']} model "
                         f"({str(err).splitlines()[0][:100]})") from None
    return model, config, weights, int(checkpoint.get("epoch", 0))


def predict(model: nn.Module, loader: Iterable, device: torch.device | str | None = None,
            tta: int = 1, progress: bool = False) -> np.ndarray:
    """Predicted probabilities: shape ``(n,)`` for one output (sigmoid), ``(n, K)`` otherwise (softmax).

    ``tta > 1`` averages over that many flipped/rotated copies (:func:`tta_variants`). When batches
    carry an ``index``, row ``i`` belongs to dataset item ``i`` and an unreadable image gets NaN;
    otherwise rows follow the loader.

    Introduced in chapter 6 (patient context).
    """
    device = torch.device(device) if device is not None else helpers.device(verbose=False)
    model = _unwrap(model).to(device).eval()
    probs_l, index_l = [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc="predict", leave=False, disable=not progress):
            parts = _unpack(batch)
            if parts is None:
                continue
            images, _, meta, index = parts
            images, meta = _to_device(images, device), _to_device(meta, device)
            p = torch.stack([_probabilities(_forward(model, v, meta)) for v in tta_variants(images, tta)])
            probs_l.append(p.mean(0).cpu())
            index_l.append(index)
    if not probs_l:
        return np.empty(0)
    probs = torch.cat(probs_l).numpy()
    if all(i is not None for i in index_l) and hasattr(loader, "dataset"):
        full = np.full((len(loader.dataset),) + probs.shape[1:], np.nan)
        full[torch.cat(index_l).numpy()] = probs
        return full
    return probs


def plot_history(history: pd.DataFrame, ax=None):
    """Plot training/validation loss and validation AUC against the epoch (two panels).

    ``ax``: two existing axes to draw into; by default a new 9 x 3 inch figure.

    Introduced in chapter 8 (training a CNN).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(9, 3), dpi=100)
    fig = ax[0].figure
    ax[0].plot(history["epoch"], history["train_loss"], marker="o", label="train")
    ax[0].plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    ax[0].set(xlabel="epoch", ylabel="loss", title="loss")
    ax[0].legend()
    ax[1].plot(history["epoch"], history["val_auc"], marker="o", color="C2")
    ax[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    ax[1].set(xlabel="epoch", ylabel="ROC AUC", title="validation AUC", ylim=(0.4, 1.01))
    for a in ax[:2]:                               # epochs are whole numbers: no 1.25, 1.5 ticks
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig
