"""Progressive delivery: canary analysis, and the controller that moves traffic on its verdicts."""

from shipway.rollout.analysis import ArmWindow, Check, Thresholds, Verdict, analyse, judge

__all__ = ["ArmWindow", "Check", "Thresholds", "Verdict", "analyse", "judge"]
