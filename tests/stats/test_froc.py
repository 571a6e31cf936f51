"""Free-response statistics against RJafroc's published values, and their properties.

Sources of every number (file, commit, R call) are listed in
tests/data/reference/froc/README.md; each block below names its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats import (
    froc_curve,
    froc_estimate,
    froc_figure_of_merit,
    froc_mrmc,
    obuchowski_rockette_from_jackknife,
    sensitivity_at_fppi,
)

FROC = Path(__file__).resolve().parents[1] / "data" / "reference" / "froc"


def _load(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(FROC / f"{name}_marks.csv"), pd.read_csv(FROC / f"{name}_truth.csv")


@pytest.fixture(scope="module")
def ds04() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _load("dataset04")


@pytest.fixture(scope="module")
def ds01() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _load("dataset01")


@pytest.fixture(scope="module")
def ds05() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _load("dataset05")


def _per_reader(marks: pd.DataFrame, truth: pd.DataFrame, fom: str) -> pd.DataFrame:
    return pd.Series(
        {
            k: froc_figure_of_merit(g, truth, fom=fom)
            for k, g in marks.groupby(["modality", "reader"])
        }
    ).unstack()


# --- dataset04, Chakraborty (2017) ch. 18 supplement ---------------------------------------
# onlinebookk21778@6f75f48 Ch18/software/FEDwAfroc.xlsx and FEDHrAuc.xlsx, written by
# UtilOutputReport(dataset04, method = "DBMH", fom = "wAFROC" | "HrAuc", renumber = "TRUE").
# Rows: modality 1-5; columns: readers 1, 3, 4, 5 (renumbered 1-4 in the workbook).
DS04_FOMS = {
    "wafroc": [  # sheet FOMs of FEDwAfroc.xlsx
        (0.7792666666666422, 0.724891666666683, 0.7036249999999704, 0.8050916666666543),
        (0.7869999999999845, 0.7268999999999859, 0.7226166666666238, 0.803783333333312),
        (0.729691666666647, 0.7157583333333625, 0.6723083333333174, 0.7726583333333206),
        (0.8101333333333114, 0.7431166666666627, 0.6943583333332858, 0.8294083333333329),
        (0.7487999999999896, 0.6822749999999982, 0.6551749999999812, 0.7712499999999671),
    ],
    "hrauc": [  # sheet FOMs of FEDHrAuc.xlsx
        (0.90425, 0.7982, 0.81175, 0.86645),
        (0.86425, 0.8447, 0.8205, 0.8716),
        (0.81295, 0.81635, 0.75275, 0.8573),
        (0.90235, 0.8315, 0.78865, 0.8798),
        (0.8414, 0.773, 0.77115, 0.848),
    ],
}
# sheet RRRC: F, ddf, p
DS04_F = {
    "wafroc": (7.800299667125051, 36.79334273348491, 0.00011710500441841631),
    "hrauc": (3.4682364382696957, 16.80374936253875, 0.03054455576681636),
}
# sheet RRRC, "95% CI's FOMs, treatment difference": estimate, StdErr, Pr > t, lower, upper
DS04_DIFFS = {
    "wafroc": {
        ("1", "2"): (
            -0.006856249999989017,
            0.012185669636685973,
            0.5770866633497511,
            -0.031551443917432795,
            0.017838943917454757,
        ),
        ("1", "3"): (
            0.030614583333325673,
            0.012185669636685973,
            0.016509286751796796,
            0.005919389415881899,
            0.05530977725076945,
        ),
        ("1", "4"): (
            -0.01603541666666064,
            0.012185669636685973,
            0.19633986836815862,
            -0.04073061058410442,
            0.008659777250783134,
        ),
        ("1", "5"): (
            0.03884375000000351,
            0.012185669636685973,
            0.0029246461059122867,
            0.014148556082559733,
            0.06353894391744729,
        ),
        ("2", "3"): (
            0.03747083333331469,
            0.012185669636685973,
            0.003955745089744867,
            0.012775639415870916,
            0.06216602725075847,
        ),
        ("2", "4"): (
            -0.009179166666671623,
            0.012185669636685973,
            0.45607767097738716,
            -0.0338743605841154,
            0.015516027250772151,
        ),
        ("2", "5"): (
            0.045699999999992524,
            0.012185669636685973,
            0.0006069710570170745,
            0.02100480608254875,
            0.0703951939174363,
        ),
        ("3", "4"): (
            -0.046649999999986314,
            0.012185669636685973,
            0.0004845953995172191,
            -0.07134519391743009,
            -0.02195480608254254,
        ),
        ("3", "5"): (
            0.008229166666677834,
            0.012185669636685973,
            0.5036978686744022,
            -0.01646602725076594,
            0.03292436058412161,
        ),
        ("4", "5"): (
            0.05487916666666415,
            0.012185669636685973,
            6.522814173088902e-05,
            0.030183972749220373,
            0.07957436058410793,
        ),
    },
    "hrauc": {
        ("1", "2"): (
            -0.005099999999999993,
            0.01653710332662531,
            0.761570284361024,
            -0.040021304509179276,
            0.02982130450917929,
        ),
        ("1", "3"): (
            0.03532500000000005,
            0.01653710332662531,
            0.047689094486372346,
            0.0004036954908207685,
            0.07024630450917933,
        ),
        ("1", "4"): (
            -0.005412499999999931,
            0.01653710332662531,
            0.7474873313983499,
            -0.040333804509179214,
            0.02950880450917935,
        ),
        ("1", "5"): (
            0.036775,
            0.01653710332662531,
            0.04017375842808161,
            0.0018536954908207198,
            0.07169630450917928,
        ),
        ("2", "3"): (
            0.040425000000000044,
            0.01653710332662531,
            0.025841064038316656,
            0.005503695490820762,
            0.07534630450917933,
        ),
        ("2", "4"): (
            -0.00031249999999993783,
            0.01653710332662531,
            0.9851459191687099,
            -0.03523380450917922,
            0.034608804509179344,
        ),
        ("2", "5"): (
            0.041874999999999996,
            0.01653710332662531,
            0.021613615771227994,
            0.006953695490820713,
            0.07679630450917928,
        ),
        ("3", "4"): (
            -0.04073749999999998,
            0.01653710332662531,
            0.024868769199328317,
            -0.07565880450917926,
            -0.0058161954908207,
        ),
        ("3", "5"): (
            0.0014499999999999513,
            0.01653710332662531,
            0.9311661673543118,
            -0.03347130450917933,
            0.036371304509179234,
        ),
        ("4", "5"): (
            0.04218749999999993,
            0.01653710332662531,
            0.02079267265888143,
            0.007266195490820651,
            0.07710880450917922,
        ),
    },
}
# sheet RRRC, "95% CI's FOMs, each treatment": estimate, StdErr, DF, lower, upper
DS04_PER_MODALITY = {
    "wafroc": {
        "1": (
            0.7532187499999875,
            0.02976245325935374,
            7.708447434179888,
            0.6841319315936825,
            0.8223055684062925,
        ),
        "2": (
            0.7600749999999765,
            0.02843396349219016,
            10.692083978469025,
            0.6972716737988227,
            0.8228783262011303,
        ),
        "3": (
            0.7226041666666618,
            0.0269244476645362,
            8.619176075047351,
            0.6612841380477326,
            0.7839241952855911,
        ),
        "4": (
            0.7692541666666481,
            0.035719662965608946,
            5.242424409075954,
            0.6786963797156831,
            0.8598119536176132,
        ),
        "5": (
            0.714374999999984,
            0.033251036324265744,
            6.585418375853394,
            0.6347341481235038,
            0.7940158518764642,
        ),
    },
    "hrauc": {
        "1": (
            0.8451625,
            0.028578244291118986,
            5.457476559494488,
            0.7735139104290218,
            0.9168110895709782,
        ),
        "2": (
            0.8502625,
            0.019928156544323523,
            27.722577520396463,
            0.8094231103317084,
            0.8911018896682916,
        ),
        "3": (
            0.8098375,
            0.026647889042250284,
            7.037142778119537,
            0.7468926136822417,
            0.8727823863177583,
        ),
        "4": (
            0.850575,
            0.029408700744579595,
            5.403261405453752,
            0.7766434207997142,
            0.9245065792002858,
        ),
        "5": (
            0.8083875,
            0.025758346455901564,
            6.775652530370623,
            0.7470674649752981,
            0.869707535024702,
        ),
    },
}
# sheet RRFC: F, ddf, p
DS04_RRFC = {
    "wafroc": (13.658571719470373, 12.0, 0.00020192224012083315),
    "hrauc": (4.104130590874494, 12.0, 0.02532830832341637),
}
# OR variance components.
# wAFROC: RJafroc@44b0e39e goodValues361/UtilOutputReport/dataset04-OR-wAFROC.rds
#   = UtilOutputReport(dataset04, FOM = "wAFROC", method = "OR"), $ANOVA$VarCom, $ANOVA$TRanova
# HrAuc: goodValues361/UtilVarComponents/JackknifeDataset04.rds
#   = UtilORVarComp(DfFroc2Roc(dataset04), FOM = "Wilcoxon", covEstMethod = "jackknife")
DS04_VARCOM = {
    "wafroc": {
        "var_r": 0.0022086456355432673,
        "var_tr": -0.0003045997763241859,
        "cov1": 0.00042203598192083644,
        "cov2": 0.000336155636528308,
        "cov3": 0.00030431123783436086,
        "var": 0.0009280836511520804,
        "ms_t": 0.0023165414895825534,
        "ms_r": 0.011801455392361824,
        "ms_tr": 0.00016960349421311091,
    },
    "hrauc": {
        "var_r": 0.00128372105110448,
        "var_tr": -1.092522712393295e-05,
        "cov1": 0.00029480095983828287,
        "cov2": 0.00023331406041050308,
        "cov3": 0.0002121278859427617,
        "var": 0.0007891192364299571,
        "ms_t": 0.0018969573749999997,
        "ms_r": 0.007294177500000006,
        "ms_tr": 0.0004622068749999999,
    },
}
FOMS_TOL = 1e-10  # the published values carry RJafroc's floating accumulation error


@pytest.mark.parametrize("fom", ["wafroc", "hrauc"])
def test_dataset04_figures_of_merit_match_rjafroc(
    ds04: tuple[pd.DataFrame, pd.DataFrame], fom: str
) -> None:
    marks, truth = ds04
    got = _per_reader(marks, truth, fom)
    assert list(got.columns) == [1, 3, 4, 5]
    np.testing.assert_allclose(got.to_numpy(), np.array(DS04_FOMS[fom]), rtol=0, atol=FOMS_TOL)


@pytest.mark.parametrize("fom", ["wafroc", "hrauc"])
def test_dataset04_or_rrrc_matches_rjafroc(
    ds04: tuple[pd.DataFrame, pd.DataFrame], fom: str
) -> None:
    marks, truth = ds04
    res = froc_mrmc(marks, truth, fom=fom)
    f, ddf, p = DS04_F[fom]
    assert res.statistic == pytest.approx(f, rel=1e-9)
    assert res.df_den == pytest.approx(ddf, rel=1e-9)
    assert res.p_value == pytest.approx(p, rel=1e-8)
    assert res.df_num == 4.0 and res.n_cases == 200
    np.testing.assert_allclose(res.reader_auc.to_numpy(), DS04_FOMS[fom], atol=FOMS_TOL)
    assert set(res.differences) == set(DS04_DIFFS[fom])
    for pair, (est, se, pr, lo, hi) in DS04_DIFFS[fom].items():
        d = res.differences[pair]
        assert d.value == pytest.approx(est, abs=1e-10)
        assert d.se == pytest.approx(se, rel=1e-9)
        assert (d.ci_low, d.ci_high) == pytest.approx((lo, hi), abs=1e-10)
        t_stat = d.value / float(d.se or np.nan)
        assert 2 * sps.t.sf(abs(t_stat), res.df_den) == pytest.approx(pr, rel=1e-7)
    for mod, (est, se, df, lo, hi) in DS04_PER_MODALITY[fom].items():
        m = res.modality_auc[mod]
        assert (m.value, m.se) == pytest.approx((est, se), rel=1e-9)
        assert (m.ci_low, m.ci_high) == pytest.approx((lo, hi), abs=1e-10)
        assert f"df={df:.2f}" in m.method
    vc = res.variance_components
    for key, value in DS04_VARCOM[fom].items():
        assert vc[key] == pytest.approx(value, rel=1e-8, abs=1e-15), key


def test_dataset04_book_text_rounded_values(ds04: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # RJafrocBook 18a-analyzing-froc-data.Rmd: "F(4, 36.8) = 7.8, p = 0.00012"; "The difference
    # is 0.05488 with a 95% confidence interval (0.03018, 0.07957)"; inferred ROC "0.04219 with
    # a 95% confidence interval (0.00727, 0.07711)", "p = 0.03054".
    marks, truth = ds04
    w = froc_mrmc(marks, truth, fom="wAFROC")  # RJafroc's spelling is accepted
    assert (round(w.statistic, 1), round(w.df_den, 1), round(w.p_value, 5)) == (7.8, 36.8, 0.00012)
    d = w.differences[("4", "5")]
    assert (round(d.value, 5), round(d.ci_low, 5), round(d.ci_high, 5)) == (
        0.05488,
        0.03018,
        0.07957,
    )
    h = froc_mrmc(marks, truth, fom="HrAuc")
    d = h.differences[("4", "5")]
    assert (round(d.value, 5), round(d.ci_low, 5), round(d.ci_high, 5)) == (
        0.04219,
        0.00727,
        0.07711,
    )
    assert round(h.p_value, 5) == 0.03054


def test_dataset04_fixed_readers_and_fixed_cases_match_rjafroc(
    ds04: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    # RJafroc@44b0e39e goodValues361/UtilOutputReport/dataset04-OR-wAFROC.rds, $FRRC and $RRFC
    marks, truth = ds04
    res = froc_mrmc(marks, truth, fom="wafroc")
    fr, fc = res.fixed_readers, res.fixed_cases
    assert fr is not None and fc is not None
    assert fr.statistic == pytest.approx(15.403026413594041, rel=1e-9)  # $FRRC$FTests Chisq
    assert fr.p_value == pytest.approx(0.003934323760160674, rel=1e-8)
    assert fr.df_den is None and fr.df_num == 4.0
    d = fr.differences[("4", "5")]  # $FRRC$ciDiffTrt["trt4-trt5", ]
    assert d.se == pytest.approx(0.01734331089084615, rel=1e-9)
    assert (d.ci_low, d.ci_high) == pytest.approx((0.020886901947924412, 0.08887143138540388))
    m = fr.modality_auc["1"]  # $FRRC$ciAvgRdrEachTrt["trt1", ]
    assert m.se == pytest.approx(0.02166217912796959, rel=1e-9)
    assert (m.ci_low, m.ci_high) == pytest.approx((0.7107616590825119, 0.7956758409174631))
    r = fr.reader_differences[("1", "1", "2")]  # $FRRC$ciDiffTrtEachRdr["rdr1::trt1-trt2", ]
    assert r.se == pytest.approx(0.030688766975979626, rel=1e-9)
    assert (r.ci_low, r.ci_high) == pytest.approx((-0.0678822113362045, 0.05241554466951999))
    # FEDwAfroc.xlsx sheet RRFC and $RRFC of the .rds
    assert (fc.statistic, fc.df_den, fc.p_value) == pytest.approx(DS04_RRFC["wafroc"], rel=1e-9)
    d = fc.differences[("4", "5")]
    assert d.se == pytest.approx(0.009208786407912579, rel=1e-9)
    assert (d.ci_low, d.ci_high) == pytest.approx((0.034814944695439026, 0.07494338863788927))
    m = fc.modality_auc["1"]
    assert m.se == pytest.approx(0.023507546900616336, rel=1e-9)
    assert (m.ci_low, m.ci_high) == pytest.approx((0.6784072442198376, 0.8280302557801374))
    h = froc_mrmc(marks, truth, fom="hrauc").fixed_cases
    assert h is not None
    assert (h.statistic, h.df_den, h.p_value) == pytest.approx(DS04_RRFC["hrauc"], rel=1e-9)


# --- dataset01: RJafroc@44b0e39e goodValues361/FOM/UtilFigureOfMeritFROC-<FOM>.rds ---------
# = UtilFigureOfMerit(dataset01, FOM = <FOM>); rows BT, DM; readers 1-5.
DS01_FOMS = {
    "HrAuc": (
        (
            0.795997191011236,
            0.8652270599250936,
            0.8411750936329588,
            0.8311095505617978,
            0.8465589887640449,
        ),
        (
            0.6689489700374532,
            0.7211493445692884,
            0.7841175093632958,
            0.7979283707865169,
            0.7061095505617978,
        ),
    ),
    "wAFROC1": (
        (
            0.807986638323717,
            0.8696629213483146,
            0.8747798360157911,
            0.8517613118736714,
            0.8563467962344367,
        ),
        (
            0.7277102945642272,
            0.778150622532645,
            0.8225630124506529,
            0.7968417856058305,
            0.7496963255390222,
        ),
    ),
    "AFROC1": (
        (
            0.8073399715504979,
            0.867226173541963,
            0.8712375533428165,
            0.8442105263157895,
            0.8565860597439545,
        ),
        (
            0.725149359886202,
            0.777126600284495,
            0.8086770981507824,
            0.793854907539118,
            0.7473968705547653,
        ),
    ),
    "MaxLLF": (
        (
            0.8210526315789474,
            0.8631578947368421,
            0.9157894736842105,
            0.8315789473684211,
            0.8105263157894737,
        ),
        (
            0.7578947368421053,
            0.7578947368421053,
            0.8210526315789474,
            0.6631578947368421,
            0.6947368421052632,
        ),
    ),
    "MaxNLF": (
        (0.8333333333333334, 0.375, 0.71875, 0.3125, 0.2708333333333333),
        (0.7604166666666666, 0.4166666666666667, 0.6041666666666666, 0.15625, 0.40625),
    ),
    "MaxNLFAllCases": (
        (
            0.5891891891891892,
            0.2648648648648649,
            0.43243243243243246,
            0.23243243243243245,
            0.1783783783783784,
        ),
        (
            0.5135135135135135,
            0.24864864864864866,
            0.3567567567567568,
            0.10270270270270271,
            0.24864864864864866,
        ),
    ),
    "HrSp": (
        (0.33333333333333337, 0.6354166666666667, 0.28125, 0.6875, 0.78125),
        (0.33333333333333337, 0.5833333333333333, 0.39583333333333337, 0.84375, 0.6041666666666667),
    ),
    "HrSe": (
        (
            0.8876404494382022,
            0.9101123595505618,
            0.9662921348314607,
            0.8764044943820225,
            0.8426966292134831,
        ),
        (
            0.8089887640449438,
            0.7865168539325843,
            0.8876404494382022,
            0.7191011235955056,
            0.7415730337078652,
        ),
    ),
}


@pytest.mark.parametrize("fom", sorted(DS01_FOMS))
def test_dataset01_figures_of_merit_match_rjafroc(
    ds01: tuple[pd.DataFrame, pd.DataFrame], fom: str
) -> None:
    marks, truth = ds01
    got = _per_reader(marks, truth, fom)
    assert list(got.index) == ["BT", "DM"]
    np.testing.assert_allclose(got.to_numpy(), np.array(DS01_FOMS[fom]), rtol=0, atol=FOMS_TOL)


def test_dataset01_or_wafroc_matches_rjafroc(ds01: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # RJafroc@44b0e39e goodValues361/SigTest/OR/dataset01.rds
    # = St(dataset01, FOM = "wAFROC", method = "OR", analysisOption = "RRRC")
    marks, truth = ds01
    res = froc_mrmc(marks, truth)
    assert res.statistic == pytest.approx(10.298825245686821, rel=1e-9)
    assert res.df_den == pytest.approx(24.702758411989297, rel=1e-9)
    assert res.p_value == pytest.approx(0.003668578390869204, rel=1e-8)
    d = res.difference
    assert (d.value, d.se) == pytest.approx((0.10112359550561789, 0.03151074406575728), rel=1e-9)
    assert (d.ci_low, d.ci_high) == pytest.approx((0.03618638451672283, 0.16606080649451294))
    bt, dm = res.modality_auc["BT"], res.modality_auc["DM"]
    assert (bt.ci_low, bt.ci_high) == pytest.approx((0.7582464882463432, 0.8662268263603982))
    assert (dm.ci_low, dm.ci_high) == pytest.approx((0.6398098228137606, 0.782416300781745))
    vc = res.variance_components
    expected = {  # $ANOVA$VarCom and $ANOVA$TRanova
        "var_r": 0.0008130524788335656,
        "var_tr": 0.0004867615302825792,
        "cov1": 0.0002992350615452843,
        "cov2": 0.0005718211031058193,
        "cov3": 0.00027513419513482086,
        "var": 0.0011080433783228556,
        "ms_t": 0.025564953919959617,
        "ms_r": 0.00267318962957721,
        "ms_tr": 0.0009988829390891521,
    }
    for key, value in expected.items():
        assert vc[key] == pytest.approx(value, rel=1e-8), key


# --- dataset05: RJafroc@44b0e39e goodValues361/MeanSquares/dataset05<FOM>-OR.rds -----------
# = UtilMeanSquares(dataset05, FOM = <FOM>, method = "OR"): msT, msR, msTR
DS05_MEAN_SQUARES = {
    "wAFROC": (0.027397180663218265, 0.01833740749313713, 0.000927753738136936),
    "wAFROC1": (0.02947089900302676, 0.012870268970241527, 0.0002446556436882146),
    "AFROC": (0.02085002496405143, 0.018402331252273262, 0.0008545557324909792),
    "AFROC1": (0.023085309524667204, 0.01308894670511133, 0.00028130245435191973),
    "HrAuc": (0.012295690221012522, 0.007168791656032409, 0.001213515168338032),
    "MaxLLF": (0.05745475438092498, 0.023584378690669983, 0.00046681987934501547),
    "MaxNLF": (0.03755829903978056, 0.20305212620027438, 0.047126200274348426),
}


@pytest.mark.parametrize("fom", sorted(DS05_MEAN_SQUARES))
def test_dataset05_or_mean_squares_match_rjafroc(
    ds05: tuple[pd.DataFrame, pd.DataFrame], fom: str
) -> None:
    marks, truth = ds05
    vc = froc_mrmc(marks, truth, fom=fom).variance_components
    got = (vc["ms_t"], vc["ms_r"], vc["ms_tr"])
    assert got == pytest.approx(DS05_MEAN_SQUARES[fom], rel=1e-9)


@pytest.mark.parametrize(("fom", "n_units"), [("wafroc", 92), ("max_nlf", 45), ("max_llf", 47)])
def test_dataset05_jackknife_values_match_rjafroc(
    ds05: tuple[pd.DataFrame, pd.DataFrame], fom: str, n_units: int
) -> None:
    # tests/data/reference/froc/rjafroc_dataset05_jackknife.csv: UtilPseudoValues(dataset05,
    # FOM)$jkFomValues[1, , ] (RJafroc@44b0e39e goodValues361/Utils/PseudoValues-<FOM>.rds).
    # The OR analysis from them must equal froc_mrmc's on modality 1 vs itself shifted.
    from workbench.stats.froc import _jackknife_values, _kernel, _parse_marks, _parse_truth

    marks, truth = ds05
    ref = pd.read_csv(FROC / "rjafroc_dataset05_jackknife.csv")
    t = _parse_truth(truth, "case_id", "lesion_id", "lesion_weight")
    for reader in range(1, 10):
        sub = marks[(marks["modality"] == 1) & (marks["reader"] == reader)]
        kern = _kernel(fom, t, _parse_marks(sub, t, "case_id", "lesion_id", "rating"))
        got = _jackknife_values(kern, t.n_cases)
        want = ref[(ref["fom"] == fom) & (ref["reader"] == reader)].sort_values("unit")
        assert len(got) == len(want) == n_units
        np.testing.assert_allclose(got, want["jk_fom"].to_numpy(), rtol=0, atol=1e-12)


def test_or_from_jackknife_reproduces_froc_mrmc(ds04: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    from workbench.stats.froc import _jackknife_values, _kernel, _parse_marks, _parse_truth

    marks, truth = ds04
    t = _parse_truth(truth, "case_id", "lesion_id", "lesion_weight")
    mods, rdrs = sorted(marks["modality"].unique()), sorted(marks["reader"].unique())
    theta = np.empty((len(mods), len(rdrs)))
    jk = np.empty((len(mods), len(rdrs), t.n_cases))
    for a, mo in enumerate(mods):
        for b, rd in enumerate(rdrs):
            sub = marks[(marks["modality"] == mo) & (marks["reader"] == rd)]
            kern = _kernel("wafroc", t, _parse_marks(sub, t, "case_id", "lesion_id", "rating"))
            theta[a, b] = kern(np.ones((1, t.n_cases)))[0]
            jk[a, b] = _jackknife_values(kern, t.n_cases)
    frame = pd.DataFrame(theta, index=[str(m) for m in mods], columns=[str(r) for r in rdrs])
    res = obuchowski_rockette_from_jackknife(frame, jk)
    assert res.statistic == pytest.approx(DS04_F["wafroc"][0], rel=1e-9)
    with pytest.raises(StatisticsError, match="shape"):
        obuchowski_rockette_from_jackknife(frame, jk[:, :, :, None])


# --- definitions on small hand-made data ---------------------------------------------------
def _toy() -> tuple[pd.DataFrame, pd.DataFrame]:
    truth = pd.DataFrame(
        {
            "case_id": ["n1", "n2", "d1", "d2", "d2"],
            "lesion_id": [None, None, "a", "a", "b"],
            "lesion_weight": [None, None, 1.0, 3.0, 1.0],
        }
    )
    marks = pd.DataFrame(
        {
            "case_id": ["n1", "n1", "d1", "d2", "d2"],
            "lesion_id": [None, None, "a", "a", None],
            "rating": [2.0, 1.0, 3.0, 2.0, 5.0],
        }
    )
    return marks, truth


def test_figures_of_merit_by_hand() -> None:
    marks, truth = _toy()
    # normals' highest NL: n1 = 2, n2 = -inf. Lesions: d1a = 3, d2a = 2 (w 0.75), d2b = -inf.
    # wAFROC = [1 * (1 + 1) + 0.75 * (0.5 + 1) + 0.25 * (0 + 0.5)] / (2 * 2)
    assert froc_figure_of_merit(marks, truth) == pytest.approx((2 + 1.125 + 0.125) / 4)
    # AFROC = [(1 + 1) + (0.5 + 1) + (0 + 0.5)] / (2 * 3)
    assert froc_figure_of_merit(marks, truth, fom="afroc") == pytest.approx(4 / 6)
    # HrAuc: diseased highest = 3 and 5 vs normals 2 and -inf -> 1
    assert froc_figure_of_merit(marks, truth, fom="hrauc") == 1.0
    assert froc_figure_of_merit(marks, truth, fom="max_llf") == pytest.approx(2 / 3)
    assert froc_figure_of_merit(marks, truth, fom="max_nlf") == pytest.approx(2 / 2)
    assert froc_figure_of_merit(marks, truth, fom="max_nlf_all_cases") == pytest.approx(3 / 4)
    assert froc_figure_of_merit(marks, truth, fom="hrse") == 1.0
    assert froc_figure_of_merit(marks, truth, fom="hrsp") == 0.5
    # wAFROC1: false-positive ratings of all 4 cases: 2, -inf, -inf, 5
    w1 = (1 * (1 + 1 + 1 + 0) + 0.75 * (0.5 + 1 + 1 + 0) + 0.25 * (0 + 0.5 + 0.5 + 0)) / (4 * 2)
    assert froc_figure_of_merit(marks, truth, fom="wafroc1") == pytest.approx(w1)
    # custom column names
    renamed = marks.rename(columns={"case_id": "c", "lesion_id": "l", "rating": "r"})
    t2 = truth.rename(columns={"case_id": "c", "lesion_id": "l", "lesion_weight": "w"})
    assert froc_figure_of_merit(renamed, t2, case="c", lesion="l", rating="r", weight="w") == (
        pytest.approx((2 + 1.125 + 0.125) / 4)
    )


def test_missing_weight_column_means_equal_weights() -> None:
    marks, truth = _toy()
    eq = froc_figure_of_merit(marks, truth.assign(lesion_weight=[None, None, 1, 1, 1]))
    assert froc_figure_of_merit(marks, truth.drop(columns="lesion_weight")) == eq


def test_option_typos_and_bad_input_raise() -> None:
    marks, truth = _toy()
    with pytest.raises(StatisticsError, match="Did you mean 'wafroc'"):
        froc_figure_of_merit(marks, truth, fom="wafrc")
    with pytest.raises(StatisticsError, match="Did you mean 'bootstrap'"):
        froc_estimate(marks, truth, ci="bootstrp")
    with pytest.raises(StatisticsError, match="not in truth"):
        froc_figure_of_merit(marks.assign(case_id=["zz", "n1", "d1", "d2", "d2"]), truth)
    with pytest.raises(StatisticsError, match="not in truth"):
        froc_figure_of_merit(marks.assign(lesion_id=[None, None, "q", "a", None]), truth)
    two = pd.concat([marks, marks.iloc[[2]]])
    with pytest.raises(StatisticsError, match="more than one mark"):
        froc_figure_of_merit(two, truth)
    with pytest.raises(StatisticsError, match="finite"):
        froc_figure_of_merit(marks.assign(rating=[1, 2, np.nan, 1, 1]), truth)
    with pytest.raises(StatisticsError, match="lacks column"):
        froc_figure_of_merit(marks.drop(columns="rating"), truth)
    with pytest.raises(NotEstimableError, match="without lesions"):
        froc_figure_of_merit(marks[marks.case_id != "n1"], truth[truth.case_id.str[0] == "d"])
    # with no non-diseased cases wAFROC1 is estimable
    assert 0 <= froc_figure_of_merit(marks.iloc[2:], truth.iloc[2:], fom="wafroc1") <= 1


# --- properties ----------------------------------------------------------------------------
@st.composite
def froc_data(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_norm = draw(st.integers(1, 6))
    n_dis = draw(st.integers(1, 6))
    truth_rows: list[tuple[str, object, float | None]] = [
        (f"n{i}", None, None) for i in range(n_norm)
    ]
    mark_rows: list[tuple[str, object, float]] = []
    rating = st.integers(1, 5).map(float)
    for i in range(n_dis):
        for lesion in range(draw(st.integers(1, 3))):
            truth_rows.append((f"d{i}", lesion, float(draw(st.integers(1, 3)))))
            if draw(st.booleans()):
                mark_rows.append((f"d{i}", lesion, draw(rating)))
    for i in range(n_norm + n_dis):
        case = f"n{i}" if i < n_norm else f"d{i - n_norm}"
        for _ in range(draw(st.integers(0, 2))):
            mark_rows.append((case, None, draw(rating)))
    truth = pd.DataFrame(truth_rows, columns=["case_id", "lesion_id", "lesion_weight"])
    marks = pd.DataFrame(mark_rows, columns=["case_id", "lesion_id", "rating"])
    return marks, truth


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL_FOMS = ["wafroc", "wafroc1", "afroc", "afroc1", "hrauc", "hrse", "hrsp", "max_llf", "max_nlf"]


@SETTINGS
@given(data=froc_data(), seed=st.integers(0, 10_000))
def test_invariant_to_case_and_row_order(
    data: tuple[pd.DataFrame, pd.DataFrame], seed: int
) -> None:
    marks, truth = data
    rng = np.random.default_rng(seed)
    m2 = marks.iloc[rng.permutation(len(marks))]
    t2 = truth.iloc[rng.permutation(len(truth))]
    for fom in ALL_FOMS:
        assert froc_figure_of_merit(m2, t2, fom=fom) == pytest.approx(
            froc_figure_of_merit(marks, truth, fom=fom), abs=1e-12
        )


@SETTINGS
@given(data=froc_data())
def test_invariant_to_monotone_rating_transforms(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    marks, truth = data
    moved = marks.assign(rating=np.exp(marks["rating"]) * 3.0 - 7.0)
    for fom in ALL_FOMS:
        value = froc_figure_of_merit(marks, truth, fom=fom)
        assert froc_figure_of_merit(moved, truth, fom=fom) == pytest.approx(value, abs=1e-12)
        assert value >= 0.0


@SETTINGS
@given(data=froc_data())
def test_wafroc_equals_afroc_with_one_lesion_per_case(
    data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    marks, truth = data
    first = truth[truth["lesion_id"].isna() | (truth["lesion_id"] == 0)].assign(lesion_weight=1.0)
    keep = marks["lesion_id"].isna() | (marks["lesion_id"] == 0)
    m1 = marks[keep]
    assert froc_figure_of_merit(m1, first, fom="wafroc") == pytest.approx(
        froc_figure_of_merit(m1, first, fom="afroc"), abs=1e-12
    )
    assert froc_figure_of_merit(m1, first, fom="wafroc1") == pytest.approx(
        froc_figure_of_merit(m1, first, fom="afroc1"), abs=1e-12
    )


@SETTINGS
@given(data=froc_data())
def test_jackknife_kernel_equals_recomputation_without_each_case(
    data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    from workbench.stats.froc import _jackknife_values, _kernel, _parse_marks, _parse_truth

    marks, truth = data
    t = _parse_truth(truth, "case_id", "lesion_id", "lesion_weight")
    r = _parse_marks(marks, t, "case_id", "lesion_id", "rating")
    for fom in ("wafroc", "wafroc1", "hrauc", "max_llf"):
        jk = _jackknife_values(_kernel(fom, t, r), t.n_cases)
        units = [c for c, d in zip(t.cases, t.diseased, strict=True) if fom != "max_llf" or d]
        for value, case in zip(jk, units, strict=True):
            rest_t = truth[truth["case_id"] != case]
            rest_m = marks[marks["case_id"] != case]
            try:
                want = froc_figure_of_merit(rest_m, rest_t, fom=fom)
            except NotEstimableError:
                assert not np.isfinite(value)
                continue
            assert value == pytest.approx(want, abs=1e-12)


@SETTINGS
@given(data=froc_data(), seed=st.integers(0, 10_000))
def test_weighted_kernel_equals_materialised_resample(
    data: tuple[pd.DataFrame, pd.DataFrame], seed: int
) -> None:
    # a bootstrap replicate is evaluated from case counts; it must equal the figure of merit
    # of the resample written out with each drawn copy of a case as a new case
    from workbench.stats.froc import _kernel, _parse_marks, _parse_truth

    marks, truth = data
    t = _parse_truth(truth, "case_id", "lesion_id", "lesion_weight")
    r = _parse_marks(marks, t, "case_id", "lesion_id", "rating")
    counts = np.random.default_rng(seed).integers(0, 3, t.n_cases)
    copies_t, copies_m = [], []
    for case, n in zip(t.cases, counts, strict=True):
        for copy in range(n):
            copies_t.append(truth[truth["case_id"] == case].assign(case_id=f"{case}#{copy}"))
            copies_m.append(marks[marks["case_id"] == case].assign(case_id=f"{case}#{copy}"))
    if not copies_t:
        return
    rt, rm = pd.concat(copies_t), pd.concat(copies_m)
    for fom in ("wafroc", "afroc1", "hrauc", "max_llf", "hrsp"):
        got = float(_kernel(fom, t, r)(counts[None, :].astype(np.float32))[0])
        try:
            want = froc_figure_of_merit(rm, rt, fom=fom)
        except NotEstimableError:
            assert not np.isfinite(got)
            continue
        assert got == pytest.approx(want, abs=1e-12)


# --- CIs, curves ---------------------------------------------------------------------------
def test_froc_estimate_bootstrap_and_jackknife(ds04: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    marks, truth = ds04
    one = marks[(marks["modality"] == 4) & (marks["reader"] == 1)]
    value = DS04_FOMS["wafroc"][3][0]
    boot = froc_estimate(one, truth, n_boot=500, seed=3)
    assert boot.value == pytest.approx(value, abs=FOMS_TOL)
    assert boot.ci_low < value < boot.ci_high and boot.n == 200
    assert "500 replicates" in boot.method
    assert froc_estimate(one, truth, n_boot=500, seed=3) == boot  # seeded: reproducible
    jk = froc_estimate(one, truth, ci="jackknife")
    # the single-reader jackknife variance is RJafroc's Var term for that reader and modality
    res = froc_mrmc(marks, truth)
    assert jk.se is not None and boot.se is not None
    assert 0.5 * jk.se < boot.se < 2.0 * jk.se
    assert jk.ci_low < value < jk.ci_high
    ses = [
        froc_estimate(
            marks[(marks["modality"] == m) & (marks["reader"] == r)], truth, ci="jackknife"
        ).se
        for m in range(1, 6)
        for r in (1, 3, 4, 5)
    ]
    var = np.mean([float(se or np.nan) ** 2 for se in ses])
    assert res.variance_components["var"] == pytest.approx(var, rel=1e-9)
    bca = froc_estimate(one, truth, n_boot=500, seed=3, bootstrap_method="bca")
    assert bca.ci_low < value < bca.ci_high


def test_froc_estimate_clustered_by_patient(ds04: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    marks, truth = ds04
    one = marks[(marks["modality"] == 1) & (marks["reader"] == 1)]
    # two images per "patient": pairs of consecutive case ids
    t = truth.assign(patient=(truth["case_id"] - 1) // 2)
    est = froc_estimate(one, t, clusters="patient", n_boot=400, seed=1)
    assert "100 clusters" in est.method
    jk = froc_estimate(one, t, clusters="patient", ci="jackknife")
    assert "100 clusters" in jk.method
    with pytest.raises(StatisticsError, match="more than one value"):
        froc_estimate(one, truth.assign(patient=np.arange(len(truth))), clusters="patient")


def test_froc_curve_points_by_hand() -> None:
    marks, truth = _toy()
    curve = froc_curve(marks, truth, n_boot=0, grid=[0.0, 0.25, 0.5, 0.75, 1.0])
    # thresholds 5, 3, 2, 1: NL counts 1, 1, 2, 3 of 4 cases; LL counts 0, 1, 2, 2 of 3 lesions
    pts = curve.points
    assert pts["threshold"].tolist() == [5.0, 3.0, 2.0, 1.0]
    np.testing.assert_allclose(pts["nlf"], [0.25, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(pts["llf"], [0, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(curve.llf, [0, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert curve.threshold[0] == np.inf and curve.threshold[1] == 3.0
    table = sensitivity_at_fppi(marks, truth, fppi=[0.25, 0.5], n_boot=0)
    assert table["sensitivity"].tolist() == pytest.approx([1 / 3, 2 / 3])


def test_froc_curve_band_contains_curve(ds04: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    marks, truth = ds04
    one = marks[(marks["modality"] == 1) & (marks["reader"] == 1)]
    curve = froc_curve(one, truth, n_boot=200, seed=0)
    assert (np.diff(curve.llf) >= 0).all()
    assert (curve.lower <= curve.llf + 1e-12).all() and (curve.llf <= curve.upper + 1e-12).all()
    # the top of the FROC curve is (max NLF over all cases, MaxLLF)
    top = curve.points.iloc[-1]
    assert top["llf"] == pytest.approx(froc_figure_of_merit(one, truth, fom="max_llf"))
    assert top["nlf"] == pytest.approx(froc_figure_of_merit(one, truth, fom="max_nlf_all_cases"))
