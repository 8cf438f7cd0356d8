"""A torch linear or MLP head on stored features, as a scikit-learn estimator.

:class:`TorchHeadClassifier` follows scikit-learn's rules (``__init__`` stores hyperparameters,
``fit`` validates and returns ``self``, learned state ends in ``_``), so it works inside
``Pipeline`` and ``GridSearchCV`` and passes ``parametrize_with_checks``. Torch is needed to
fit only: the learned weights are kept as NumPy arrays and ``predict`` is plain NumPy, so a
saved head applies without torch.

Training: a validation part (``validation_fraction``, stratified when every class allows it)
is held out of the training rows; AdamW minimises cross-entropy in shuffled mini-batches; after
each epoch the validation loss is measured, and training stops when it has not improved for
``patience`` epochs. The weights of the best epoch are restored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from fstore.classifiers.evaluation import TrainingRun, run_splits
from fstore.classifiers.protocol import SplitProtocol
from fstore.classifiers.transforms import check_pca, check_pca_fits, check_scale, transform_steps
from fstore.errors import ClassifierError, MissingDependencyError
from fstore.store import FeatureSet


def holdout_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, validation)`` of a held-out part of about ``fraction`` of ``y``.

    Stratified when every class has two rows or more and the part can hold each class once;
    otherwise a plain random part. With ``fraction == 0`` or fewer than 2 rows, no validation.
    """
    n = len(y)
    if fraction <= 0 or n < 2:
        return np.arange(n), np.arange(0)
    n_val = min(max(1, int(round(fraction * n))), n - 1)
    labels, counts = np.unique(y, return_counts=True)
    rng = np.random.default_rng(seed)
    if counts.min() >= 2 and len(labels) <= n_val <= n - len(labels):
        from sklearn.model_selection import StratifiedShuffleSplit

        splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
        train, val = next(splitter.split(np.zeros(n), y))
    else:
        order = rng.permutation(n)
        train, val = order[n_val:], order[:n_val]
    return np.sort(train), np.sort(val)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            "training the head needs torch: pip install 'fstore[torch]' "
            "(the SVM and PCA need no torch)"
        ) from None
    return torch


def forward_numpy(
    X: np.ndarray, coefs: list[np.ndarray], intercepts: list[np.ndarray]
) -> np.ndarray:
    """Logits of the head for ``X``: linear layers (torch layout ``(out, in)``), ReLU between."""
    h = np.asarray(X, dtype=np.float32)
    for i, (w, b) in enumerate(zip(coefs, intercepts, strict=True)):
        h = h @ w.T + b
        if i < len(coefs) - 1:
            h = np.maximum(h, 0)
    return h


