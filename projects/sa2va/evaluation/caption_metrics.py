"""Caption metrics: BLEU-1..4, CIDEr-D (computed here), the COCO caption
files, and coco-caption's own scorers (``pycocoevalcap``: PTB tokenizer,
BLEU, METEOR, ROUGE-L, CIDEr-D) when the package and Java are present.

Built-in figures: BLEU-1..4 (corpus level, brevity penalty against the
closest reference length, as coco-caption's ``Bleu``) and CIDEr-D (n =
1..4, TF-IDF vectors with document frequencies from the references of the
evaluated set, clipped candidate counts, Gaussian length penalty ``sigma =
6``, times 10, as coco-caption's ``Cider``), on lower-cased words with
punctuation removed (:func:`caption_tokens`). coco-caption runs the Java PTB
tokenizer first, so the built-in figures can differ slightly from
:func:`coco_caption_scores`, which is what GLaMM's GCG evaluation reports
(``COCOEvalCap`` without SPICE).
"""
from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ['caption_tokens', 'bleu', 'cider_d', 'write_caption_files',
           'coco_caption_available', 'coco_caption_scores',
           'caption_scores']

_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def caption_tokens(text: str) -> list[str]:
    """Lower-cased words (letters, digits, apostrophe suffixes); punctuation
    removed."""
    return _WORD_RE.findall(str(text).lower())


