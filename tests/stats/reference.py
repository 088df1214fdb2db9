"""Reference values for the significance of an arm against its holdout, from statsmodels and scipy.

Reads a JSON list of [arm successes, arm trials, holdout successes, holdout trials] from the file
named by its argument and writes to stdout, for each, the figures tests/report.rs compares with canvass's: Wilson intervals, the
Newcombe interval of the difference, the pooled z-test's and Fisher's two-sided p-values, and
the sample per arm for 80 % power at the 5 % level.
"""

import json
import math
import sys

from scipy.stats import fisher_exact
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
    samplesize_proportions_2indep_onetail,
)


def one(x1, n1, x2, n2):
    arm = proportion_confint(x1, n1, alpha=0.05, method="wilson")
    holdout = proportion_confint(x2, n2, alpha=0.05, method="wilson")
    low, high = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff")
    pooled = (x1 + x2) / (n1 + n2)
    if 0 < pooled < 1:
        z_p = float(proportions_ztest([x1, x2], [n1, n2])[1])
    else:
        z_p = 1.0  # no variance: nothing can differ
    fisher_p = float(fisher_exact([[x1, n1 - x1], [x2, n2 - x2]])[1])
    p1, p2 = x1 / n1, x2 / n2
    needed = None
    if p1 != p2:
        needed = math.ceil(
            samplesize_proportions_2indep_onetail(
                p1 - p2, p2, 0.8, ratio=1, alpha=0.05, alternative="two-sided"
            )
        )
    return {
        "arm": [float(arm[0]), float(arm[1])],
        "holdout": [float(holdout[0]), float(holdout[1])],
        "difference": [float(low), float(high)],
        "zP": z_p,
        "fisherP": fisher_p,
        "needed": needed,
    }


with open(sys.argv[1], encoding="utf-8") as tables:
    json.dump([one(*t) for t in json.load(tables)], sys.stdout)
