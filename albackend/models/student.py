"""The distilled student: which teacher layers it keeps, how it is built from the teacher's weights, the Appendix
A.1 losses it is trained with, and how it is saved (a plain HF directory plus ``albackend.json``).

The training loop is :mod:`albackend.models.distil`.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

from albackend.models.errors import DistilError
from albackend.models.registry import META_FILE, resolve_model

LOSSES = ("ce", "mlm", "cos", "mse")


_LAYER_LIST_NAMES = ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer", "h", "blocks")


# ---- construction ----------------------------------------------------------------------------
def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: named like `encoder.layer`, as long as config.num_hidden_layers."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    cands = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) > 0 and len({type(c) for c in m}) == 1]
    if not cands:
        raise DistilError(f"{type(model).__name__} has no list of identical layers to choose from")

    def rank(item: tuple[str, nn.ModuleList]) -> tuple:
        name, mods = item
        known = any(name == k or name.endswith("." + k) for k in _LAYER_LIST_NAMES)
        return (len(mods) == n, known, len(mods), -name.count("."))
    return max(cands, key=rank)


def choose_layers(n_layers: int, layers: Sequence[int] | str | None = None, keep_every: int = 2) -> list[int]:
    """Teacher layer indices to keep: explicit ("0,2,4") or every `keep_every`-th from layer 0."""
    if isinstance(layers, str):
        layers = [int(x) for x in layers.replace(" ", "").split(",") if x]
    if layers:
        chosen = sorted(set(int(i) for i in layers))
        bad = [i for i in chosen if not 0 <= i < n_layers]
        if bad:
            raise DistilError(f"layers {bad} do not exist: the teacher has layers 0..{n_layers - 1}")
        return chosen
    if keep_every < 1:
        raise DistilError("--keep-every must be >= 1")
    return list(range(0, n_layers, keep_every))


def layer_map(layers: Sequence[int], n_layers: int) -> list[tuple[int, int]]:
    """(student hidden-state index, teacher hidden-state index) pairs the hidden-state losses compare.

    Index 0 is the embedding output. Student layer j is initialised from teacher layer layers[j] and stands for
    the teacher block up to the next kept layer, so its output is matched to the teacher's output just before
    layers[j + 1] (the teacher's final output for the last layer): keeping 0,2,4 of 6 maps 1->2, 2->4, 3->6.
    """
    ends = list(layers[1:]) + [n_layers]
    return [(0, 0)] + [(j + 1, ends[j]) for j in range(len(layers))]


def build_student(teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """Same class and config with len(layers) layers; weights copied from the teacher (layers renumbered)."""
    path, blocks = find_layer_list(teacher)
    n = len(blocks)
    cfg = copy.deepcopy(teacher.config)
    cfg.num_hidden_layers = len(layers)
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == n:
        cfg.layer_types = [types[i] for i in layers]
    student = type(teacher)(cfg)
    prefix, renum, state = path + ".", {t: s for s, t in enumerate(layers)}, {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            idx, rest = key[len(prefix):].split(".", 1)
            if int(idx) in renum:
                state[f"{prefix}{renum[int(idx)]}.{rest}"] = value.detach().clone()
        else:
            state[key] = value.detach().clone()
    student.load_state_dict(state, strict=True)
    return student


def load_teacher(name: str) -> tuple[nn.Module, object, bool, dict]:
    """(model, tokenizer, has_mlm_head, extra file tensors such as a pooler the MLM class does not hold)."""
    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    extras: dict = {}
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except (ValueError, OSError, KeyError):
        mlm, info = None, {"missing_keys": ["?"]}
    prefix = getattr(mlm, "base_model_prefix", "")
    if mlm is not None and not [k for k in info["missing_keys"] if not k.startswith(prefix + ".")]:
        pooler = [k for k in info.get("unexpected_keys", []) if "pooler" in k]
        files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
        for fname in files:
            with safe_open(str(fname), "pt") as fh:
                for key in set(pooler) & set(fh.keys()):
                    extras[key if key.startswith(prefix + ".") else f"{prefix}.{key}"] = fh.get_tensor(key)
        return mlm.eval(), tokenizer, True, extras
    del mlm
    return AutoModel.from_pretrained(path).eval(), tokenizer, False, extras


# ---- losses -------------------------------------------------------------------------------------------
def hidden_losses(s_hidden: Sequence[torch.Tensor], t_hidden: Sequence[torch.Tensor], mask: torch.Tensor,
                  pairs: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine embedding loss 1 - cos, MSE) over non-padding tokens, averaged over the layer pairs."""
    keep = mask.bool()
    cos, mse = [], []
    for si, ti in pairs:
        s, t = s_hidden[si][keep].float(), t_hidden[ti][keep].float()
        cos.append((1.0 - F.cosine_similarity(s, t, dim=-1)).mean())
        mse.append(F.mse_loss(s, t))
    return torch.stack(cos).mean(), torch.stack(mse).mean()


def mlm_losses(s_logits: torch.Tensor, t_logits: torch.Tensor, labels: torch.Tensor,
               temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft-target cross-entropy -sum t log s at temperature T, scaled by T^2; masked-LM loss) at masked tokens."""
    sel = labels != -100
    if not bool(sel.any()):
        zero = s_logits.sum() * 0.0
        return zero, zero
    s, t = s_logits[sel].float(), t_logits[sel].float()
    soft = F.softmax(t / temperature, -1)
    ce = -(soft * F.log_softmax(s / temperature, -1)).sum(-1).mean() * temperature ** 2
    return ce, F.cross_entropy(s, labels[sel])


def mask_tokens(ids: torch.Tensor, attn: torch.Tensor, tokenizer, prob: float,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: `prob` of the real, non-special tokens; 80% [MASK], 10% random, 10% unchanged."""
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in ids.tolist()], dtype=torch.bool)
    cand = attn.bool() & ~special
    picked = (torch.rand(ids.shape, generator=gen) < prob) & cand
    labels = torch.where(picked, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=gen)
    out = ids.clone()
    out[picked & (r < 0.8)] = tokenizer.mask_token_id
    rand_pos = picked & (r >= 0.8) & (r < 0.9)
    out[rand_pos] = torch.randint(len(tokenizer), ids.shape, generator=gen)[rand_pos]
    return out, labels


# ---- saving ---------------------------------------------------------------------------------------------
def save_student(student: nn.Module, tokenizer, out_dir: str | Path, meta: dict, extras: dict | None = None) -> None:
    """A normal HF directory (safetensors, config, tokenizer) plus albackend.json {teacher, layers, losses, ...}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    student = student.to("cpu").eval()
    student.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    weights = out_dir / "model.safetensors"
    if extras and weights.exists():  # e.g. the teacher's pooler, which its MLM class does not load
        state = load_file(str(weights))
        state.update({k: v.contiguous() for k, v in extras.items() if k not in state})
        save_file(state, str(weights), metadata={"format": "pt"})
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
