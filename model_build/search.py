"""Accuracy-aware INT8 search: quantise, evaluate, and while out of tolerance first smooth the
activation outliers away (SmoothQuant, :mod:`model_build.smooth`), then keep the most sensitive
nodes in float, within a bounded number of trials.

Sensitivity comes from onnxruntime's own QDQ debugging utilities
(``onnxruntime.quantization.qdq_loss_debug``): the FP32 and QDQ models are run on a few evaluation
samples with every intermediate tensor saved, and each quantised tensor gets the SQNR (dB)
between its float value and its value after its QuantizeLinear/DequantizeLinear pair. The lowest
SQNR is the most damaged tensor; the nodes that produce and consume it are excluded together so
the tensor stays float. Trial ``k`` excludes the ``2**(k-1)`` worst tensors (1, 2, 4, ...), so a
handful of trials covers a wide range; once a count passes, the remaining trials bisect between
the last failing and the first passing count, and the fewest exclusions within tolerance win.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from model_build.calibrate import Dataset, DatasetReader, n_samples
from model_build.smooth import Smoothing

log = logging.getLogger("inferops.model_build")


@dataclass
class Trial:
    excluded_tensors: int
    excluded_nodes: list[str]
    score: float  # the gate's value: mean cosine (fidelity) or relative loss (accuracy)
    ok: bool
    reason: str
    smoothed: bool = False


@dataclass
class SearchResult:
    path: Path | None  # the chosen candidate, None when no trial met the tolerance
    last: Path  # the last candidate tried
    excluded_nodes: list[str]
    trials: list[Trial]
    sensitivity: list[tuple[str, float]] = field(default_factory=list)  # (tensor, SQNR dB), worst first
    smoothing: Smoothing | None = None  # set when the trials after the first ran on the smoothed model


def sensitivity(fp32_path: Path, qdq_path: Path, data: Dataset, workdir: Path,
                samples: int = 4) -> list[tuple[str, float]]:
    """Quantised tensors ranked by SQNR of their own QDQ pair, worst (lowest dB) first."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    subset = {k: v[:min(samples, n_samples(data))] for k, v in data.items()}
    acts = {}
    for tag, path in (("float", fp32_path), ("qdq", qdq_path)):
        augmented = workdir / f"debug_{tag}.onnx"
        dbg.modify_model_output_intermediate_tensors(str(path), str(augmented))
        acts[tag] = dbg.collect_activations(str(augmented), DatasetReader(subset, 1))
        augmented.unlink()
    matched = dbg.create_activation_matching(acts["qdq"], acts["float"])
    errors = dbg.compute_activation_error(matched)
    ranked = [(name, err["qdq_err"]) for name, err in errors.items() if math.isfinite(err["qdq_err"])]
    return sorted(ranked, key=lambda item: item[1])


def nodes_touching(model: onnx.ModelProto, tensors: list[str], only: set[str] | None = None) -> list[str]:
    """Names of the nodes producing or consuming ``tensors`` (of those in ``only``), in graph order."""
    wanted = set(tensors)
    return [n.name for n in model.graph.node
            if wanted & (set(n.input) | set(n.output)) and (only is None or n.name in only)]


def search(fp32_path: Path, workdir: Path, build: Callable[[Path, list[str], Path], Path],
           judge: Callable[[Path], tuple[float, bool, str]], debug_data: Dataset,
           quantizable: set[str], max_trials: int = 6, *,
           smooth: Callable[[bool], Smoothing | None] | None = None, higher_is_better: bool = True) -> SearchResult:
    """``build(fp32_base, excluded_nodes, out_path)`` makes a candidate, ``judge(path)`` scores it.

    Trial 0 quantises the model as it is. When that misses the tolerance and ``smooth`` is given,
    trial 1 quantises the smoothed model (``smooth(False)`` writes it, with a ``Mul`` only where
    smoothing buys enough; None when nothing can be smoothed), and when that misses too and it left
    activations as they were, trial 2 the model smoothed everywhere (``smooth(True)``). The exclusion
    trials then build on whichever base scored best.
    ``quantizable`` names the nodes INT8 applies to: a trial that would keep all of them in float
    is not an INT8 model any more, and ends the search."""
    trials: list[Trial] = []
    first = build(fp32_path, [], workdir / "int8_trial0.onnx")
    score, ok, reason = judge(first)
    trials.append(Trial(0, [], score, ok, reason))
    if ok or max_trials <= 1:
        return SearchResult(first if ok else None, first, [], trials)
    base, base_qdq, smoothing = fp32_path, first, None
    # the lean smoothing first (a Mul only where it buys enough); every activation when that misses
    for everywhere in (False, True) if smooth is not None else ():
        smoothed = smooth(everywhere) if len(trials) < max_trials else None
        if smoothed is None:
            break
        name = "int8_smoothed_everywhere.onnx" if everywhere else "int8_smoothed.onnx"
        candidate = build(smoothed.path, [], workdir / name)
        s_score, s_ok, s_reason = judge(candidate)
        trials.append(Trial(0, [], s_score, s_ok, s_reason, smoothed=True))
        log.info("SmoothQuant (alpha %.2f, %d activations, %d left as they are): %s", smoothed.alpha,
                 len(smoothed.tensors), smoothed.unsmoothed, "within tolerance" if s_ok else s_reason)
        if s_ok:
            return SearchResult(candidate, candidate, [], trials, smoothing=smoothed)
        if (s_score > score) == higher_is_better and s_score != score:
            base, base_qdq, smoothing, reason, score = smoothed.path, candidate, smoothed, s_reason, s_score
        if not smoothed.unsmoothed:
            break  # it already smoothed every activation
    ranked = sensitivity(base, base_qdq, debug_data, workdir)
    log.info("INT8 out of tolerance (%s); most sensitive tensors: %s", reason,
             ", ".join(f"{t} {db:.1f} dB" for t, db in ranked[:5]))
    fp32 = onnx.load(str(base), load_external_data=False)
    # only tensors whose exclusion changes a quantised node are worth a trial
    ranked = [(t, db) for t, db in ranked if nodes_touching(fp32, [t], quantizable)]
    chosen, chosen_excluded, last = None, [], base_qdq
    lo, hi, count = 0, None, 1  # largest failing / smallest passing count of excluded tensors
    while len(trials) < max_trials and ranked:
        excluded = nodes_touching(fp32, [t for t, _ in ranked[:count]], quantizable)
        if quantizable <= set(excluded):
            log.info("trial %d would keep every quantisable node in float: search ends", len(trials))
            break
        candidate = last = build(base, excluded, workdir / f"int8_trial{len(trials)}.onnx")
        score, ok, reason = judge(candidate)
        trials.append(Trial(count, excluded, score, ok, reason, smoothed=smoothing is not None))
        log.info("trial %d: %d tensors / %d nodes kept in float: %s", len(trials) - 1, count, len(excluded),
                 "within tolerance" if ok else reason)
        if ok:
            hi, chosen, chosen_excluded = count, candidate, excluded
        else:
            lo = count
        if hi is None:  # doubling until a count passes
            if count == len(ranked):
                break
            count = min(2 * count, len(ranked))
        elif hi - lo > 1:  # then bisecting towards the fewest exclusions that pass
            count = (lo + hi) // 2
        else:
            break
    return SearchResult(chosen, chosen or last, chosen_excluded, trials, ranked, smoothing)