class TorchHeadClassifier(ClassifierMixin, BaseEstimator):
    """A linear (``hidden=()``) or MLP head trained with torch, early-stopped on validation loss.

    Parameters:
        hidden: sizes of the hidden layers (ReLU); ``()`` is a linear (softmax regression) head.
        epochs: most passes over the training part.
        patience: epochs without a lower validation loss before stopping.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: mini-batch size.
        validation_fraction: part of the training rows held out for early stopping; 0 trains
            on all rows for ``epochs`` epochs and keeps the last weights.
        random_state: seed of the weights, the shuffling and the held-out part; the same seed
            gives the same model.
        threads: torch intra-op threads while fitting (None: torch's default). Heads on stored
            features are small, and one thread is fastest for them; several threads spin on
            shared cores and can make a fit a hundred times slower on a busy machine.

    Attributes (after ``fit``):
        classes_, n_features_in_: as in scikit-learn.
        coefs_, intercepts_: weights and biases per layer, NumPy, torch layout ``(out, in)``.
        n_iter_: epochs run. best_epoch_: the (1-based) epoch whose weights were kept.
        stopped_early_: True when patience ran out before ``epochs``.
        validation_indices_: rows of ``X`` held out for early stopping.
        loss_curve_, validation_loss_curve_: per epoch, mean training / validation loss.
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (),
        epochs: int = 100,
        patience: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        validation_fraction: float = 0.1,
        random_state: int | None = 0,
        threads: int | None = 1,
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.patience = patience
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.threads = threads

    def _check_params(self) -> None:
        if any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden layer sizes must be >= 1, got {self.hidden!r}")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError("epochs, patience and batch_size must be >= 1")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")

    def fit(self, X, y) -> TorchHeadClassifier:
        """Train on ``(X, y)``; returns ``self``."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; "
                f"got 1 class: {self.classes_[0]!r}"
            )
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        train, val = holdout_split(y_idx, self.validation_fraction, seed)
        self.validation_indices_ = val
        torch = _import_torch()
        threads_before = torch.get_num_threads()
        try:
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self._fit_torch(
                    torch, X.astype(np.float32), y_idx.astype(np.int64), train, val, seed
                )
        finally:
            torch.set_num_threads(threads_before)
        return self

    def _fit_torch(
        self, torch, X: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, seed: int
    ) -> None:
        sizes = [X.shape[1], *(int(h) for h in self.hidden), len(self.classes_)]
        layers: list = []
        for i in range(len(sizes) - 1):
            layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        module = torch.nn.Sequential(*layers)
        optimizer = torch.optim.AdamW(
            module.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        loss_fn = torch.nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(seed)
        Xt, yt = torch.from_numpy(X[train]), torch.from_numpy(y[train])
        Xv, yv = torch.from_numpy(X[val]), torch.from_numpy(y[val])
        best_loss, best_state, best_epoch, wait = float("inf"), None, 0, 0
        self.loss_curve_, self.validation_loss_curve_ = [], []
        self.stopped_early_ = False
        for epoch in range(1, self.epochs + 1):
            module.train()
            order = torch.randperm(len(Xt), generator=generator)
            total = 0.0
            for start in range(0, len(Xt), self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(module(Xt[batch]), yt[batch])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            self.loss_curve_.append(total / len(Xt))
            self.n_iter_ = epoch
            if len(val) == 0:
                continue
            module.eval()
            with torch.no_grad():
                val_loss = loss_fn(module(Xv), yv).item()
            self.validation_loss_curve_.append(val_loss)
            if val_loss < best_loss:
                best_loss, best_epoch, wait = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                wait += 1
                if wait >= self.patience:
                    self.stopped_early_ = True
                    break
        if best_state is not None:
            module.load_state_dict(best_state)
        self.best_epoch_ = best_epoch if best_state is not None else self.n_iter_
        self.best_validation_loss_ = best_loss if best_state is not None else None
        linears = [m for m in module if isinstance(m, torch.nn.Linear)]
        self.coefs_ = [m.weight.detach().numpy().copy() for m in linears]
        self.intercepts_ = [m.bias.detach().numpy().copy() for m in linears]

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return forward_numpy(X, self.coefs_, self.intercepts_)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(N, n_classes)``, columns in ``classes_`` order."""
        return softmax(self._logits(X).astype(np.float64), axis=1)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    @classmethod
    def from_weights(
        cls, coefs: list[np.ndarray], intercepts: list[np.ndarray], classes: np.ndarray
    ) -> TorchHeadClassifier:
        """A fitted head from saved weights (torch layout ``(out, in)``); predicts without
        torch. The training-only attributes (loss curves, epochs) are not restored."""
        head = cls(hidden=tuple(int(w.shape[0]) for w in coefs[:-1]))
        head.coefs_ = [np.asarray(w) for w in coefs]
        head.intercepts_ = [np.asarray(b) for b in intercepts]
        head.classes_ = np.asarray(classes)
        head.n_features_in_ = int(head.coefs_[0].shape[1])
        return head


@dataclass(frozen=True)
class HeadOptions:
    """How ``fstore train head`` trains; see :class:`TorchHeadClassifier` for the fields it
    shares. ``seed`` is its ``random_state``; ``scale`` and ``pca`` as for the SVM."""

    hidden: tuple[int, ...] = ()
    epochs: int = 100
    patience: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    validation_fraction: float = 0.1
    seed: int = 0
    threads: int | None = 1
    scale: str = "standard"  # more accurate than l2 for the head (docs/performance.md)
    pca: int | float | None = None

    def __post_init__(self) -> None:
        check_scale(self.scale)
        check_pca(self.pca)
        try:
            self.estimator()._check_params()
        except ValueError as exc:
            raise ClassifierError(f"bad head option: {exc}") from None

    def estimator(self) -> TorchHeadClassifier:
        """The unfitted head: every field that is one of its parameters, ``seed`` as its
        ``random_state``."""
        names = TorchHeadClassifier._get_param_names()
        given = {f.name: getattr(self, f.name) for f in fields(self) if f.name in names}
        return TorchHeadClassifier(**given, random_state=self.seed)


def head_pipeline(options: HeadOptions):  # -> sklearn.pipeline.Pipeline
    """``Pipeline(scale, pca, head)`` as ``options`` describe it."""
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [*transform_steps(options.scale, options.pca, options.seed), ("head", options.estimator())]
    )


def train_head(
    fs: FeatureSet, options: HeadOptions = HeadOptions(), protocol: SplitProtocol | None = None
) -> TrainingRun:
    """Train and test the head on each split of ``fs``.

    With ``options.pca`` set, ``run.baseline`` is the same training on the full features.
    """
    _import_torch()
    if options.pca is not None:
        check_pca_fits(options.pca, 10**12, fs.X.shape[1])

    def fit(X: np.ndarray, y: np.ndarray):
        check_pca_fits(options.pca, len(y), 10**12)
        pipeline = head_pipeline(options).fit(X, y)
        head = pipeline["head"]
        details = {
            "epochs_run": head.n_iter_,
            "best_epoch": head.best_epoch_,
            "stopped_early": head.stopped_early_,
            "best_validation_loss": head.best_validation_loss_,
        }
        if options.pca is not None:
            details["pca_components"] = int(pipeline["pca"].n_components_)
        return pipeline, details

    fits = run_splits(fs, fit, protocol)
    return TrainingRun.of("head", fs, fits, options=options, protocol=protocol, train=train_head)