# ---------------------------------------------------------------------------
def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(candidates: Dict, references: Dict, max_n: int = 4) -> List[float]:
    """Corpus BLEU-1..max_n.

    Args:
        candidates: id -> candidate string.
        references: id -> list of reference strings (same ids).

    Returns:
        list of ``max_n`` floats in [0, 1]: ``BP * exp(mean_{k<=n} log p_k)``
        with clipped n-gram precisions ``p_k`` summed over the corpus and
        ``BP = min(1, exp(1 - r / c))``, ``r`` the sum of the reference
        lengths closest to each candidate's length (shorter on a tie).
    """
    _check_ids(candidates, references)
    match = np.zeros(max_n)
    total = np.zeros(max_n)
    cand_len = ref_len = 0
    for key, cand in candidates.items():
        c = caption_tokens(cand)
        refs = [caption_tokens(r) for r in references[key]]
        cand_len += len(c)
        ref_len += min((abs(len(r) - len(c)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            cn = _ngrams(c, n)
            best: Counter = Counter()
            for r in refs:
                best |= _ngrams(r, n)
            match[n - 1] += sum((cn & best).values())
            total[n - 1] += max(len(c) - n + 1, 0)
    tiny = 1e-9
    bp = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / max(cand_len, tiny))
    scores, log_sum = [], 0.0
    for n in range(max_n):
        log_sum += math.log(max(match[n], tiny) / max(total[n], tiny))
        scores.append(bp * math.exp(log_sum / (n + 1)))
    return scores


def cider_d(candidates: Dict, references: Dict, sigma: float = 6.0,
            max_n: int = 4) -> float:
    """Corpus CIDEr-D (module docstring).

    For each n: ``g(x)`` = TF-IDF vector of n-grams (term frequency times
    ``log(N / df)``, ``N`` the number of images, ``df`` the number of
    images whose references contain the n-gram); score_n(c, r) =
    ``min(g(c), g(r)) . g(r) / (|g(c)| |g(r)|) * exp(-(l_c - l_r)^2 /
    (2 sigma^2))`` (the min is the clipping of CIDEr-D), averaged over
    references; the image score is ``10 * mean_n score_n``; the corpus
    score is the mean over images.

    Returns:
        CIDEr-D (>= 0; about 0..10).
    """
    _check_ids(candidates, references)
    keys = list(candidates)
    refs_tok = {k: [caption_tokens(r) for r in references[k]] for k in keys}
    df: Counter = Counter()
    for k in keys:
        seen = set()
        for r in refs_tok[k]:
            for n in range(1, max_n + 1):
                seen.update(_ngrams(r, n))
        df.update(seen)
    log_n = math.log(float(len(keys)))

    def vec(tokens):
        out = []
        for n in range(1, max_n + 1):
            counts = _ngrams(tokens, n)
            out.append({g: tf * (log_n - math.log(max(1.0, df[g])))
                        for g, tf in counts.items()})
        return out

    def norm(v):
        return math.sqrt(sum(x * x for x in v.values()))

    scores = []
    for k in keys:
        c = caption_tokens(candidates[k])
        vc = vec(c)
        per_ref = []
        for r in refs_tok[k]:
            vr = vec(r)
            delta = len(c) - len(r)
            penalty = math.exp(-(delta * delta) / (2 * sigma * sigma))
            s = 0.0
            for n in range(max_n):
                dot = sum(min(w, vr[n][g]) * vr[n][g]
                          for g, w in vc[n].items() if g in vr[n])
                nc, nr = norm(vc[n]), norm(vr[n])
                if nc and nr:
                    s += dot / (nc * nr) * penalty
            per_ref.append(s / max_n)
        scores.append(10.0 * float(np.mean(per_ref)))
    return float(np.mean(scores))


def _check_ids(candidates: Dict, references: Dict) -> None:
    if not candidates:
        raise ValueError('no captions to evaluate')
    missing = [k for k in candidates if not references.get(k)]
    if missing:
        raise ValueError(f'candidates without references: {missing[:5]}')


def write_caption_files(candidates: Dict, references: Dict, pred_path: str,
                        ref_path: str, image_info: Optional[Dict] = None,
                        labels: Optional[Dict] = None) -> None:
    """COCO caption format: ``pred_path`` = ``[{"image_id", "caption"}]``,
    ``ref_path`` = ``{"images": [{"id", ...}], "annotations": [{"image_id",
    "id", "caption"}]}`` (ids as given: ints or strings; annotation ids
    0, 1, ... in order). ``image_info``: id -> dict of extra JSON fields
    of that ``images`` entry (e.g. the source record); the key ``id`` is
    refused. ``labels``: id -> ``(predicted phrases, GT phrases)``, written
    as ``"labels"`` of the prediction and of each annotation (GLaMM's GCG
    caption files)."""
    image_info = image_info or {}
    labels = labels or {}
    for k, info in image_info.items():
        if 'id' in info:
            raise ValueError(f'image_info of {k!r} may not set "id"')

    def extra(k, which):
        return {'labels': list(labels[k][which])} if k in labels else {}

    with open(pred_path, 'w', encoding='utf-8') as f:
        json.dump([dict(image_id=k, caption=v, **extra(k, 0))
                   for k, v in candidates.items()],
                  f, ensure_ascii=False, indent=1)
    anns = [dict(image_id=k, id=i, caption=c, **extra(k, 1))
            for i, (k, c) in enumerate(
                (k, c) for k in candidates for c in references[k])]
    with open(ref_path, 'w', encoding='utf-8') as f:
        json.dump(dict(images=[dict(id=k, **image_info.get(k, {}))
                               for k in candidates],
                       annotations=anns), f, ensure_ascii=False, indent=1)


def coco_caption_available() -> bool:
    """True when ``pycocoevalcap`` imports and a ``java`` executable is on
    the PATH (its PTB tokenizer and METEOR are Java programs)."""
    try:
        import pycocoevalcap.meteor.meteor  # noqa: F401
    except ImportError:
        return False
    return shutil.which('java') is not None


def coco_caption_scores(candidates: Dict, references: Dict) -> Dict[str, float]:
    """coco-caption's figures, as ``COCOEvalCap.evaluate`` computes them
    (PTB tokenization of candidates and references, then the scorers on
    the tokenized text), without SPICE.

    Args:
        candidates: id -> candidate string.
        references: id -> list of reference strings (same ids).

    Returns:
        ``{'BLEU-1'..'BLEU-4', 'METEOR', 'ROUGE_L', 'CIDEr'}`` floats
        (BLEU / METEOR / ROUGE-L in [0, 1], CIDEr about 0..10).

    Raises:
        RuntimeError: ``pycocoevalcap`` or Java missing
        (``pip install pycocoevalcap``; a JRE on the PATH).
    """
    _check_ids(candidates, references)
    if not coco_caption_available():
        raise RuntimeError('coco-caption scoring needs pycocoevalcap (pip '
                           'install pycocoevalcap) and java on the PATH')
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [dict(caption=r) for r in references[k]]
                        for k in candidates})
    res = tok.tokenize({k: [dict(caption=c)] for k, c in candidates.items()})
    out: Dict[str, float] = {}
    b, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f'BLEU-{n + 1}': float(v) for n, v in enumerate(b)})
    out['METEOR'] = float(Meteor().compute_score(gts, res)[0])
    out['ROUGE_L'] = float(Rouge().compute_score(gts, res)[0])
    out['CIDEr'] = float(Cider().compute_score(gts, res)[0])
    return out


CAPTION_BACKENDS = ('auto', 'pycocoevalcap', 'builtin')


def caption_scores(candidates: Dict, references: Dict,
                   backend: str = 'auto') -> Dict:
    """Caption figures with the chosen backend.

    Args:
        backend: ``'pycocoevalcap'`` (:func:`coco_caption_scores`, raises
            when unavailable), ``'builtin'`` (:func:`bleu` and
            :func:`cider_d`; no METEOR) or ``'auto'`` (the first when
            available, else the second).

    Returns:
        the figures plus ``caption_backend`` (str) naming what computed
        them.
    """
    if backend not in CAPTION_BACKENDS:
        raise ValueError(f'caption backend must be one of {CAPTION_BACKENDS}, '
                         f'got {backend!r}')
    if backend == 'pycocoevalcap' or (backend == 'auto'
                                      and coco_caption_available()):
        out: Dict = coco_caption_scores(candidates, references)
        out['caption_backend'] = 'pycocoevalcap (PTB tokenizer; no SPICE)'
        return out
    b = bleu(candidates, references)
    out = {f'BLEU-{n + 1}': v for n, v in enumerate(b)}
    out['CIDEr'] = cider_d(candidates, references)
    out['caption_backend'] = ('builtin (word tokens; no METEOR: needs '
                              'pycocoevalcap and Java)')
    return out
