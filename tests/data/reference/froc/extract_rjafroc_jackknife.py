"""Extract RJafroc's leave-one-case-out figures of merit of dataset05 (modality 1) to CSV.

Provenance script, not run by the tests (it needs the PyPI package ``rdata``, which is not
a project dependency, and a clone of github.com/dpc10ster/RJafroc at commit 44b0e39e):

    git -C RJafroc show 44b0e39e:tests/testthat/goodValues361/Utils/PseudoValues-wAFROC.rds > w.rds
    python extract_rjafroc_jackknife.py RJafroc > rjafroc_dataset05_jackknife.csv

The .rds files hold ``UtilPseudoValues(dataset05, FOM = <FOM>)`` (RJafroc
tests/testthat/test-utils-pseudovalues.R); ``jkFomValues[i, j, k]`` is the figure of merit
of modality i, reader j with jackknife unit k left out (all cases for wAFROC, non-diseased
cases only for MaxNLF, diseased cases only for MaxLLF).
"""

import subprocess
import sys
import tempfile

import rdata

COMMIT = "44b0e39e"
FOMS = {"wAFROC": "wafroc", "MaxNLF": "max_nlf", "MaxLLF": "max_llf"}

print("fom,modality,reader,unit,jk_fom")
for rj_name, name in FOMS.items():
    path = f"tests/testthat/goodValues361/Utils/PseudoValues-{rj_name}.rds"
    blob = subprocess.run(
        ["git", "-C", sys.argv[1], "show", f"{COMMIT}:{path}"], capture_output=True, check=True
    ).stdout
    with tempfile.NamedTemporaryFile(suffix=".rds") as fh:
        fh.write(blob)
        fh.flush()
        jk = rdata.read_rds(fh.name)["jkFomValues"]
    values = getattr(jk, "values", jk)
    for j in range(values.shape[1]):
        for k in range(values.shape[2]):
            print(f"{name},1,{j + 1},{k + 1},{float(values[0, j, k])!r}")
