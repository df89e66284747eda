"""A score run: its plan (:mod:`~refract.scoring.plan`: inputs checked before the model
loads), the run (:mod:`~refract.scoring.run`: axis by axis from the registry, the reference
once), the memory plan, the noise floor, the composite and diagnosis, and repeatability."""

from refract.scoring.plan import ScorePlan, check_candidates, prepare_score
from refract.scoring.run import execute_score, run_score, run_scores

__all__ = [
    "ScorePlan",
    "check_candidates",
    "execute_score",
    "prepare_score",
    "run_score",
    "run_scores",
]
