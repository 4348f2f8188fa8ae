"""`BackupAndRestore`: Keras's fault-tolerance callback, made atomic.

Keras's `keras.callbacks.BackupAndRestore` rewrites its weights file, then
its metadata file, both in place: a kill inside those writes leaves a
truncated weights file (the resume fails), new weights beside the old
epoch number (the resume silently trains an epoch twice) or an empty
metadata file (the resume fails). This callback writes each backup's
weights to a new file, then names it in the metadata, which is replaced
atomically (`tfkd.io`): the metadata always names a complete weights file,
so a kill at any moment resumes from the last complete backup.
"""

import json
import os
import shutil

import keras

from tfkd import _compat
from tfkd import io as tfkd_io

_METADATA = "tfkd_backup.json"


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Backs up training at each epoch's end and resumes a killed run.

    Use it as `keras.callbacks.BackupAndRestore` (it is one, so
    `FeatureDistiller.fit_two_stage` keeps it through stage 1): pass it to
    `fit`; if the process dies, run the same script again and `fit`
    continues after the last completed epoch, with the model's weights and
    the optimizer's state as they were. Unlike Keras's, every backup is
    written atomically (see the module docstring), so a kill *during* a
    backup write is also safe. Backups are taken at each epoch's end; under
    `MultiWorkerMirroredStrategy` the chief writes them (the directory must
    be one all workers can read) and every worker restores them.

    Args:
        backup_dir: Directory of the backups (created; removed at the end
            of a completed `fit` unless `delete_checkpoint=False`).
        delete_checkpoint: Remove the backups when `fit` completes.

    Example:

    >>> import tempfile
    >>> import tfkd
    >>> from tfkd import testing
    >>> d = tfkd.Distiller(testing.tiny_conv_model("t"),
    ...                    testing.tiny_conv_model("s"))
    >>> d.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> backup = BackupAndRestore(tempfile.mkdtemp())
    >>> d.fit(x, y, epochs=2, verbose=0, callbacks=[backup]).epoch
    [0, 1]
    """

    def __init__(self, backup_dir, delete_checkpoint=True):
        super().__init__(backup_dir, save_freq="epoch",
                         delete_checkpoint=delete_checkpoint)
        self._saves = 0

    def _metadata_path(self):
        return os.path.join(self.backup_dir, _METADATA)

    def _read_metadata(self):
        path = self._metadata_path()
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
        weights = os.path.join(self.backup_dir, metadata["weights"])
        if not os.path.exists(weights):
            raise ValueError(
                f"The backup in {self.backup_dir!r} names the weights file "
                f"{metadata['weights']!r}, which is missing. Remove the "
                "directory to start the run afresh."
            )
        return metadata, weights

    def on_train_begin(self, logs=None):
        found = self._read_metadata()
        if found is None:
            return
        metadata, weights = found
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            # Optimizer variables must exist before their state loads.
            model.optimizer.build(model.trainable_variables)
        model.load_weights(weights)
        self._saves = int(metadata.get("save", 0))
        _compat.set_initial_epoch(model, int(metadata["epoch"]))

    def on_train_batch_end(self, batch, logs=None):
        pass  # Backups are taken at epoch ends only.

    def on_epoch_end(self, epoch, logs=None):
        # Under MultiWorkerMirroredStrategy the workers hold the same
        # weights: the chief writes the backup that all of them restore.
        strategy = getattr(self.model, "distribute_strategy", None)
        if strategy is not None and not strategy.extended.should_checkpoint:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        previous = self._read_metadata()
        self._saves += 1
        name = f"backup-{self._saves}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        with tfkd_io.atomic_path(path, ".weights.h5") as tmp:
            self.model.save_weights(tmp, overwrite=True)
        # The metadata names the new file only once it is complete.
        tfkd_io.write_json(self._metadata_path(), {
            "epoch": epoch + 1, "weights": name, "save": self._saves})
        if previous is not None and os.path.basename(previous[1]) != name:
            os.remove(previous[1])

    def on_train_end(self, logs=None):
        strategy = getattr(self.model, "distribute_strategy", None)
        if strategy is not None and not strategy.extended.should_checkpoint:
            return
        if self.delete_checkpoint and os.path.exists(self.backup_dir):
            shutil.rmtree(self.backup_dir, ignore_errors=True)
