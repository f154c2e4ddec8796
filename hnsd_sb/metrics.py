"""Speech emotion recognition metrics: confusion matrix, WA and UA.

WA (weighted accuracy) is the overall accuracy; UA (unweighted accuracy) is the mean per-class
recall, the usual headline figure on class-imbalanced corpora such as IEMOCAP. ``EmotionMetrics``
accumulates them over an epoch in SpeechBrain ``MetricStats`` style, gathers them across
``torch.distributed`` processes and writes per-utterance predictions.
"""

import csv
import math
import os

import torch
from speechbrain.utils.metric_stats import MetricStats


def confusion_matrix(targets, predictions, n_classes):
    """Counts of (true class, predicted class) pairs.

    Arguments
    ---------
    targets : torch.Tensor
        True class indices, any shape.
    predictions : torch.Tensor
        Predicted class indices, same number of elements.
    n_classes : int
        Number of classes.

    Returns
    -------
    torch.LongTensor
        ``[n_classes, n_classes]``; rows are true classes, columns predicted ones.

    Example
    -------
    >>> confusion_matrix(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2]), 3)
    tensor([[1, 1, 0],
            [0, 1, 0],
            [0, 0, 1]])
    """
    targets = torch.as_tensor(targets).reshape(-1).long().cpu()
    predictions = torch.as_tensor(predictions).reshape(-1).long().cpu()
    if targets.numel() != predictions.numel():
        raise ValueError(f"{targets.numel()} targets but {predictions.numel()} predictions")
    for name, values in (("target", targets), ("prediction", predictions)):
        if values.numel() and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} indices must lie in [0, {n_classes}), got {values.tolist()}")
    pairs = targets * n_classes + predictions
    return torch.bincount(pairs, minlength=n_classes * n_classes).view(n_classes, n_classes)


def weighted_accuracy(cm):
    """Overall accuracy (WA): correct predictions over all predictions.

    Arguments
    ---------
    cm : torch.Tensor
        Confusion matrix, rows true, columns predicted.

    Returns
    -------
    float
        WA in ``[0, 1]``; NaN for an empty matrix.

    Example
    -------
    >>> weighted_accuracy(torch.tensor([[3, 1], [0, 1]]))
    0.8
    """
    cm = torch.as_tensor(cm)
    total = int(cm.sum())
    return float(torch.diagonal(cm).sum()) / total if total else float("nan")


def per_class_recall(cm):
    """Recall of each true class: its correct predictions over its occurrences.

    Arguments
    ---------
    cm : torch.Tensor
        Confusion matrix, rows true, columns predicted.

    Returns
    -------
    torch.Tensor
        ``[n_classes]`` float64 recalls; NaN for classes absent from the targets.

    Example
    -------
    >>> per_class_recall(torch.tensor([[3, 1, 0], [0, 1, 0], [1, 0, 0]]))
    tensor([0.7500, 1.0000, 0.0000], dtype=torch.float64)
    """
    cm = torch.as_tensor(cm).double()
    support = cm.sum(dim=1)
    return torch.diagonal(cm) / support  # 0 / 0 gives NaN for absent classes


def unweighted_accuracy(cm):
    """Mean per-class recall (UA) over the classes present in the targets.

    A class that never occurs as a target has no recall; it is left out of the mean rather than
    counted as 0 (which would punish a test set for lacking it) or 1 (which would flatter the
    model). Predictions of such a class still count as errors for the true classes.

    Arguments
    ---------
    cm : torch.Tensor
        Confusion matrix, rows true, columns predicted.

    Returns
    -------
    float
        UA in ``[0, 1]``; NaN for an empty matrix.

    Example
    -------
    >>> cm = torch.tensor([[3, 1, 0], [0, 1, 0], [0, 0, 0]])  # class 2 never occurs
    >>> unweighted_accuracy(cm)
    0.875
    """
    recall = per_class_recall(cm)
    present = ~torch.isnan(recall)
    return float(recall[present].mean()) if present.any() else float("nan")


def restrict_to_classes(probs, targets, labels, classes):
    """Scores of a model over some of its classes alone: the utterances whose target is one of
    ``classes``, with the scores of those classes only (in ``classes``' order), so that the most
    probable is the most probable of them. For a model trained on more emotions than a task
    scores, e.g. RAVDESS's 8 scored as the IEMOCAP-style 4.

    Arguments
    ---------
    probs : torch.Tensor
        ``[n, len(labels)]`` class probabilities (or log-probabilities) of the utterances.
    targets : torch.Tensor
        ``[n]`` true class indices into ``labels``.
    labels : list of str
        The model's labels, one per column of ``probs``.
    classes : list of str
        The labels to keep.

    Returns
    -------
    torch.Tensor
        ``[m, len(classes)]`` scores of the ``m`` utterances whose target is in ``classes``.
    torch.Tensor
        ``[m]`` their targets, as indices into ``classes``.

    Example
    -------
    >>> probs = torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.125, 0.375], [0.25, 0.25, 0.5]])
    >>> kept, targets = restrict_to_classes(probs, [0, 1, 2], ["cal", "sad", "ang"], ["ang", "sad"])
    >>> kept.tolist(), targets.tolist()
    ([[0.375, 0.125], [0.5, 0.25]], [1, 0])
    """
    missing = [c for c in classes if c not in labels]
    if missing:
        raise ValueError(f"{missing}: not among the labels {list(labels)}")
    columns = torch.tensor([list(labels).index(c) for c in classes], dtype=torch.long)
    into_classes = torch.full((len(labels),), -1, dtype=torch.long)
    into_classes[columns] = torch.arange(len(classes))
    targets = into_classes[torch.as_tensor(targets).reshape(-1).long()]
    keep = targets >= 0
    return torch.as_tensor(probs)[keep][:, columns], targets[keep]


