"""Results people can look at: confusion-matrix CSV / PNG and Markdown tables of folds.

Plots are drawn on a bare Agg canvas (no ``pyplot``), so they work on headless machines and do
not touch the caller's matplotlib backend or global figure state.
"""

import csv
import logging
import math
import os

import torch

from hnsd_sb.metrics import unweighted_accuracy, weighted_accuracy

_CORNER = "true\\predicted"

# SpeechBrain's log file takes DEBUG records, and matplotlib's font search would fill it.
logging.getLogger("matplotlib").setLevel(logging.WARNING)


def _as_cm(cm):
    """A confusion matrix given as a tensor or nested list, as a square LongTensor."""
    cm = torch.as_tensor(cm).long().cpu()
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {tuple(cm.shape)}")
    return cm


def _names(label_names, n):
    if label_names is None:
        return [str(i) for i in range(n)]
    if len(label_names) != n:
        raise ValueError(f"{len(label_names)} label names for a {n}x{n} confusion matrix")
    return [str(name) for name in label_names]


def save_confusion_matrix(cm, label_names, csv_path, png_path=None, title=None):
    """Saves a confusion matrix as CSV and, optionally, as an annotated heatmap.

    The CSV has the labels as header row and first column (rows true, columns predicted). In
    the PNG each cell shows the count and its share of the true class (row-normalised %), and
    the colour follows that share so minority classes stay visible.

    Arguments
    ---------
    cm : torch.Tensor or list of lists
        Counts, rows true, columns predicted.
    label_names : list of str or None
        Class names (``None``: the indices).
    csv_path : str
        CSV file to write.
    png_path : str, optional
        PNG file to write.
    title : str, optional
        Plot title; default: ``Confusion matrix`` with WA and UA.

    Returns
    -------
    torch.LongTensor
        The matrix written.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = save_confusion_matrix([[5, 1], [2, 2]], ["neu", "ang"], tmp.join("cm.csv").strpath)
    >>> print(tmp.join("cm.csv").read().strip())
    true\\predicted,neu,ang
    neu,5,1
    ang,2,2
    >>> load_confusion_matrix(tmp.join("cm.csv").strpath)
    (tensor([[5, 1],
            [2, 2]]), ['neu', 'ang'])
    """
    cm = _as_cm(cm)
    names = _names(label_names, cm.shape[0])
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([_CORNER, *names])
        for name, row in zip(names, cm.tolist()):
            writer.writerow([name, *row])
    if png_path is not None:
        _plot_confusion_matrix(cm, names, png_path, title)
    return cm


def load_confusion_matrix(csv_path):
    """Reads a confusion matrix written by ``save_confusion_matrix``.

    Arguments
    ---------
    csv_path : str
        The CSV file.

    Returns
    -------
    cm : torch.LongTensor
        Counts, rows true, columns predicted.
    label_names : list of str
        Class names from the header.
    """
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{csv_path}: empty file")
    names = rows[0][1:]
    if [row[0] for row in rows[1:]] != names:
        raise ValueError(f"{csv_path}: row labels differ from column labels {names}")
    try:
        cm = torch.tensor([[int(v) for v in row[1:]] for row in rows[1:]], dtype=torch.long)
    except ValueError as err:
        raise ValueError(f"{csv_path}: non-integer count ({err})") from err
    return _as_cm(cm.reshape(len(names), len(names))), names


