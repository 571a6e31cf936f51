"""Power and sample size of a two-modality MRMC reader study (Obuchowski-Rockette).

Planning starts from a pilot: the OR variance components of its figure of merit
(the reader-averaged AUC) [1]_, estimated by :mod:`workbench.stats.mrmc` from the
pilot's ratings or taken from a published analysis. They are carried to a
pivotal study with ``J`` readers and ``K`` cases following Hillis, Obuchowski &
Berbaum [2]_ and Hillis & Schartz [3]_: the error terms (``Var``, ``Cov1``,
``Cov2``, ``Cov3``) scale with the number of cases, ``K* / K`` (``K*`` the pilot's
cases), while the modality-by-reader variance ``σ²_TR`` does not. With
``c = max(Cov2 - Cov3, 0)`` and ``σ²_TR`` truncated at 0:

* random readers and random cases (RRRC, the primary OR analysis)::

      den  = σ²_TR + (K*/K) (Var - Cov1 + (J - 1) c)
      ddf  = den² (J - 1) / (σ²_TR + (K*/K) (Var - Cov1 - c))²      (Hillis ddf)

* fixed readers, random cases (FRRC): ``den = (K*/K) (Var - Cov1 + (J - 1) c)``,
  chi-square (normal) reference distribution;
* random readers, fixed cases (RRFC): ``den = σ²_TR + (K*/K) (Var - Cov1 - c)``,
  ``ddf = J - 1``.

The reader-averaged difference of the two modalities has standard error
``sqrt(2 den / J)``; with anticipated difference ``d`` the OR F statistic follows a
non-central ``F(1, ddf)`` with non-centrality ``λ = J d² / (2 den)`` [2]_, and the
power of the two-sided test at level ``α`` is ``P(F(1, ddf, λ) > F_{1-α}(1, ddf))``.

For the one-sided hypotheses the workbench's reader studies pre-register
(:mod:`workbench.studies`), the study passes when the lower limit of the two-sided
``100(1 - α)%`` CI of the difference exceeds a bound ``b`` (0 for superiority,
``-margin`` for non-inferiority); its power is
``P(t(ddf, δ) > t_{1-α/2}(ddf))`` with ``δ = (d - b) / sqrt(2 den / J)`` (a normal
``z`` for FRRC).

The figures of this module reproduce RJafroc's ``SsPowerGivenJK``,
``SsSampleSizeKGivenJ`` and ``SsPowerTable`` on the Van Dyke data (RJafroc
``dataset02``), see ``tests/stats/test_mrmc_power.py``.

References
----------
.. [1] Obuchowski NA, Rockette HE. Hypothesis testing of diagnostic accuracy for multiple
   readers and multiple tests: an ANOVA approach with dependent observations. Commun Stat
   Simul Comput 24:285-308, 1995.
.. [2] Hillis SL, Obuchowski NA, Berbaum KS. Power estimation for multireader ROC methods:
   an updated and unified approach. Acad Radiol 18:129-142, 2011 (Eqs. 9-10).
.. [3] Hillis SL, Schartz KM. Multireader sample size program for diagnostic studies:
   demonstration and methodology. J Med Imaging 5:045503, 2018.
.. [4] Hillis SL, Berbaum KS, Metz CE. Recent developments in the Dorfman-Berbaum-Metz
   procedure for multireader ROC study analysis. Acad Radiol 15:647-661, 2008 (Table 4:
   DBM pseudovalue variance components to OR components).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats as sps

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats._core import choose
from workbench.stats.mrmc import MrmcResult, obuchowski_rockette

__all__ = [
    "ANALYSES",
    "HYPOTHESES",
    "MrmcPower",
    "MrmcSampleSize",
    "MrmcVarianceComponents",
    "SampleSizeRow",
    "mrmc_power",
    "mrmc_sample_size",
    "variance_components_from_pilot",
    "variance_components_from_result",
]

#: Generalisations of the OR analysis the power can be computed for.
ANALYSES = ("RRRC", "FRRC", "RRFC")
#: ``difference``: two-sided F test of equal modalities (as RJafroc and [2]_);
#: ``superiority`` / ``non_inferiority``: lower CI limit above 0 / above ``-margin``.
HYPOTHESES = ("difference", "superiority", "non_inferiority")

_OR_KEYS = ("var_tr", "var", "cov1", "cov2", "cov3")
_DBM_KEYS = ("var_tr", "var_c", "var_tc", "var_rc", "var_err")


def _finite(name: str, value: object, where: str = "") -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StatisticsError(f"{where}{name} must be a number, found {value!r}.") from None
    if not math.isfinite(number):
        raise StatisticsError(f"{where}{name} must be finite, found {value!r}.")
    return number


def _count(name: str, value: object, minimum: int, where: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise StatisticsError(f"{where}{name} must be a whole number, found {value!r}.")
    if int(value) < minimum:
        raise StatisticsError(f"{where}{name} must be at least {minimum}, found {value!r}.")
    return int(value)


def _probability(name: str, value: object) -> float:
    p = _finite(name, value)
    if not 0.0 < p < 1.0:
        raise StatisticsError(f"{name} must lie strictly between 0 and 1, found {value!r}.")
    return p


@dataclass(frozen=True, slots=True)
class MrmcVarianceComponents:
    """OR variance components of a pilot study's figure of merit (AUC scale).

    Parameters
    ----------
    var_tr : float
        ``σ²_TR``, the modality-by-reader variance (may be estimated negative; the power
        functions truncate it at 0 as [2]_).
    var : float
        ``Var``, the error variance of one reader's figure of merit in one modality.
    cov1, cov2, cov3 : float
        Error covariances of figures of merit: same reader, different modalities
        (``Cov1``); different readers, same modality (``Cov2``); different readers and
        modalities (``Cov3``).
    n_cases : int
        ``K*``, the pilot's number of cases (the scale of the error terms).
    n_readers : int or None
        The pilot's number of readers (for the record).
    observed_effect : float or None
        The pilot's observed difference of reader-averaged figures of merit.
    source : str
        Where the components come from (a study, a file, a publication).
    """

    var_tr: float
    var: float
    cov1: float
    cov2: float
    cov3: float
    n_cases: int
    n_readers: int | None = None
    observed_effect: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for key in _OR_KEYS:
            object.__setattr__(self, key, _finite(key, getattr(self, key)))
        object.__setattr__(self, "n_cases", _count("n_cases", self.n_cases, 2))
        if self.n_readers is not None:
            object.__setattr__(self, "n_readers", _count("n_readers", self.n_readers, 1))
        if self.observed_effect is not None:
            object.__setattr__(
                self, "observed_effect", _finite("observed_effect", self.observed_effect)
            )
        if self.var <= 0:
            raise StatisticsError(f"var must be positive, found {self.var!r}.")
        for key in ("cov1", "cov2", "cov3"):
            if abs(getattr(self, key)) > self.var * (1 + 1e-9):
                raise StatisticsError(
                    f"|{key}| must not exceed var ({self.var:g}), found {getattr(self, key)!r}: "
                    "a covariance larger than the variance is not a covariance of the same "
                    "figures of merit."
                )

    @classmethod
    def from_dbm(
        cls,
        *,
        var_tr: float,
        var_c: float,
        var_tc: float,
        var_rc: float,
        var_err: float,
        n_cases: int,
        n_readers: int | None = None,
        observed_effect: float | None = None,
        source: str = "",
    ) -> MrmcVarianceComponents:
        """Convert DBM pseudovalue variance components to OR components [4]_.

        ``Var = (σ²_C + σ²_TC + σ²_RC + σ²_ε) / K``, ``Cov1 = (σ²_C + σ²_RC) / K``,
        ``Cov2 = (σ²_C + σ²_TC) / K``, ``Cov3 = σ²_C / K``; ``σ²_TR`` is the same in
        both parametrisations (as RJafroc's ``UtilDBM2ORVarCom``).

        Returns
        -------
        MrmcVarianceComponents
        """
        k = _count("n_cases", n_cases, 2)
        c, tc, rc, err = (
            _finite(n, v)
            for n, v in (
                ("var_c", var_c),
                ("var_tc", var_tc),
                ("var_rc", var_rc),
                ("var_err", var_err),
            )
        )
        return cls(
            var_tr=var_tr,
            var=(c + tc + rc + err) / k,
            cov1=(c + rc) / k,
            cov2=(c + tc) / k,
            cov3=c / k,
            n_cases=k,
            n_readers=n_readers,
            observed_effect=observed_effect,
            source=source,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "") -> MrmcVarianceComponents:
        """Read components from a mapping (a parsed components file).

        Parameters
        ----------
        data : mapping
            ``n_cases`` and either the OR keys ``var_tr, var, cov1, cov2, cov3`` or a
            ``dbm`` mapping with ``var_tr, var_c, var_tc, var_rc, var_err``; optional
            ``n_readers``, ``observed_effect``, ``source``.
        where : str
            Named in error messages (e.g. the file's path).

        Returns
        -------
        MrmcVarianceComponents

        Raises
        ------
        StatisticsError
            A key is missing, unknown or not a number; the message names it and ``where``.
        """
        prefix = f"{where}: " if where else ""
        if not isinstance(data, Mapping):
            raise StatisticsError(
                f"{prefix}expected a mapping of variance components, found {type(data).__name__}."
            )
        optional = {"n_cases", "n_readers", "observed_effect", "source"}
        dbm = data.get("dbm")
        wanted = set(_OR_KEYS) if dbm is None else {"dbm"}
        unknown = sorted(set(map(str, data)) - wanted - optional)
        if unknown:
            raise StatisticsError(
                f"{prefix}unknown key(s) {unknown}; expected n_cases with either "
                f"{', '.join(_OR_KEYS)} (OR components) or dbm: {{{', '.join(_DBM_KEYS)}}}."
            )
        if "n_cases" not in data:
            raise StatisticsError(f"{prefix}missing n_cases (the pilot's number of cases).")
        n_cases = _count("n_cases", data["n_cases"], 2, prefix)
        raw_readers, raw_effect = data.get("n_readers"), data.get("observed_effect")
        n_readers = None if raw_readers is None else _count("n_readers", raw_readers, 1, prefix)
        effect = None if raw_effect is None else _finite("observed_effect", raw_effect, prefix)
        source = str(data.get("source", "") or where)
        if dbm is not None:
            if not isinstance(dbm, Mapping):
                raise StatisticsError(f"{prefix}dbm must be a mapping of {', '.join(_DBM_KEYS)}.")
            missing = [k for k in _DBM_KEYS if k not in dbm]
            unknown = sorted(set(map(str, dbm)) - set(_DBM_KEYS))
            if missing or unknown:
                raise StatisticsError(
                    f"{prefix}dbm needs exactly {', '.join(_DBM_KEYS)}; missing {missing}, "
                    f"unknown {unknown}."
                )
            v = {k: _finite(f"dbm.{k}", dbm[k], prefix) for k in _DBM_KEYS}
            return cls.from_dbm(
                var_tr=v["var_tr"],
                var_c=v["var_c"],
                var_tc=v["var_tc"],
                var_rc=v["var_rc"],
                var_err=v["var_err"],
                n_cases=n_cases,
                n_readers=n_readers,
                observed_effect=effect,
                source=source,
            )
        missing = [k for k in _OR_KEYS if k not in data]
        if missing:
            raise StatisticsError(
                f"{prefix}missing {missing}; OR components need {', '.join(_OR_KEYS)} "
                "(or give DBM components under dbm:)."
            )
        v = {k: _finite(k, data[k], prefix) for k in _OR_KEYS}
        return cls(
            var_tr=v["var_tr"],
            var=v["var"],
            cov1=v["cov1"],
            cov2=v["cov2"],
            cov3=v["cov3"],
            n_cases=n_cases,
            n_readers=n_readers,
            observed_effect=effect,
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain ``dict`` (the OR form :meth:`from_dict` reads back)."""
        return {
            "var_tr": self.var_tr,
            "var": self.var,
            "cov1": self.cov1,
            "cov2": self.cov2,
            "cov3": self.cov3,
            "n_cases": self.n_cases,
            "n_readers": self.n_readers,
            "observed_effect": self.observed_effect,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class MrmcPower:
    """Power of a planned two-modality reader study.

    Parameters
    ----------
    power : float
        Probability that the study rejects its null hypothesis.
    n_readers, n_cases : int
        ``J`` and ``K`` of the planned study.
    effect_size : float
        Anticipated difference ``d`` of reader-averaged AUCs (second minus first).
    alpha : float
        Significance level (two-sided; the one-sided hypotheses test at ``alpha / 2``).
    analysis : str
        ``"RRRC"``, ``"FRRC"`` or ``"RRFC"``.
    hypothesis : str
        ``"difference"``, ``"superiority"`` or ``"non_inferiority"``.
    margin : float
        Non-inferiority margin (0 otherwise).
    noncentrality : float
        ``λ = J (d - b)² / (2 den)``, the non-centrality of the F (chi-square) statistic;
        a one-sided t (z) statistic has non-centrality ``sign(d - b) sqrt(λ)``.
    df_den : float
        Denominator degrees of freedom (Hillis ddf for RRRC, ``J - 1`` for RRFC,
        ``inf`` for FRRC).
    critical_value : float
        Critical value of the test statistic (F or chi-square for ``difference``, t or z
        otherwise).
    se_difference : float
        Standard error of the reader-averaged difference, ``sqrt(2 den / J)``.
    """

    power: float
    n_readers: int
    n_cases: int
    effect_size: float
    alpha: float
    analysis: str
    hypothesis: str
    margin: float
    noncentrality: float
    df_den: float
    critical_value: float
    se_difference: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain ``dict`` (``df_den`` ``inf`` as ``None``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["df_den"] = None if math.isinf(self.df_den) else self.df_den
        return out


@dataclass(frozen=True, slots=True)
class SampleSizeRow:
    """Cases needed with one number of readers.

    Parameters
    ----------
    n_readers : int
    n_cases : int or None
        Smallest number of cases whose power reaches the target; None when no number
        up to the search limit does (``reason`` says why).
    power : float or None
        Power with ``n_cases`` cases.
    power_limit : float
        Power with these readers and unlimited cases: the ceiling set by ``σ²_TR`` and
        the readers' number, which more cases cannot lift.
    reason : str
        Why ``n_cases`` is None; empty otherwise.
    """

    n_readers: int
    n_cases: int | None
    power: float | None
    power_limit: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MrmcSampleSize:
    """Readers-by-cases table for a target power.

    Parameters
    ----------
    rows : tuple of SampleSizeRow
        One row per candidate number of readers, in the order asked for.
    target_power, effect_size, alpha : float
    analysis, hypothesis : str
    margin : float
    max_cases : int
        The search limit on the number of cases.
    components : MrmcVarianceComponents
        The pilot's variance components the table rests on.
    """

    rows: tuple[SampleSizeRow, ...]
    target_power: float
    effect_size: float
    alpha: float
    analysis: str
    hypothesis: str
    margin: float
    max_cases: int
    components: MrmcVarianceComponents = field(repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per number of readers: ``n_readers, n_cases, power, power_limit, reason``."""
        return pd.DataFrame(
            [
                {
                    "n_readers": r.n_readers,
                    "n_cases": r.n_cases,
                    "power": r.power,
                    "power_limit": r.power_limit,
                    "reason": r.reason,
                }
                for r in self.rows
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """Inputs, components and rows as plain values (for records and audit entries)."""
        return {
            "target_power": self.target_power,
            "effect_size": self.effect_size,
            "alpha": self.alpha,
            "analysis": self.analysis,
            "hypothesis": self.hypothesis,
            "margin": self.margin,
            "max_cases": self.max_cases,
            "components": self.components.to_dict(),
            "rows": [
                {
                    "n_readers": r.n_readers,
                    "n_cases": r.n_cases,
                    "power": r.power,
                    "power_limit": r.power_limit,
                    "reason": r.reason,
                }
                for r in self.rows
            ],
        }


def _analysis(value: object) -> str:
    text = str(getattr(value, "value", value)).strip().upper()
    if text in ANALYSES:
        return text
    close = difflib.get_close_matches(text, ANALYSES, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise StatisticsError(
        f"Unknown analysis {value!r}: expected one of {', '.join(map(repr, ANALYSES))}.{hint}"
    )


def _hypothesis(value: object, margin: float) -> tuple[str, float]:
    text = str(getattr(value, "value", value)).strip().lower().replace("-", "_")
    hyp = choose("hypothesis", text, HYPOTHESES)
    m = _finite("margin", margin)
    if hyp == "non_inferiority":
        if m <= 0:
            raise StatisticsError(f"A non-inferiority plan needs a margin > 0, found {margin!r}.")
    elif m != 0:
        raise StatisticsError(
            f"margin applies to non_inferiority only; found margin={margin!r} with "
            f"hypothesis {hyp!r}."
        )
    return hyp, m


def _den_ddf(
    c: MrmcVarianceComponents, n_readers: int, scale: NDArray[np.float64], analysis: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``den`` and ``ddf`` for each error scale ``K*/K`` (0 for unlimited cases) [2]_."""
    j = n_readers
    var_tr = max(c.var_tr, 0.0)
    c23 = max(c.cov2 - c.cov3, 0.0)
    within = c.var - c.cov1
    if analysis == "FRRC":
        den = scale * (within + (j - 1) * c23)
        return den, np.full_like(scale, np.inf)
    ms_tr = var_tr + scale * (within - c23)
    if analysis == "RRFC":
        return ms_tr, np.full_like(scale, float(j - 1))
    den = var_tr + scale * (within + (j - 1) * c23)
    with np.errstate(divide="ignore", invalid="ignore"):
        ddf = np.where(ms_tr > 0, den**2 * (j - 1) / np.where(ms_tr > 0, ms_tr, 1.0) ** 2, np.inf)
    return den, ddf


def _power(
    shift: float,
    n_readers: int,
    den: NDArray[np.float64],
    ddf: NDArray[np.float64],
    alpha: float,
    one_sided: bool,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Power, λ, critical value and SE for a true distance ``shift = d - b`` from the bound.

    ``den`` must be positive; ``ddf`` may be ``inf`` (chi-square / normal reference).
    """
    se = np.sqrt(2.0 * den / n_readers)
    lam = n_readers * shift**2 / (2.0 * den)
    finite = np.isfinite(ddf)
    safe_ddf = np.where(finite, ddf, 1.0)
    if one_sided:
        delta = math.copysign(1.0, shift) * np.sqrt(lam)
        crit = np.where(finite, sps.t.ppf(1 - alpha / 2, safe_ddf), sps.norm.ppf(1 - alpha / 2))
        power = np.where(finite, sps.nct.sf(crit, safe_ddf, delta), sps.norm.sf(crit - delta))
    else:
        crit = np.where(finite, sps.f.ppf(1 - alpha, 1, safe_ddf), sps.chi2.ppf(1 - alpha, 1))
        # scipy's ncf.sf is wrong at nc = 0 (negative), so no effect uses the central F.
        central = np.where(finite, sps.f.sf(crit, 1, safe_ddf), sps.chi2.sf(crit, 1))
        shifted = np.where(finite, sps.ncf.sf(crit, 1, safe_ddf, lam), sps.ncx2.sf(crit, 1, lam))
        power = np.where(lam > 0, shifted, central)
    return (
        np.clip(np.asarray(power, dtype=np.float64), 0.0, 1.0),
        np.asarray(lam, dtype=np.float64),
        np.asarray(crit, dtype=np.float64),
        np.asarray(se, dtype=np.float64),
    )


def _check_components(components: object) -> MrmcVarianceComponents:
    if not isinstance(components, MrmcVarianceComponents):
        raise StatisticsError(
            "components must be MrmcVarianceComponents (see variance_components_from_pilot or "
            f"MrmcVarianceComponents.from_dict), found {type(components).__name__}."
        )
    return components


def _bound(hypothesis: str, margin: float) -> float:
    return -margin if hypothesis == "non_inferiority" else 0.0


def mrmc_power(
    components: MrmcVarianceComponents,
    *,
    effect_size: float,
    n_readers: int,
    n_cases: int,
    alpha: float = 0.05,
    analysis: str = "RRRC",
    hypothesis: str = "difference",
    margin: float = 0.0,
) -> MrmcPower:
    """Power of a fully crossed two-modality reader study with ``J`` readers and ``K`` cases.

    Parameters
    ----------
    components : MrmcVarianceComponents
        The pilot's OR variance components (with its number of cases ``K*``).
    effect_size : float
        Anticipated difference ``d`` of reader-averaged AUCs (second modality minus first).
    n_readers : int
        ``J`` >= 2.
    n_cases : int
        ``K`` >= 2.
    alpha : float
        Significance level; ``difference`` is the two-sided F test at ``alpha``;
        ``superiority`` and ``non_inferiority`` require the lower limit of the two-sided
        ``1 - alpha`` CI to exceed 0 or ``-margin`` (one-sided at ``alpha / 2``).
    analysis : {"RRRC", "FRRC", "RRFC"}
        Random readers and cases (default), fixed readers or fixed cases.
    hypothesis : {"difference", "superiority", "non_inferiority"}
    margin : float
        Non-inferiority margin (> 0 for ``non_inferiority``, else 0).

    Returns
    -------
    MrmcPower

    Raises
    ------
    StatisticsError
        Invalid input (named with the value found).
    NotEstimableError
        The components leave no variance of the difference for this design (``den <= 0``).

    Notes
    -----
    ``den``, ``ddf`` and ``λ = J d² / (2 den)`` are those of the module docstring
    ([2]_, Eq. 10; RJafroc ``SsPowerGivenJKOrVarCom``).

    Examples
    --------
    >>> vc = MrmcVarianceComponents(var_tr=2.0040252e-4, var=8.0228827e-4,
    ...     cov1=3.4661371e-4, cov2=3.4407483e-4, cov3=2.3902837e-4, n_cases=114)
    >>> round(mrmc_power(vc, effect_size=0.05, n_readers=6, n_cases=251).power, 4)
    0.8923
    """
    c = _check_components(components)
    d = _finite("effect_size", effect_size)
    j = _count("n_readers", n_readers, 2)
    k = _count("n_cases", n_cases, 2)
    a = _probability("alpha", alpha)
    which = _analysis(analysis)
    hyp, m = _hypothesis(hypothesis, margin)
    den, ddf = _den_ddf(c, j, np.array([c.n_cases / k], dtype=np.float64), which)
    if not den[0] > 0:
        raise NotEstimableError(
            f"The variance of the difference is {den[0]:g} for {which} with {j} readers and "
            f"{k} cases: the components leave nothing to plan with (check var, cov1, cov2, "
            "cov3 and var_tr)."
        )
    shift = d - _bound(hyp, m)
    power, lam, crit, se = _power(shift, j, den, ddf, a, hyp != "difference")
    return MrmcPower(
        power=float(power[0]),
        n_readers=j,
        n_cases=k,
        effect_size=d,
        alpha=a,
        analysis=which,
        hypothesis=hyp,
        margin=m,
        noncentrality=float(lam[0]),
        df_den=float(ddf[0]),
        critical_value=float(crit[0]),
        se_difference=float(se[0]),
    )


def mrmc_sample_size(
    components: MrmcVarianceComponents,
    *,
    effect_size: float,
    power: float = 0.8,
    readers: Iterable[int] = (4, 6, 8, 10),
    alpha: float = 0.05,
    analysis: str = "RRRC",
    hypothesis: str = "difference",
    margin: float = 0.0,
    max_cases: int = 2000,
) -> MrmcSampleSize:
    """Smallest number of cases reaching ``power`` for each candidate number of readers.

    Parameters
    ----------
    components : MrmcVarianceComponents
        The pilot's OR variance components.
    effect_size : float
        Anticipated difference ``d`` of reader-averaged AUCs (not 0 for ``difference`` and
        ``superiority``).
    power : float
        Target power in (alpha, 1).
    readers : iterable of int
        Candidate numbers of readers (each >= 2), e.g. ``(4, 6, 8, 10)``.
    alpha, analysis, hypothesis, margin
        As :func:`mrmc_power`.
    max_cases : int
        Largest number of cases searched (RJafroc searches up to 2000).

    Returns
    -------
    MrmcSampleSize
        One row per number of readers. A row whose power cannot reach the target
        with up to ``max_cases`` cases has ``n_cases`` None and says why, with the
        power attainable with unlimited cases (``power_limit``).

    Notes
    -----
    Every ``K`` from 2 to ``max_cases`` is evaluated and the smallest one whose power
    is at least the target is returned, as RJafroc's ``SsSampleSizeKGivenJ`` (which
    steps ``K`` upwards from 2).

    Examples
    --------
    >>> vc = MrmcVarianceComponents(var_tr=2.0040252e-4, var=8.0228827e-4,
    ...     cov1=3.4661371e-4, cov2=3.4407483e-4, cov3=2.3902837e-4, n_cases=114)
    >>> [r.n_cases for r in mrmc_sample_size(vc, effect_size=0.05, readers=[6]).rows]
    [170]
    """
    c = _check_components(components)
    d = _finite("effect_size", effect_size)
    a = _probability("alpha", alpha)
    target = _probability("power", power)
    which = _analysis(analysis)
    hyp, m = _hypothesis(hypothesis, margin)
    limit = _count("max_cases", max_cases, 2)
    if isinstance(readers, int | str):
        raise StatisticsError(f"readers must be a list of numbers of readers, found {readers!r}.")
    wanted = [_count("each number of readers", r, 2) for r in readers]
    if not wanted:
        raise StatisticsError("readers must name at least one number of readers, found none.")
    shift = d - _bound(hyp, m)
    null_power = a if hyp == "difference" else a / 2
    if target <= null_power:
        raise StatisticsError(
            f"power must exceed the test's size {null_power:g} (its power with no effect), "
            f"found {power!r}."
        )
    if shift == 0:
        raise StatisticsError(
            "The anticipated effect equals the hypothesis' bound "
            f"({_bound(hyp, m):g}); no number of readers and cases gives power above "
            f"{null_power:g}. Give a non-zero effect_size (or a margin for non_inferiority)."
        )
    cases = np.arange(2, limit + 1, dtype=np.float64)
    rows = []
    for j in wanted:
        den, ddf = _den_ddf(c, j, c.n_cases / cases, which)
        ceiling_den, ceiling_ddf = _den_ddf(c, j, np.zeros(1), which)
        if ceiling_den[0] > 0:
            ceiling = float(
                _power(shift, j, ceiling_den, ceiling_ddf, a, hyp != "difference")[0][0]
            )
        else:
            ceiling = 1.0 if (hyp == "difference" or shift > 0) else 0.0
        powers = np.full_like(cases, np.nan)
        valid = den > 0
        if valid.any():
            powers[valid] = _power(shift, j, den[valid], ddf[valid], a, hyp != "difference")[0]
        hits = np.flatnonzero(powers >= target)
        if hits.size:
            first = int(hits[0])
            rows.append(SampleSizeRow(j, int(cases[first]), float(powers[first]), ceiling))
        else:
            reason = (
                f"power with unlimited cases is {ceiling:.3f} (reader variability σ²_TR): "
                "add readers"
                if ceiling < target
                else f"more than {limit} cases needed"
            )
            rows.append(SampleSizeRow(j, None, None, ceiling, reason))
    return MrmcSampleSize(
        rows=tuple(rows),
        target_power=target,
        effect_size=d,
        alpha=a,
        analysis=which,
        hypothesis=hyp,
        margin=m,
        max_cases=limit,
        components=c,
    )


def variance_components_from_result(
    result: MrmcResult, *, observed_effect: float | None = None, source: str = ""
) -> MrmcVarianceComponents:
    """The OR variance components of a finished OR analysis (a pilot or completed study).

    Parameters
    ----------
    result : MrmcResult
        From :func:`~workbench.stats.obuchowski_rockette` (or a study's analysis).
    observed_effect : float, optional
        The observed difference to record; default the result's first difference.
    source : str
        Where the analysis comes from.

    Returns
    -------
    MrmcVarianceComponents
    """
    if not isinstance(result, MrmcResult):
        raise StatisticsError(f"result must be an MrmcResult, found {type(result).__name__}.")
    vc = result.variance_components
    effect = result.difference.value if observed_effect is None else observed_effect
    return MrmcVarianceComponents(
        var_tr=vc["var_tr"],
        var=vc["var"],
        cov1=vc["cov1"],
        cov2=vc["cov2"],
        cov3=vc["cov3"],
        n_cases=result.n_cases,
        n_readers=len(result.readers),
        observed_effect=effect,
        source=source,
    )


def variance_components_from_pilot(
    frame: pd.DataFrame,
    *,
    reader: str,
    modality: str,
    case: str,
    truth: str,
    rating: str,
    covariance: str = "jackknife",
    source: str = "",
) -> MrmcVarianceComponents:
    """Estimate OR variance components from a pilot study's ratings.

    Parameters
    ----------
    frame : pandas.DataFrame
        Long format, one row per (reader, modality, case) with the rating, fully crossed,
        as :func:`~workbench.stats.obuchowski_rockette`.
    reader, modality, case, truth, rating : str
        Column names.
    covariance : {"jackknife", "delong"}
        Estimator of the AUC covariances (jackknife: as RJafroc's sample-size functions).
    source : str
        Where the pilot comes from.

    Returns
    -------
    MrmcVarianceComponents
        ``σ²_TR``, ``Var``, ``Cov1-3`` of the empirical AUC, ``K*`` the pilot's cases,
        and the observed difference (first modality minus second, in sorted order).
    """
    result = obuchowski_rockette(
        frame,
        reader=reader,
        modality=modality,
        case=case,
        truth=truth,
        rating=rating,
        covariance=covariance,
    )
    return variance_components_from_result(result, source=source)