def balanced_class_weights(labels, label_encoder):
    """Loss weights that give every emotion the same total weight in the training set.

    Class ``c`` with ``n_c`` of the ``n`` training utterances gets ``n / (C * n_c)``, so that a
    minority class (RAVDESS neutral has half the utterances of the others) counts as much as
    the rest, which is what unweighted accuracy (UA) rewards.

    Arguments
    ---------
    labels : list of str
        The emotion label of every training utterance.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        Gives each label its class index.

    Returns
    -------
    torch.Tensor
        One weight per class index, for ``nll_loss(weight=...)``.

    Example
    -------
    >>> from speechbrain.dataio.encoder import CategoricalEncoder
    >>> encoder = CategoricalEncoder()
    >>> encoder.update_from_iterable(["ang", "neu"])
    >>> weights = balanced_class_weights(["ang", "ang", "ang", "neu"], encoder)
    >>> [round(w, 4) for w in weights.tolist()]
    [0.6667, 2.0]
    """
    counts = torch.zeros(len(label_encoder))
    for label in labels:
        counts[label_encoder.lab2ind[label]] += 1
    if (counts == 0).any():
        missing = [label_encoder.ind2lab[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
        raise ValueError(f"No training utterance has the emotion(s) {missing}")
    return counts.sum() / (len(counts) * counts)


class EmotionMetrics(MetricStats):
    """Accumulates utterance-level emotion predictions and summarises them as WA / UA.

    Under ``torch.distributed`` each process sees only its shard: call ``sync()`` on every
    process before ``summarize()`` so the figures cover the whole set (the padding duplicates
    a ``DistributedSampler`` adds are dropped by ID).

    Arguments
    ---------
    n_classes : int, optional
        Number of classes; by default the length of ``label_names``, else the width of the
        log-probabilities, else the largest index seen plus one.
    label_names : list of str, optional
        Class names, indexed by class; used in ``summarize`` and ``write_predictions``.

    Example
    -------
    >>> metrics = EmotionMetrics(label_names=["neu", "hap", "sad"])
    >>> log_probs = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]]))
    >>> metrics.append(["u1", "u2", "u3"], log_probs, torch.tensor([[0], [1], [1]]))
    >>> metrics.append(["u4"], torch.tensor([2]), torch.tensor([2]))
    >>> metrics.sync()  # no-op outside torch.distributed
    >>> stats = metrics.summarize()
    >>> round(stats["WA"], 4), round(stats["UA"], 4), stats["recall"]
    (0.75, 0.8333, {'neu': 1.0, 'hap': 0.5, 'sad': 1.0})
    >>> stats["confusion"]
    tensor([[1, 0, 0],
            [1, 1, 0],
            [0, 0, 1]])
    >>> metrics.summarize("error_rate")
    0.25
    """

    def __init__(self, n_classes=None, label_names=None):
        self.n_classes = n_classes
        self.label_names = list(label_names) if label_names is not None else None
        if self.label_names is not None and n_classes not in (None, len(self.label_names)):
            raise ValueError(f"{len(self.label_names)} label names for {n_classes} classes")
        super().__init__(metric=None)

    def clear(self):
        """Forgets everything appended."""
        self.ids = []
        self.predictions = []
        self.targets = []
        self.log_probs = []  # per utterance: C floats, or None when only indices came
        self.summary = {}

    def append(self, ids, predictions, targets):
        """Stores a batch.

        Arguments
        ---------
        ids : list of str
            Utterance IDs.
        predictions : torch.Tensor
            Log-probabilities ``[B, C]`` (or ``[B, 1, C]``, as SpeechBrain classifiers give),
            or predicted indices ``[B]`` / ``[B, 1]`` of integer dtype. Scores are passed through
            ``log_softmax``, a no-op on log-probabilities, so raw logits work too.
        targets : torch.Tensor
            True indices ``[B]`` or ``[B, 1]``.
        """
        ids = list(ids)
        predictions = predictions.detach().cpu()
        targets = torch.as_tensor(targets).detach().cpu().reshape(-1).long()
        if predictions.is_floating_point():
            scores = torch.log_softmax(predictions.reshape(len(ids), -1).double(), dim=-1)
            self.log_probs.extend(scores.tolist())  # plain lists gather cheaply across ranks
            predictions = scores.argmax(dim=-1)
        else:
            predictions = predictions.reshape(-1).long()
            self.log_probs.extend([None] * len(ids))
        if not len(ids) == predictions.numel() == targets.numel():
            raise ValueError(
                f"{len(ids)} ids, {predictions.numel()} predictions and {targets.numel()} targets"
            )
        self.ids.extend(ids)
        self.predictions.extend(predictions.tolist())
        self.targets.extend(targets.tolist())

    def sync(self):
        """Gathers the utterances of all ``torch.distributed`` processes into every process.

        Must be called by every process (it is a collective operation); a no-op when
        ``torch.distributed`` is not initialised. Utterances are kept in rank order and an ID
        seen twice (a ``DistributedSampler`` pads shards with repeats) is kept once.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        local = (self.ids, self.predictions, self.targets, self.log_probs)
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, local)
        self.clear()
        seen = set()
        for ids, predictions, targets, log_probs in gathered:
            for item in zip(ids, predictions, targets, log_probs):
                if item[0] in seen:
                    continue
                seen.add(item[0])
                for store, value in zip(
                    (self.ids, self.predictions, self.targets, self.log_probs), item
                ):
                    store.append(value)

    def _n_classes(self):
        """The number of classes, given or inferred."""
        if self.n_classes is not None:
            return self.n_classes
        if self.label_names is not None:
            return len(self.label_names)
        widths = {len(p) for p in self.log_probs if p is not None}
        if widths:
            return max(widths)
        return max(self.predictions + self.targets, default=-1) + 1

    def _name(self, index):
        return self.label_names[index] if self.label_names is not None else index

    def summarize(self, field=None):
        """Computes WA, UA, per-class recall and the confusion matrix.

        Arguments
        ---------
        field : str, optional
            Return only this entry (e.g. ``"UA"`` or ``"error_rate"``, which is ``1 - WA``).

        Returns
        -------
        dict or value
            ``WA``, ``UA`` and ``error_rate`` as fractions in ``[0, 1]``, ``recall``
            (class name or index -> recall; NaN for classes absent from the targets),
            ``confusion`` (``LongTensor``, rows true, columns predicted) and ``n`` (utterances);
            or the entry named by ``field``.
        """
        cm = confusion_matrix(self.targets, self.predictions, self._n_classes())
        wa = weighted_accuracy(cm)
        recall = per_class_recall(cm)
        self.summary = {
            "WA": wa,
            "UA": unweighted_accuracy(cm),
            "error_rate": 1.0 - wa,
            "recall": {self._name(i): float(r) for i, r in enumerate(recall)},
            "confusion": cm,
            "n": len(self.ids),
        }
        return self.summary[field] if field is not None else self.summary

    def write_stats(self, filestream, verbose=False):
        """Writes the summary in readable form (as ``MetricStats.write_stats`` does).

        Arguments
        ---------
        filestream : file-like
            Where to write.
        verbose : bool
            Also print it.
        """
        if not self.summary:
            self.summarize()
        s = self.summary
        lines = [f"Utterances: {s['n']}", f"WA: {100 * s['WA']:.2f}%", f"UA: {100 * s['UA']:.2f}%"]
        lines += [f"Recall {name}: {100 * r:.2f}%" for name, r in s["recall"].items()]
        lines.append(f"Confusion (rows true, columns predicted):\n{s['confusion']}")
        text = "\n".join(lines) + "\n"
        filestream.write(text)
        if verbose:
            print(text)

    def write_predictions(self, path, label_names=None):
        """Writes one row per utterance: ID, target, prediction and, when scores were appended
        for every utterance, the probability of each class (``p_<label>`` columns).

        Under ``torch.distributed`` only rank 0 writes (call ``sync()`` first); other ranks
        return ``None``.

        Arguments
        ---------
        path : str
            CSV file to write, e.g. ``<output_folder>/predictions.csv``.
        label_names : list of str, optional
            Class names for the target / prediction columns; default: those given at
            construction, else the indices.

        Returns
        -------
        str or None
            The path written.

        Example
        -------
        >>> metrics = EmotionMetrics()
        >>> metrics.append(["u1"], torch.log(torch.tensor([[0.25, 0.75]])), torch.tensor([0]))
        >>> path = getfixture("tmpdir").join("predictions.csv").strpath
        >>> _ = metrics.write_predictions(path, ["neu", "ang"])
        >>> print(open(path).read().strip())
        ID,target,prediction,p_neu,p_ang
        u1,neu,ang,0.250000,0.750000
        """
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_rank() != 0:
                return None
        names = list(label_names) if label_names is not None else self.label_names
        n_classes = self._n_classes()
        if names is not None and len(names) < n_classes:
            raise ValueError(f"{path}: {len(names)} label names for {n_classes} classes")

        def name(index):
            """The label name of a class index (the index itself without names)."""
            return names[index] if names is not None else index

        with_probs = bool(self.log_probs) and all(p is not None for p in self.log_probs)
        header = ["ID", "target", "prediction"]
        if with_probs:
            header += [f"p_{name(i)}" for i in range(n_classes)]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for i, uid in enumerate(self.ids):
                row = [uid, name(self.targets[i]), name(self.predictions[i])]
                if with_probs:
                    row += [f"{math.exp(p):.6f}" for p in self.log_probs[i]]
                writer.writerow(row)
        return path