def _plot_confusion_matrix(cm, names, png_path, title):
    """Draws the annotated heatmap into ``png_path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = cm.shape[0]
    support = cm.sum(dim=1, keepdim=True).double()
    share = torch.where(support > 0, cm.double() / support.clamp(min=1), torch.zeros(1))
    if title is None:
        wa, ua = weighted_accuracy(cm), unweighted_accuracy(cm)
        title = f"Confusion matrix (WA {100 * wa:.2f}%, UA {100 * ua:.2f}%)"

    size = 2.0 + 0.9 * n
    fig = Figure(figsize=(size + 1.2, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(share.numpy() * 100, cmap="Blues", vmin=0, vmax=100)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("% of true class")
    ax.set_xticks(range(n), labels=names)
    if max(map(len, names)) > 4:  # long names would overlap side by side
        for label in ax.get_xticklabels():
            label.set(rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            value = float(share[i, j])
            # A class absent from the targets has no share to show, only its count.
            text = f"{int(cm[i, j])}\n{100 * value:.1f}%" if support[i] > 0 else str(int(cm[i, j]))
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if value > 0.5 else "black",  # legible on dark cells
            )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    fig.savefig(png_path, dpi=120)


def split_file_names(split="test"):
    """The names of the files a run writes for a split its chosen checkpoint scored.

    The one place that names them: ``train.py`` and ``baseline.py`` write them, and
    ``compare_rows.py`` reads them. The test files keep their historical names; the
    validation ones carry a ``valid_`` prefix, so a fold's folder holds both.

    Arguments
    ---------
    split : str
        ``"test"`` or ``"valid"``.

    Returns
    -------
    dict
        ``results`` (JSON summary), ``predictions`` (CSV, one row per utterance),
        ``confusion_csv`` and ``confusion_png``: file names within the run's output folder.

    Example
    -------
    >>> split_file_names("test")["predictions"], split_file_names("test")["results"]
    ('predictions.csv', 'test_results.json')
    >>> sorted(split_file_names("valid").values())
    ['valid_confusion.csv', 'valid_confusion.png', 'valid_predictions.csv', 'valid_results.json']
    """
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', not {split!r}")
    prefix = "" if split == "test" else f"{split}_"
    return {
        "results": f"{split}_results.json",
        "predictions": f"{prefix}predictions.csv",
        "confusion_csv": f"{prefix}confusion.csv",
        "confusion_png": f"{prefix}confusion.png",
    }


def _mean_std(values):
    """Mean and sample standard deviation (n - 1 denominator; NaN for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def format_spread(values, decimals=2):
    """``mean ± std`` of ``values`` as text: the sample standard deviation (``n - 1``).

    Every table of this package shows per-fold figures this one way.

    Arguments
    ---------
    values : list of float
        The figures, e.g. one per fold.
    decimals : int
        Decimals shown.

    Returns
    -------
    str
        ``"mean ± std"``; the std is ``n/a`` for a single value, and the whole text is ``n/a``
        for no values.

    Example
    -------
    >>> format_spread([50.0, 60.0])
    '55.00 ± 7.07'
    >>> format_spread([50.0], decimals=1)
    '50.0 ± n/a'
    >>> format_spread([])
    'n/a'
    """
    if not values:
        return "n/a"
    mean, std = _mean_std(values)
    std_text = "n/a" if math.isnan(std) else f"{std:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std_text}"


def format_results_table(rows, columns=("WA", "UA"), key="fold", scale=100.0, decimals=2):
    """A Markdown table of per-fold results with a final ``mean ± std`` row.

    The std is the sample standard deviation over folds (``n - 1`` denominator, as
    ``pandas.Series.std``); with one fold it is shown as ``n/a``.

    Arguments
    ---------
    rows : list of dict
        One per fold, holding ``key`` and each of ``columns``.
    columns : tuple of str
        The metrics to show, in order.
    key : str
        Entry naming the row (its column is headed with ``key`` capitalised).
    scale : float
        Factor applied to every value: 100 turns fractions (as ``EmotionMetrics`` gives) into
        percentages; use 1 for values already in percent.
    decimals : int
        Decimals shown.

    Returns
    -------
    str
        The Markdown table.

    Example
    -------
    >>> rows = [{"fold": 1, "WA": 0.6, "UA": 0.5}, {"fold": 2, "WA": 0.7, "UA": 0.55},
    ...         {"fold": 3, "WA": 0.8, "UA": 0.6}]
    >>> print(format_results_table(rows))
    | Fold | WA (%) | UA (%) |
    |---|---:|---:|
    | 1 | 60.00 | 50.00 |
    | 2 | 70.00 | 55.00 |
    | 3 | 80.00 | 60.00 |
    | mean ± std | 70.00 ± 10.00 | 55.00 ± 5.00 |
    """
    if not rows:
        raise ValueError("no rows to tabulate")
    unit = " (%)" if scale == 100 else ""
    lines = [
        "| " + " | ".join([key.capitalize(), *(f"{c}{unit}" for c in columns)]) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    values = {c: [] for c in columns}
    for row in rows:
        cells = [str(row[key])]
        for c in columns:
            values[c].append(float(row[c]) * scale)
            cells.append(f"{values[c][-1]:.{decimals}f}")
        lines.append("| " + " | ".join(cells) + " |")
    summary = ["mean ± std"] + [format_spread(values[c], decimals) for c in columns]
    lines.append("| " + " | ".join(summary) + " |")
    return "\n".join(lines)


def compare_to_reference(rows, reference, metric="UA", decimals=2):
    """A Markdown table comparing cross-validation rows with a reference row, fold by fold.

    Folds differ far more from each other (different actors) than two models differ on the same
    fold, so each row is compared with the reference on the folds both have: the mean and sample
    standard deviation of the paired differences, and on how many folds the row is better (by at
    least the last digit shown).

    Arguments
    ---------
    rows : dict
        Row name -> list of per-fold results (dicts with ``fold``, ``WA`` and ``UA`` as
        fractions, as ``test_results.json`` holds them). A row without WA or UA (an ensemble's
        output holds UA only) shows ``n/a`` for it; one without ``metric`` raises ValueError.
    reference : str
        The name of the reference row (one of ``rows``).
    metric : str
        The metric compared ("UA" or "WA").
    decimals : int
        Decimals shown.

    Returns
    -------
    str
        The Markdown table, in percent.

    Example
    -------
    >>> rows = {
    ...     "hnsd": [{"fold": 1, "WA": 0.5, "UA": 0.5}, {"fold": 2, "WA": 0.6, "UA": 0.6}],
    ...     "mean": [{"fold": 1, "WA": 0.4, "UA": 0.45}, {"fold": 2, "WA": 0.6, "UA": 0.5}],
    ... }
    >>> print(compare_to_reference(rows, "hnsd"))
    | Row | Folds | WA (%) | UA (%) | UA − hnsd, paired (%) | Folds better |
    |---|---:|---:|---:|---:|---:|
    | hnsd | 2 | 55.00 ± 7.07 | 55.00 ± 7.07 | reference | |
    | mean | 2 | 50.00 ± 14.14 | 47.50 ± 3.54 | -7.50 ± 3.54 | 0 / 2 |
    """
    if reference not in rows:
        raise ValueError(f"the reference row {reference!r} is not among {sorted(rows)}")
    for name, results in rows.items():
        if any(r.get(metric) is None for r in results):
            raise ValueError(f"row {name!r} has no {metric} on some fold")
    ref = {r["fold"]: 100 * float(r[metric]) for r in rows[reference]}

    lines = [
        f"| Row | Folds | WA (%) | UA (%) | {metric} − {reference}, paired (%) | Folds better |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, results in rows.items():
        cells = [name, str(len(results))]
        for m in ("WA", "UA"):
            values = [100 * float(r[m]) for r in results if r.get(m) is not None]
            cells.append(format_spread(values, decimals) if len(values) == len(results) else "n/a")
        if name == reference:
            cells += ["reference", ""]
        else:
            diffs = [100 * float(r[metric]) - ref[r["fold"]] for r in results if r["fold"] in ref]
            if not diffs:
                raise ValueError(f"row {name!r} shares no fold with {reference!r}")
            # A difference below the last shown digit is a tie: rows read from rounded figures
            # (ensemble.py's) differ from exact ones by up to half of it.
            better = sum(d >= 10**-decimals - 1e-9 for d in diffs)
            cells += [format_spread(diffs, decimals), f"{better} / {len(diffs)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def confusion_markdown(cm, label_names=None):
    """A confusion matrix as a Markdown table (rows true, columns predicted).

    Arguments
    ---------
    cm : torch.Tensor or list of lists
        Counts.
    label_names : list of str, optional
        Class names (default: the indices).

    Returns
    -------
    str
        The Markdown table.

    Example
    -------
    >>> print(confusion_markdown([[5, 1], [2, 2]], ["neu", "ang"]))
    | true \\ predicted | neu | ang |
    |---|---:|---:|
    | **neu** | 5 | 1 |
    | **ang** | 2 | 2 |
    """
    cm = _as_cm(cm)
    names = _names(label_names, cm.shape[0])
    lines = [
        "| true \\ predicted | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for name, row in zip(names, cm.tolist()):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def summarize_folds(fold_results, label_names=None, decimals=2):
    """A Markdown report of a cross-validation: per-fold WA / UA with mean ± std (sample std,
    see ``format_results_table``), then the confusion matrix summed over folds with the WA / UA
    it gives (pooled over all utterances, which in general differ from the fold means).

    Arguments
    ---------
    fold_results : list of dict
        One per fold: ``fold``, ``confusion`` (tensor or nested list) and optionally ``WA`` /
        ``UA`` as fractions (computed from ``confusion`` when absent).
    label_names : list of str, optional
        Class names for the confusion table.
    decimals : int
        Decimals shown.

    Returns
    -------
    markdown : str
        The report.
    confusion : torch.LongTensor
        The summed confusion matrix.

    Example
    -------
    >>> folds = [{"fold": 1, "confusion": [[3, 1], [0, 2]]},
    ...          {"fold": 2, "confusion": [[2, 0], [1, 1]]}]
    >>> text, total = summarize_folds(folds, ["neu", "ang"])
    >>> total.tolist()
    [[5, 1], [1, 3]]
    >>> print(text)
    ### Per-fold results
    <BLANKLINE>
    | Fold | WA (%) | UA (%) |
    |---|---:|---:|
    | 1 | 83.33 | 87.50 |
    | 2 | 75.00 | 75.00 |
    | mean ± std | 79.17 ± 5.89 | 81.25 ± 8.84 |
    <BLANKLINE>
    ### Confusion matrix summed over 2 folds
    <BLANKLINE>
    | true \\ predicted | neu | ang |
    |---|---:|---:|
    | **neu** | 5 | 1 |
    | **ang** | 1 | 3 |
    <BLANKLINE>
    Pooled over all 10 utterances: WA 80.00%, UA 79.17%.
    """
    if not fold_results:
        raise ValueError("no fold results to summarize")
    rows, total = [], None
    for result in fold_results:
        cm = _as_cm(result["confusion"])
        if total is not None and cm.shape != total.shape:
            raise ValueError(
                f"fold {result['fold']}: confusion matrix {tuple(cm.shape)} does not match "
                f"the earlier folds' {tuple(total.shape)}"
            )
        total = cm.clone() if total is None else total + cm
        rows.append(
            {
                "fold": result["fold"],
                "WA": result.get("WA", weighted_accuracy(cm)),
                "UA": result.get("UA", unweighted_accuracy(cm)),
            }
        )
    wa, ua = weighted_accuracy(total), unweighted_accuracy(total)
    text = "\n".join(
        [
            "### Per-fold results",
            "",
            format_results_table(rows, decimals=decimals),
            "",
            f"### Confusion matrix summed over {len(fold_results)} folds",
            "",
            confusion_markdown(total, label_names),
            "",
            f"Pooled over all {int(total.sum())} utterances: "
            f"WA {100 * wa:.{decimals}f}%, UA {100 * ua:.{decimals}f}%.",
        ]
    )
    return text, total
