"""Knowledge distillation: training one HNSD on the averaged probabilities of an ensemble.

In the RAVDESS experiments the one change that raised UA on most folds was averaging the
predictions of several runs, which costs one network per member at inference. Distillation
(Hinton et al., 2015) trains a single network towards the ensemble's class probabilities on the
training utterances (its "soft targets") as well as towards the labels. The soft targets are
computed once, before training, by the recipe's ``ensemble.py --teacher-targets`` and read here
from a CSV file per fold. The divergence is torch's ``kl_div``; SpeechBrain's ``ce_kd`` and
``nll_loss_kd`` have no temperature, class weights or per-utterance indexing (which mixup needs
to pair the soft targets as it pairs the labels), so the loss around it and the reader of the
targets file are kept here.
"""

import math
import os

import torch

from hnsd_sb.manifest import read_rows


def write_teacher_targets(path, ids, labels, probs):
    """Writes the teachers' class probabilities of each utterance: the CSV that
    ``TeacherTargets`` reads, columns ``ID, p_<label>...``. Eight decimals, where
    ``EmotionMetrics.write_predictions`` (which needs labels and writes six) would round the
    small probabilities that a temperature above 1 brings back into play.

    Arguments
    ---------
    path : str
        The CSV file to write (its folder is made).
    ids : list of str
        Utterance IDs, one per row of ``probs``.
    labels : list of str
        The class names, in the order of the columns of ``probs``.
    probs : torch.Tensor
        ``[len(ids), len(labels)]`` probabilities, each row summing to 1.

    Example
    -------
    >>> path = getfixture("tmpdir").join("fold1", "teacher.csv").strpath
    >>> write_teacher_targets(path, ["u1"], ["ang", "sad"], torch.tensor([[0.25, 0.75]]))
    >>> print(open(path).read().strip())
    ID,p_ang,p_sad
    u1,0.25000000,0.75000000
    """
    if probs.shape != (len(ids), len(labels)):
        raise ValueError(
            f"{path}: probabilities of shape {tuple(probs.shape)} for {len(ids)} utterances "
            f"and {len(labels)} labels"
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(["ID", *(f"p_{label}" for label in labels)]) + "\n")
        for uid, row in zip(ids, probs.tolist()):
            f.write(",".join([uid, *(f"{p:.8f}" for p in row)]) + "\n")


