"""Checkpoints that survive a kill at any moment, including in the middle of a save.

SpeechBrain's ``Checkpointer`` writes a checkpoint's ``CKPT.yaml`` (which is what makes a folder
count as a checkpoint) before the parameter files, and deletes old checkpoints with
``shutil.rmtree``. A run killed during either leaves a folder that looks complete but lacks files
or holds a truncated one; the next run then loads it, or picks it as the best, and crashes.
``AtomicCheckpointer`` writes ``CKPT.yaml`` last, atomically, with the name and size of every file
of the checkpoint, and ignores (and later removes) any checkpoint folder that does not match its
``CKPT.yaml``, so a rerun resumes from the last complete checkpoint.
"""

import logging
import os
import pathlib
import shutil
import time

import yaml
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    METAFNAME,
    Checkpointer,
)
from speechbrain.utils.distributed import ddp_barrier, if_main_process

logger = logging.getLogger(__name__)

FILES_KEY = "files"  # CKPT.yaml entry: {file name: size in bytes} of the checkpoint's files


def _fsync(path, directory=False):
    """Flushes a file (or a directory entry) to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_problem(path):
    """Says why a checkpoint folder is incomplete, or returns ``None`` if it is complete.

    A folder is complete when its ``CKPT.yaml`` exists and, if it lists the checkpoint's files
    (as ``AtomicCheckpointer`` does), each of them exists with the listed size. A ``CKPT.yaml``
    without that list (written by SpeechBrain's own ``Checkpointer``) is trusted.

    Arguments
    ---------
    path : str or pathlib.Path
        A ``CKPT+...`` folder.

    Returns
    -------
    str or None
        What is wrong with it, or ``None``.

    Example
    -------
    >>> folder = getfixture("tmpdir").mkdir("CKPT+x")
    >>> checkpoint_problem(folder)
    'no CKPT.yaml (the save was interrupted)'
    >>> _ = folder.join("model.ckpt").write("1234")
    >>> _ = folder.join("CKPT.yaml").write("files: {model.ckpt: 4, counter.ckpt: 1}")
    >>> checkpoint_problem(folder)
    'counter.ckpt is missing'
    >>> _ = folder.join("counter.ckpt").write("7")
    >>> checkpoint_problem(folder) is None
    True
    """
    path = pathlib.Path(path)
    try:
        with open(path / METAFNAME, encoding="utf-8") as f:
            meta = yaml.safe_load(f)
    except FileNotFoundError:
        return f"no {METAFNAME} (the save was interrupted)"
    except (OSError, yaml.YAMLError) as err:
        return f"unreadable {METAFNAME} ({err})"
    if not isinstance(meta, dict):
        return f"{METAFNAME} holds no metadata"
    for name, size in (meta.get(FILES_KEY) or {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} were saved"
    return None


class AtomicCheckpointer(Checkpointer):
    """A SpeechBrain ``Checkpointer`` whose checkpoints are complete or invisible.

    Same arguments and use as ``speechbrain.utils.checkpoints.Checkpointer``. Saving writes
    the parameter files first and then ``CKPT.yaml`` (through a temporary file and a rename, after
    flushing the files to disk), listing every file with its size. Listing (hence finding,
    recovering and deleting) checkpoints skips folders that do not match their ``CKPT.yaml``:
    a save or a deletion cut short by a kill. The next save removes such folders.

    Arguments
    ---------
    *args, **kwargs
        Passed to ``Checkpointer``: ``checkpoints_dir``, ``recoverables``, ...

    Example
    -------
    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> ckpt_dir = getfixture("tmpdir")
    >>> checkpointer = AtomicCheckpointer(ckpt_dir, {"model": model})
    >>> ckpt = checkpointer.save_checkpoint(meta={"UA": 0.5})
    >>> sorted(ckpt.meta["files"])
    ['model.ckpt']
    >>> ckpt.path.joinpath("model.ckpt").write_bytes(b"cut short")  # as if killed mid-write
    9
    >>> checkpointer.find_checkpoint() is None
    True
    >>> _ = checkpointer.save_checkpoint(meta={"UA": 0.6})
    >>> [c.meta["UA"] for c in checkpointer.list_checkpoints()]
    [0.6]
    >>> len(ckpt_dir.listdir("CKPT+*"))  # the incomplete one was removed by the save
    1
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._unwritten_meta = None
        self._reported = set()

    def _save_checkpoint_metafile(self, fpath, meta_to_include=None, end_of_epoch=True):
        # ``Checkpointer.save_checkpoint`` calls this before saving the parameter files:
        # keep the metadata and write it in ``save_checkpoint`` once they are all saved.
        meta = {"unixtime": time.time(), "end-of-epoch": end_of_epoch}
        meta.update(meta_to_include or {})
        self._unwritten_meta = (pathlib.Path(fpath), meta)
        return meta

    def save_checkpoint(self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Saves a checkpoint that becomes visible only once all its files are on disk.

        Arguments and return value as ``Checkpointer.save_checkpoint``; the returned metadata
        also lists the checkpoint's files and sizes under ``"files"``.
        """
        if if_main_process():
            self.remove_incomplete_checkpoints()
        ckpt = super().save_checkpoint(meta or {}, end_of_epoch, name, verbosity)
        ddp_barrier()  # every process has written its files
        if ckpt is not None:
            meta_path, saved_meta = self._unwritten_meta
            self._unwritten_meta = None
            files = {}
            for file in sorted(ckpt.path.iterdir()):
                if file.name != METAFNAME and file.is_file():
                    _fsync(file)
                    files[file.name] = file.stat().st_size
            saved_meta[FILES_KEY] = files
            tmp_path = meta_path.with_name(f".{METAFNAME}.tmp")
            with open(tmp_path, "w", encoding="utf-8") as f:
                f.write("# yamllint disable\n")
                f.write(yaml.dump(saved_meta))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, meta_path)
            _fsync(ckpt.path, directory=True)
        ddp_barrier()  # no process goes on before the checkpoint exists
        return ckpt

    def list_checkpoints(self):
        """Lists the complete checkpoints (see ``checkpoint_problem``).

        Returns
        -------
        list
            ``Checkpoint`` namedtuples, as ``Checkpointer.list_checkpoints``.
        """
        complete = []
        for ckpt in super().list_checkpoints():
            problem = checkpoint_problem(ckpt.path)
            if problem is None:
                complete.append(ckpt)
            elif ckpt.path not in self._reported:
                self._reported.add(ckpt.path)
                logger.warning("Ignoring the incomplete checkpoint %s: %s", ckpt.path, problem)
        return complete

    def remove_incomplete_checkpoints(self):
        """Deletes the ``CKPT+*`` folders left incomplete by an interrupted save or deletion.

        Call it on one process only, when no save is under way (``save_checkpoint`` does).

        Returns
        -------
        list of pathlib.Path
            The folders deleted.
        """
        removed = []
        if not self.checkpoints_dir.is_dir():
            return removed
        for path in sorted(self.checkpoints_dir.glob(f"{CKPT_PREFIX}+*")):
            problem = checkpoint_problem(path) if path.is_dir() else None
            if problem is not None:
                logger.warning("Removing the incomplete checkpoint %s: %s", path, problem)
                shutil.rmtree(path)
                removed.append(path)
        return removed


def _save_folder(source):
    """The folder holding the CKPT+ folders of a run given as output or save folder."""
    for folder in (source, source / "save"):
        if folder.is_dir() and any(p.name.startswith("CKPT+") for p in folder.iterdir()):
            return folder
    raise FileNotFoundError(
        f"{source}: no checkpoints (CKPT+... folders) in it or in {source / 'save'}"
    )


def find_checkpoint(source, max_key="UA"):
    """Finds the best checkpoint of a recipe run.

    Arguments
    ---------
    source : str or path-like
        A run's output folder, its save folder, or a ``CKPT+...`` folder (returned as is).
    max_key : str
        Checkpoint meta key to maximise (the recipe records ``UA`` and ``WA``).

    Returns
    -------
    speechbrain.utils.checkpoints.Checkpoint
        With ``path`` (the ``CKPT+...`` folder) and ``meta``.

    Example
    -------
    >>> import torch
    >>> save = pathlib.Path(getfixture("tmpdir"))
    >>> ckpt = Checkpointer(save, {"lin": torch.nn.Linear(1, 1)})
    >>> for ua in (40.0, 60.0, 50.0):
    ...     _ = ckpt.save_checkpoint(meta={"UA": ua}, name=f"ua{ua:.0f}")
    >>> find_checkpoint(save).path.name
    'CKPT+ua60'
    """
    source = pathlib.Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder")
    try:  # SpeechBrain parses every CKPT.yaml of the folder
        if (source / "CKPT.yaml").is_file():
            return Checkpointer(source.parent).find_checkpoint(
                ckpt_predicate=lambda ckpt: ckpt.path.name == source.name
            )
        save_folder = _save_folder(source)
        best = Checkpointer(save_folder).find_checkpoint(max_key=max_key)
    except OSError:
        raise
    except Exception as err:  # YAML and decoding errors of many types
        raise ValueError(f"{source}: a checkpoint's CKPT.yaml cannot be read ({err})") from None
    if best is None:
        raise FileNotFoundError(f"{save_folder}: no checkpoint records {max_key!r} in its meta")
    return best
