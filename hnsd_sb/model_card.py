"""The model card of a model folder: ``README.md``, filled from the run by ``hnsd export``.

A card says what a model is, so that a folder found on a disk or a hub can be judged without
its author: the architecture and size, the labels, the data it was trained on (corpus, language,
utterances, hours and speakers per emotion), its speaker-independent scores and how they were
measured, the command that trained it, the terms of the training data, and what the model should
not be used for. Nothing in it is typed by hand: ``summarize_run`` reads the run's own files
(``prepare_options.json``, ``train.csv``, ``test_results.json``) and ``render_model_card`` writes
the text; what a run did not record is said to be unknown.
"""

import csv
import json
from collections import defaultdict
from pathlib import Path

CARD_FILE = "README.md"

# What the data preparation knows of each corpus: language, kind of speech, terms of use (None:
# not recorded here, check the corpus's own terms).
CORPUS_FACTS = {
    "IEMOCAP": {
        "language": "English (North American)",
        "speech": "acted speech, scripted and improvised dyadic sessions",
        "terms": "the IEMOCAP release agreement of USC SAIL (research use; the data may not be "
        "redistributed)",
    },
    "RAVDESS": {
        "language": "English (North American)",
        "speech": "acted speech, two fixed sentences",
        "terms": "CC BY-NC-SA 4.0 (attribution, non-commercial, share alike)",
    },
    "CREMA-D": {
        "language": "English (North American)",
        "speech": "acted speech, twelve fixed sentences",
        "terms": "Open Database License (ODbL) 1.0",
    },
    "EmoDB": {"language": "German", "speech": "acted speech, ten fixed sentences", "terms": None},
}


