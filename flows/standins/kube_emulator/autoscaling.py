"""HorizontalPodAutoscaler (autoscaling/v2) and PodDisruptionBudget status controllers."""

from __future__ import annotations

import math
from collections import defaultdict

from flows.standins.kube_emulator import objects as ko
from flows.standins.kube_emulator.errors import ApiError
from flows.standins.kube_emulator.store import Obj, Store
from flows.standins.kube_emulator.validation import selector_matches

DEFAULT_UP = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
              "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                           {"type": "Percent", "value": 100, "periodSeconds": 15}]}
DEFAULT_DOWN = {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}
TOLERANCE = 0.1


class HPAController:
    """autoscaling/v2 (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/),
    on metric values set by the test: ``set_metric(ns, hpa, metric, value)``. The value is what the
    metrics API would answer: the per-pod average for Pods and AverageValue targets, the average
    utilization (ko.percent) for Utilization targets, the object's value for Value targets."""

    def __init__(self, store: Store, events: ko.Events) -> None:
        self.store, self.events = store, events
        self.reset()

    def reset(self) -> None:
        self.enabled = True
        self.sync_period_s = 15.0
        self._metrics: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        self._next: dict[str, float] = {}
        self._recs: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self._scales: dict[str, list[tuple[float, int]]] = defaultdict(list)

    def set_metric(self, namespace: str, hpa: str, metric: str, value: float, *, evaluate_now: bool = True) -> None:
        """``evaluate_now=False``: as a metrics adapter would, the value changes and the HPA reads it at
        its next sync (every ``sync_period_s``, 15 s as kube-controller-manager's default)."""
        self._metrics[(namespace, hpa)][metric] = float(value)
        if not evaluate_now:
            return
        self._next.clear()  # evaluate at the next tick, which must not be skipped as idle
        with self.store.lock:
            self.store.changes += 1

    def tick(self, t: float) -> float:
        due = ko.NEVER
        for hpa in self.store.peek(ko.HPAS):
            uid = hpa["metadata"]["uid"]
            if t >= self._next.get(uid, 0):
                self._next[uid] = t + self.sync_period_s
                self._sync(hpa, t)
            due = min(due, self._next[uid])
        return due

    def _sync(self, hpa: Obj, t: float) -> None:
        meta, spec = hpa["metadata"], hpa["spec"]
        ns, uid = meta["namespace"], meta["uid"]
        ref = spec["scaleTargetRef"]
        res = {"Deployment": ko.DEPLOYMENTS, "ReplicaSet": ko.REPLICASETS}.get(ref.get("kind"))
        status = ko.copy_json(hpa.get("status") or {})
        now = self.store.clock.iso(t)
        target = self.store.find(res, ns, ref["name"]) if res else None
        if target is None:
            ko.set_condition(status, "AbleToScale", "False", "FailedGetScale", f"the HPA controller was unable to get "
                          f"the target's current scale: {ref.get('kind', '').lower()}s \"{ref['name']}\" not found",
                          now)
            ko.write_status(self.store, ko.HPAS, hpa, status)
            return
        current = target["spec"].get("replicas", 1)
        if current == 0:
            ko.set_condition(status, "ScalingActive", "False", "ScalingDisabled", "scaling is disabled since the "
                          "replica count of the target is zero", now)
            ko.write_status(self.store, ko.HPAS, hpa, status)
            return
        values = self._metrics.get((ns, meta["name"]), {})
        proposals, current_metrics, missing, reason = [], [], [], ""
        for m in spec.get("metrics") or []:
            kind = m["type"]
            body = m.get({"Pods": "pods", "Resource": "resource", "Object": "object", "External": "external",
                          "ContainerResource": "containerResource"}[kind]) or {}
            name = (body.get("metric") or {}).get("name") or body.get("name")
            tgt = body.get("target") or {}
            if name not in values:
                missing.append(name)
                continue
            v = values[name]
            if tgt.get("type") == "Utilization":
                goal = float(tgt["averageUtilization"])
                cur = {"averageUtilization": int(v)}
            elif tgt.get("type") == "AverageValue":
                goal = ko.quantity(tgt["averageValue"])
                cur = {"averageValue": _fmt(v)}
            else:
                goal = ko.quantity(tgt["value"])
                cur = {"value": _fmt(v)}
            ratio = v / goal if goal else 0.0
            desired = current if abs(ratio - 1) <= TOLERANCE else math.ceil(ratio * current)
            proposals.append(desired)
            if desired == max(proposals):
                reason = f"{kind.lower()} metric {name} {'above' if ratio > 1 else 'below'} target"
            entry = {"type": kind, {"Pods": "pods", "Resource": "resource", "Object": "object",
                                    "External": "external", "ContainerResource": "containerResource"}[kind]:
                     ({"metric": {"name": name}} if kind != "Resource" else {"name": name}) | {"current": cur}}
            current_metrics.append(entry)
        if not proposals:
            ko.set_condition(status, "ScalingActive", "False", "FailedGetPodsMetric", "the HPA was unable to compute "
                          f"the replica count: no metric value for {', '.join(missing)}", now)
            status.update(currentReplicas=current, desiredReplicas=current)
            ko.write_status(self.store, ko.HPAS, hpa, status)
            return
        ko.set_condition(status, "ScalingActive", "True", "ValidMetricFound", "the HPA was able to successfully "
                      "calculate a replica count from metrics", now)
        desired = max(proposals)
        if missing and desired < current:
            desired = current  # some metrics are missing: never scale down on partial data
        behavior = spec.get("behavior") or {}
        up, down = {**DEFAULT_UP, **(behavior.get("scaleUp") or {})}, {**DEFAULT_DOWN, **(behavior.get("scaleDown")
                                                                                            or {})}
        recs = self._recs[uid]
        recs.append((t, desired))
        horizon = max(up["stabilizationWindowSeconds"], down["stabilizationWindowSeconds"])
        recs[:] = [r for r in recs if t - r[0] <= horizon]
        if desired > current:
            window = [d for ts, d in recs if t - ts <= up["stabilizationWindowSeconds"]]
            stabilized = max(current, min(window))
        else:
            window = [d for ts, d in recs if t - ts <= down["stabilizationWindowSeconds"]]
            stabilized = min(current, max(window))
        limited = self._limit(uid, current, stabilized, up, down, t)
        mn, mx = spec.get("minReplicas", 1), spec["maxReplicas"]
        final = min(max(limited, mn), mx)
        # as the controller's convertDesiredReplicasWithBehaviorRate names the limit that held it back
        if stabilized > current and final < stabilized:
            ko.set_condition(status, "ScalingLimited", "True", *(
                ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
                if final < mx else ("TooManyReplicas", "the desired replica count is more than the maximum "
                                                       "replica count")), now)
        elif stabilized < current and final > stabilized:
            ko.set_condition(status, "ScalingLimited", "True", *(
                ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
                if final > mn else ("TooFewReplicas", "the desired replica count is less than the minimum "
                                                      "replica count")), now)
        else:
            ko.set_condition(status, "ScalingLimited", "False", "DesiredWithinRange", "the desired count is within the "
                          "acceptable range", now)
        if final != current:
            try:
                self.store.patch(res, ns, ref["name"], "application/merge-patch+json",
                                 {"spec": {"replicas": final}}, manager="kube-controller-manager", internal=True)
            except ApiError as exc:
                ko.set_condition(status, "AbleToScale", "False", "FailedUpdateScale", exc.message, now)
                ko.write_status(self.store, ko.HPAS, hpa, status)
                return
            self._scales[uid].append((t, final - current))
            status["lastScaleTime"] = now
            self.events.record(hpa, "SuccessfulRescale", f"New size: {final}; reason: "
                               f"{reason if final > current else 'All metrics below target'}",
                               "horizontal-pod-autoscaler")
            ko.set_condition(status, "AbleToScale", "True", "SucceededRescale", f"the HPA controller was able to "
                          f"update the target scale to {final}", now)
        else:
            ko.set_condition(status, "AbleToScale", "True", "ReadyForNewScale", "recommended size matches current "
                          "size", now)
        status.update(currentReplicas=current, desiredReplicas=final, currentMetrics=current_metrics,
                      observedGeneration=meta.get("generation", 1))
        ko.write_status(self.store, ko.HPAS, hpa, status)

    def _limit(self, uid: str, current: int, desired: int, up: dict, down: dict, t: float) -> int:
        events = self._scales[uid]
        events[:] = [e for e in events if t - e[0] <= 1800]
        if desired > current:
            if up.get("selectPolicy") == "Disabled":
                return current
            limits = []
            for p in up["policies"]:
                since = sum(d for ts, d in events if t - ts < p["periodSeconds"] and d > 0)
                base = current - since
                limits.append(base + p["value"] if p["type"] == "Pods" else math.ceil(base * (1 + p["value"] / 100)))
            cap = max(limits) if up.get("selectPolicy", "Max") == "Max" else min(limits)
            return min(desired, cap)
        if desired < current:
            if down.get("selectPolicy") == "Disabled":
                return current
            limits = []
            for p in down["policies"]:
                since = -sum(d for ts, d in events if t - ts < p["periodSeconds"] and d < 0)
                base = current + since
                limits.append(base - p["value"] if p["type"] == "Pods" else
                              math.ceil(base * (1 - p["value"] / 100)))
            floor = min(limits) if down.get("selectPolicy", "Max") == "Max" else max(limits)
            return max(desired, floor)
        return desired