class TeacherTargets:
    """The soft targets of a distillation run and the loss towards them.

    The training loss becomes ``(1 - weight) * label_loss + weight * T**2 * KL(q_T || p_T)``,
    where ``p_T`` and ``q_T`` are the student's and the teachers' probabilities at temperature
    ``T`` (each log-probability divided by ``T``, then normalised); the ``T**2`` keeps the
    soft term's gradient on the scale of the label loss (Hinton et al.). Each utterance's term is
    weighted like its label loss (the recipe's class weights), so both terms count every emotion
    alike.

    Arguments
    ---------
    folder : str or None
        Folder of the soft targets: ``fold<fold>/teacher.csv`` in it (``<folder>/teacher.csv``
        where ``fold`` is None), as ``ensemble.py --teacher-targets`` writes. None: off.
    fold : int or None
        The fold being trained.
    weight : float
        Share of the soft term in the loss, in [0, 1]; 0 trains on the labels alone.
    temperature : float
        ``T`` (> 0): above 1 flattens both distributions, so the teachers' second and third
        choices count.

    Example
    -------
    >>> folder = getfixture("tmpdir").strpath
    >>> write_teacher_targets(
    ...     f"{folder}/fold1/teacher.csv", ["u1", "u2"], ["ang", "sad"],
    ...     torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    >>> teacher = TeacherTargets(folder, fold=1, weight=0.5, temperature=2.0)
    >>> teacher.load(["ang", "sad"], ["u1", "u2"])
    >>> q = teacher.targets(["u2"])  # log-probabilities at T = 2
    >>> [round(v, 4) for v in q.exp()[0].tolist()]
    [0.3333, 0.6667]
    >>> student = torch.log(torch.tensor([[0.2, 0.8]]))
    >>> abs(float(teacher.soft_loss(student, q, torch.ones(1)))) < 1e-6  # the same: 0
    True
    """

    def __init__(self, folder=None, fold=None, weight=0.5, temperature=1.0):
        if isinstance(weight, bool) or not (isinstance(weight, (int, float)) and 0 <= weight <= 1):
            raise ValueError(f"TeacherTargets: weight must be in [0, 1], got {weight!r}")
        if isinstance(temperature, bool) or not (
            isinstance(temperature, (int, float)) and 0 < temperature < math.inf
        ):
            raise ValueError(
                f"TeacherTargets: temperature must be finite and > 0, got {temperature!r}"
            )
        self.path = None
        if folder is not None:
            parts = [folder] if fold is None else [folder, f"fold{fold}"]
            self.path = os.path.join(*parts, "teacher.csv")
        self.weight = float(weight)
        self.temperature = float(temperature)
        self._index = None
        self._log_q = None

    @property
    def enabled(self):
        """True where the loss has a soft term (a folder and a weight above 0)."""
        return self.path is not None and self.weight > 0

    def load(self, labels, train_ids):
        """Reads the soft targets, checked against the run's classes and training utterances.

        Arguments
        ---------
        labels : list of str
            The run's class names, in the order of its class indices.
        train_ids : list of str
            The IDs of the training utterances; each must have a row.

        Raises
        ------
        ValueError
            Naming the file (and line) where it is missing, its columns are not ``ID`` and
            ``p_<label>`` for exactly the run's classes, a value is not a probability, a row
            does not sum to 1, an ID repeats or a training utterance has no row.
        """
        if not os.path.isfile(self.path):
            raise ValueError(
                f"{self.path}: no soft targets (write them with ensemble.py --teacher-targets)"
            )
        columns, rows = read_rows(self.path)
        wanted = {f"p_{label}" for label in labels}
        if (
            not columns
            or columns[0] != "ID"
            or set(columns[1:]) != wanted
            or len(columns) != len(set(columns))
        ):
            raise ValueError(
                f"{self.path}: columns {columns}, expected ID and {sorted(wanted)} "
                "(the run's emotions)"
            )
        index, values = {}, []
        for line, row in rows:
            try:
                probs = [float(row[f"p_{label}"]) for label in labels]
            except (TypeError, ValueError):
                raise ValueError(
                    f"{self.path}, line {line}: a probability is not a number"
                ) from None
            if not all(math.isfinite(p) and 0 <= p <= 1 for p in probs):
                raise ValueError(f"{self.path}, line {line}: probabilities must be in [0, 1]")
            if abs(sum(probs) - 1) > 1e-3:
                raise ValueError(f"{self.path}, line {line}: probabilities sum to {sum(probs)}")
            if row["ID"] in index:
                raise ValueError(f"{self.path}, line {line}: ID {row['ID']} repeats")
            index[row["ID"]] = len(values)
            values.append(probs)
        missing = [uid for uid in train_ids if uid not in index]
        if missing:
            raise ValueError(
                f"{self.path}: no soft target for {len(missing)} training utterances, "
                f"e.g. {missing[0]} (were the teachers trained on the same fold?)"
            )
        q = torch.tensor(values, dtype=torch.float64).reshape(-1, len(labels)).clamp_min(1e-12)
        # the teachers' distribution at temperature T, kept as log-probabilities
        self._log_q = torch.log_softmax(q.log() / self.temperature, dim=1).float()
        self._index = index

    def targets(self, ids):
        """The teachers' soft targets of some utterances.

        Arguments
        ---------
        ids : list of str
            Utterance IDs (a batch's ``id``).

        Returns
        -------
        torch.Tensor
            ``[len(ids), classes]`` the teachers' log-probabilities at temperature ``T``, in the
            run's class order.
        """
        if self._index is None:
            raise RuntimeError("TeacherTargets: call load() before targets()")
        try:
            rows = [self._index[uid] for uid in ids]
        except KeyError as err:
            raise KeyError(f"{self.path}: no soft target for {err.args[0]}") from None
        return self._log_q[rows]

    def soft_loss(self, log_probs, log_q, weights):
        """``T**2 * KL(q_T || p_T)`` per utterance, averaged with ``weights``.

        Arguments
        ---------
        log_probs : torch.Tensor
            ``[batch, classes]`` the student's log-probabilities (temperature 1).
        log_q : torch.Tensor
            ``[batch, classes]`` the teachers' log-probabilities at ``T`` (``targets``).
        weights : torch.Tensor
            ``[batch]`` each utterance's weight (its class weight), as in a weighted NLL.

        Returns
        -------
        torch.Tensor
            The scalar loss.
        """
        log_p = torch.log_softmax(log_probs / self.temperature, dim=1)
        log_q = log_q.to(log_p.device, log_p.dtype)
        kl = torch.nn.functional.kl_div(log_p, log_q, reduction="none", log_target=True).sum(1)
        weights = weights.to(kl.dtype)
        return self.temperature**2 * (weights * kl).sum() / weights.sum()