def summarize_run(run_folder):
    """What a recipe run's folder records about its data, scores and command.

    Arguments
    ---------
    run_folder : str or path-like
        The run's output folder (``train.csv``, ``prepare_options.json``,
        ``test_results.json``; any of them may be missing).

    Returns
    -------
    dict
        ``options`` (the data preparation's, or None), ``train`` (per emotion:
        ``utterances``, ``hours``, ``speakers``; None without ``train.csv``), ``speakers``
        (number of training speakers), ``test`` (``test_results.json``, or None).

    Example
    -------
    >>> run = getfixture("tmpdir")
    >>> _ = run.join("train.csv").write(
    ...     "ID,duration,wav,spk_id,emo\\nu1,1800,a.wav,s1,ang\\nu2,1800,b.wav,s2,ang\\n"
    ... )
    >>> summarize_run(run)["train"]
    {'ang': {'utterances': 2, 'hours': 1.0, 'speakers': 2}}
    """
    from hnsd_sb.manifest import read_manifest_text  # imports torch: not for `hnsd info`

    run = Path(run_folder)
    summary = {"options": None, "train": None, "speakers": None, "test": None}
    for key, name in (("options", "prepare_options.json"), ("test", "test_results.json")):
        try:
            summary[key] = json.loads((run / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(summary[key], dict):
            summary[key] = None
    test = summary["test"]
    if test and not all(isinstance(test.get(k), (int, float)) for k in ("WA", "UA", "n")):
        summary["test"] = None  # not the recipe's test_results.json
    manifest = run / "train.csv"
    if manifest.is_file():
        per_emotion = defaultdict(lambda: {"utterances": 0, "hours": 0.0, "speakers": set()})
        all_speakers = set()
        for row in csv.DictReader(read_manifest_text(str(manifest))):
            entry = per_emotion[row["emo"]]
            entry["utterances"] += 1
            entry["hours"] += float(row["duration"]) / 3600
            entry["speakers"].add(row["spk_id"])
            all_speakers.add(row["spk_id"])
        summary["train"] = {
            emo: dict(entry, hours=round(entry["hours"], 4), speakers=len(entry["speakers"]))
            for emo, entry in sorted(per_emotion.items())
        }
        summary["speakers"] = len(all_speakers)
    return summary


def _percent(fraction):
    """A fraction (as ``test_results.json`` holds them) as a percentage with two decimals."""
    return f"{100 * fraction:.2f}"


def render_model_card(info, n_parameters, run=None):
    """The text of a model folder's ``README.md``.

    Arguments
    ---------
    info : dict
        The folder's ``model_info.json`` content (labels, architecture, validation, ...).
    n_parameters : int
        The model's parameter count.
    run : dict or None
        ``summarize_run`` of the run it was exported from (None: a model written from memory,
        whose training is unknown).

    Returns
    -------
    str
        Markdown.

    Example
    -------
    >>> arch = {"features": {}, "normalizer": {}, "model": {"n_classes": 2}}
    >>> info = {"labels": ["neg", "pos"], "architecture": arch, "validation": {"UA": 71.5}}
    >>> card = render_model_card(info, 3_400_000)
    >>> "3,400,000 parameters" in card, "| validation | ? | 71.50 |" in card
    (True, True)
    >>> "Not for decisions about people" in card
    True
    """
    run = run or {"options": None, "train": None, "speakers": None, "test": None}
    labels = info["labels"]
    model = info["architecture"]["model"]
    features = info["architecture"]["features"]
    options = run["options"] or {}
    corpus = options.get("corpus")
    facts = CORPUS_FACTS.get(corpus, {})
    lines = [
        "# HNSD speech emotion recogniser",
        "",
        "Model card written by `hnsd export` from the run's own files; nothing in it is typed by "
        "hand. `hnsd info FOLDER` prints it and checks that the folder loads.",
        "",
        "## Model",
        "",
        "HNSD (Cao et al., ICASSP 2021): log-Mel energies (static) and their deltas and "
        "delta-deltas (dynamic), speaker-level z-score normalisation, an LSTM per stream, a "
        "gated multimodal unit fusing them per frame, attention pooling and a classifier.",
        "",
        f"- {n_parameters:,} parameters; LSTM size {model.get('hidden_size', 512)}, layers "
        f"{model.get('num_layers', 1)}, bidirectional {model.get('bidirectional', False)}; "
        f"streams `{model.get('streams', 'two')}`, fusion `{model.get('fusion', 'gmu')}`, "
        f"pooling `{model.get('pooling', 'attention')}`"
        + ("; a functionals expert beside the head" if model.get("expert") else "")
        + (
            f"; the encoders read {model['stack_frames']} frames a step"
            if model.get("stack_frames", 1) > 1
            else ""
        )
        + (
            "; the classifier reads the pooled vector z-scored with its speaker's statistics "
            "(`vector_normalizer.ckpt`; unknown speakers: all speakers')"
            if "vector_normalizer" in info["architecture"]
            else ""
        ),
        f"- input: mono audio at {features.get('sample_rate', 16000)} Hz (other rates are "
        f"resampled); {features.get('n_mels', 26)} log-Mel bands, "
        f"{features.get('win_length', 25)} ms windows every {features.get('hop_length', 10)} ms"
        + (f"; silence below {features['trim_db']} dB trimmed" if features.get("trim_db") else ""),
        f"- exported by hnsd-sb {info.get('hnsd_sb_version') or 'unknown'} from "
        f"`{info.get('exported_from') or 'weights in memory'}`"
        + (f" (epoch {info['epoch']})" if info.get("epoch") else ""),
        "",
        "## Labels",
        "",
        f"Output order: {', '.join(f'`{label}`' for label in labels)}. Chance UA "
        f"{100 / len(labels):.2f} %.",
    ]
    label_map = options.get("label_map") or {}
    merged = [f"{raw} → {label}" for raw, label in sorted(label_map.items()) if raw != label]
    if merged:
        lines.append(f"Corpus labels merged: {', '.join(merged)}.")
    lines += ["", "## Training data", ""]
    if corpus:
        where = f"fold {options['fold']}" if "fold" in options else ""
        if where and "n_folds" in options:
            where += f" of {options['n_folds']}"
        if where and options.get("protocol"):
            where += f" ({options['protocol']} protocol)"
        lines.append(
            f"Corpus: **{corpus}**"
            + (f" ({facts['speech']}, in {facts['language']})" if facts else "")
            + (f"; label set `{options['label_set']}`" if options.get("label_set") else "")
            + (f"; {where}" if where else "")
            + ". The validation and test speakers are not among the training speakers."
        )
    else:
        lines.append("Corpus: not recorded (no `prepare_options.json` in the run).")
    if run["train"]:
        lines += ["", "| emotion | utterances | hours | speakers |", "|---|---:|---:|---:|"]
        for emo, entry in run["train"].items():
            lines.append(
                f"| {emo} | {entry['utterances']} | {entry['hours']:.2f} | {entry['speakers']} |"
            )
        total = sum(e["utterances"] for e in run["train"].values())
        hours = sum(e["hours"] for e in run["train"].values())
        lines.append(f"| all | {total} | {hours:.2f} | {run['speakers']} |")
    else:
        lines.append("Training manifest: not recorded.")
    lines += ["", "## Scores", ""]
    validation, test = info.get("validation") or {}, run["test"]
    lines += ["| speakers | WA (%) | UA (%) | utterances |", "|---|---:|---:|---:|"]
    if validation:
        # model_info.json holds percentages already
        wa, ua = (f"{validation[k]:.2f}" if k in validation else "?" for k in ("WA", "UA"))
        lines.append(f"| validation | {wa} | {ua} | |")
    if test:
        lines.append(f"| test | {_percent(test['WA'])} | {_percent(test['UA'])} | {test['n']} |")
    lines += [
        "",
        "WA: accuracy over utterances; UA: mean of the per-class recalls. The checkpoint is the "
        "one with the best validation UA; the test speakers were used once, for the test row.",
    ]
    if test and test.get("recall"):
        lines += ["", "Per-class recall on the test speakers (%):", ""]
        lines += ["| " + " | ".join(test["recall"]) + " |"]
        lines += ["|" + "---:|" * len(test["recall"])]
        lines += ["| " + " | ".join(_percent(r) for r in test["recall"].values()) + " |"]
    if not (validation or test):
        lines.append("No scores were recorded.")
    lines += ["", "## Training command", ""]
    command = (test or {}).get("command")
    if command:
        lines += ["```bash", command, "```"]
    else:
        lines.append(
            "Not recorded (runs made before hnsd-sb recorded it); the run's settings are in its "
            "`hyperparams.yaml`."
        )
    lines += ["", "## Terms of the training data", ""]
    if facts.get("terms"):
        lines.append(
            f"{corpus} is distributed under {facts['terms']}. Check whether these terms bind "
            "this model and its outputs before using or sharing them, above all commercially."
        )
    else:
        lines.append("Not recorded: check the terms of the corpus the model was trained on.")
    language = facts.get("language", "the training corpus's language")
    lines += [
        "",
        "## Intended use and limits",
        "",
        "- For research on speech emotion recognition and for trying the model on your own "
        "recordings. The labels are emotions as the corpus labelled them (in acted corpora, "
        "what the actors were asked to portray), not what a speaker feels.",
        f"- Trained on {facts.get('speech', 'one corpus')} in {language}: spontaneous speech, "
        "other languages, accents, ages, microphones and noise will score lower, often much "
        "lower. Measure on your own data before relying on it.",
        "- Its scores come from a few held-out speakers; across speakers they vary by several "
        "points.",
        "- Not for decisions about people: hiring, credit, insurance, policing, education, "
        "health or any other judgement of a person.",
        "",
    ]
    return "\n".join(lines)
