"""Classifiers trained from the feature store: SVM, torch head, PCA, layer study, zero-shot.

Every entry point takes a :class:`~fstore.store.FeatureSet` (or a store path)
and NumPy arrays, never images, so everything here is testable on synthetic features. Modules,
one per job:

* :mod:`.protocol`: train/test from the store's split, or K random per-class splits.
* :mod:`.evaluation`: accuracy, per-class accuracy, confusion matrix; a training run's results.
* :mod:`.svm`: linear SVM with a stratified k-fold grid search over C (scikit-learn only).
* :mod:`.search`: what a grid search finds, whichever solver ran it; folds and the CV table.
* :mod:`.kernel`: the SVM solved from one precomputed Gram matrix, kept as primal weights.
* :mod:`.primal`: the SVM as ``LinearSVC`` in ``GridSearchCV``.
* :mod:`.solver`: which of the two runs a grid faster, measured on a sample.
* :mod:`.convergence`: LinearSVC fits that stop at ``max_iter``, counted in the workers.
* :mod:`.combine`: several layers as one feature set, each l2-normalised first.
* :mod:`.steps`: the signed square root of ``--scale power``.
* :mod:`.head`: a torch linear/MLP head written as a scikit-learn estimator.
* :mod:`.pca`: explained variance, components for 90/95/99 %.
* :mod:`.study`: SVM accuracy and training time per layer.
* :mod:`.zeroshot`: ImageNet logits restricted to a mapping of target classes.
* :mod:`.persist`: saving without pickle (skops, safetensors) and loading classifiers.
* :mod:`.predict`: a saved classifier applied to new images.
* :mod:`.report`: figures (PNG, with their data as JSON) and result JSON.

Nothing heavy is imported here: scikit-learn, torch and matplotlib load inside the functions
that need them.
"""