def _fmt(v: float) -> str:
    return str(int(v)) if v == int(v) else f"{int(round(v * 1000))}m"


class PDBController:
    """PodDisruptionBudget status (https://kubernetes.io/docs/tasks/run-application/configure-pdb/)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.enabled = True

    def reset(self) -> None:
        self.enabled = True

    def tick(self, t: float) -> float:
        for pdb in self.store.peek(ko.PDBS):
            self._sync(pdb)
        return ko.NEVER

    def _sync(self, pdb: Obj) -> None:
        ns, spec = pdb["metadata"]["namespace"], pdb["spec"]
        sel = spec.get("selector") or {}
        pods = [p for p in self.store.peek(ko.PODS, ns) if not ko.is_terminal(p)
                and selector_matches(sel, p["metadata"].get("labels") or {})]
        healthy = sum(ko.is_ready(p) and not ko.is_terminating(p) for p in pods)
        expected, seen = 0, set()
        for p in pods:
            ref = ko.owner(p)
            scale = None
            if ref and ref.get("kind") == "ReplicaSet":
                rs = self.store.find(ko.REPLICASETS, ns, ref["name"])
                dref = ko.owner(rs, "Deployment") if rs else None
                ctrl = self.store.find(ko.DEPLOYMENTS, ns, dref["name"]) if dref else rs
                if ctrl is not None and ctrl["metadata"]["uid"] not in seen:
                    seen.add(ctrl["metadata"]["uid"])
                    scale = ctrl["spec"].get("replicas", 1)
                    expected += scale
            elif not ref:
                expected += 1
        if spec.get("maxUnavailable") is not None:
            desired = max(0, expected - ko.percent(spec["maxUnavailable"], expected, True))
        elif spec.get("minAvailable") is not None:
            desired = ko.percent(spec["minAvailable"], expected, True)
        else:
            desired = expected
        allowed = max(0, healthy - desired)
        status = ko.copy_json(pdb.get("status") or {})
        status.update(observedGeneration=pdb["metadata"].get("generation", 1), currentHealthy=healthy,
                      desiredHealthy=desired, expectedPods=expected, disruptionsAllowed=allowed)
        status.setdefault("disruptedPods", {})
        if allowed > 0:
            ko.set_condition(status, "DisruptionAllowed", "True", "SufficientPods", "", self.store.now())
        else:
            ko.set_condition(status, "DisruptionAllowed", "False", "InsufficientPods", "", self.store.now())
        ko.write_status(self.store, ko.PDBS, pdb, status)
