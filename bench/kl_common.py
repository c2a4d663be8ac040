"""The protocol every KL study in bench/ shares (issue 19): the data, the held-out test patients, the labelled
fractions, the cross-validation folds and the scores, so that kl_recipe.py, kl_ssl.py and kl_semisup.py measure the
same thing.

- The data: `knee-kl/labels.csv` of the shared reference data (1,500 knees of 750 patients), read where it is.
- The test split: the KL tutorial's, `patient_split(df, .2, seed=0, by='kl_grade')` (300 knees of 150 patients).
  No choice of any study looks at it; it is scored once per finished model.
- The pool: the other 1,200 knees of 600 patients, split into patient-grouped, grade-stratified folds
  (`StratifiedGroupKFold`) for choosing, and into labelled fractions (whole patients) for the label-efficiency studies.
- The scores: quadratic-weighted kappa (QWK) over the five grades, AUC of "KL >= 2" = P(grade >= 2), each with the 95 %
  interval of 2,000 bootstrap resamples of the knees; accuracy and mean one-vs-rest AUC besides.
"""
import os, warnings
import numpy as np, pandas as pd

def kl_table():
    "The KL labels table (`path, kl_grade, patient_id, side`) and its folder; exits clearly where the data is absent"
    from kneeai.core import reference_data
    kl = reference_data('knee-kl')
    if kl is None: raise SystemExit('knee-kl/ is not on this machine: set KNEEAI_REFERENCE_DATA to the folder holding it')
    return pd.read_csv(kl/'labels.csv'), kl

def test_mask(df) -> np.ndarray:
    "The held-out test knees (the KL tutorial's split)"
    from kneeai.radiographs import patient_split
    return patient_split(df, .2, seed=0, by='kl_grade')

def pool_and_test(df):
    "The pool (choosing, training) and the test knees, each re-indexed"
    m = test_mask(df)
    return df[~m].reset_index(drop=True), df[m].reset_index(drop=True)

def folds(pool, k:int=3, seed:int=0) -> np.ndarray:
    "The fold (0..k-1) of each pool knee: patient-grouped, stratified on the grade"
    from sklearn.model_selection import StratifiedGroupKFold
    f = np.full(len(pool), -1)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for i,(_,idx) in enumerate(cv.split(np.zeros(len(pool)), pool.kl_grade, pool.patient_id)): f[idx] = i
    return f

def labelled_mask(pool, frac:float, seed:int) -> np.ndarray:
    "A patient-grouped, grade-stratified `frac` of the pool whose labels are used (the rest counts as unlabelled)"
    if frac >= 1: return np.ones(len(pool), bool)
    from kneeai.radiographs import patient_split
    return patient_split(pool, frac, seed=1000 + seed, by='kl_grade')

def kl_scores(y, probs, seed:int=0, n_boot:int=2000) -> dict:
    "QWK and AUC(KL>=2) with 95 % bootstrap intervals, accuracy and mean one-vs-rest AUC, for grades `y` and `(n, 5)` `probs`"
    from kneeai.metrics import radiograph_report, binary_report, boot_counts
    y,p = np.asarray(y).astype(int),np.asarray(probs, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        rep = radiograph_report(y, p, [f'KL{g}' for g in range(5)], ordinal=True, n_boot=n_boot, seed=seed)
        oa = binary_report((y >= 2).astype(int), p[:, 2:].sum(1), W=boot_counts(len(y), n_boot, seed))
    a = rep.loc['all']
    return dict(qwk=a[('kappa', 'est')], qwk_lo=a[('kappa', 'lo')], qwk_hi=a[('kappa', 'hi')],
                auc2=oa.loc['auc', 'est'], auc2_lo=oa.loc['auc', 'lo'], auc2_hi=oa.loc['auc', 'hi'],
                acc=a[('accuracy', 'est')], mauc=a[('auc', 'est')], n=len(y))

def fmt(s:dict) -> str:
    "One line: QWK and AUC(KL>=2) with their intervals"
    return (f"QWK {s['qwk']:.3f} ({s['qwk_lo']:.3f}-{s['qwk_hi']:.3f})  AUC(KL>=2) {s['auc2']:.3f} ({s['auc2_lo']:.3f}-{s['auc2_hi']:.3f})"
            f"  acc {s['acc']:.3f}  mAUC {s['mauc']:.3f}  n {s['n']}")

def load() -> str: return f'load {os.getloadavg()[0]:.1f}'
