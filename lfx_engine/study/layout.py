"""Which file of the reproduction study's repository is which model (its FACT layout).

The study's repository (``jwagenbach/FACT``) keeps its trained models under
``results/<dataset>/<experiment>/`` and ``TrainedModels/MNIST/``. Every file is
mapped to one of our architectures and to the zoo's fields (dataset,
experiment, task, β, run), under a name prefixed ``study_`` so it never clashes
with our own zoo. Run numbers are the study's own: pretext runs 0–4, VAE runs
1–5. ``TrainedModels-2023-01-19/`` is the layout of the classifiers as first
committed (commit ``6dcbc1c``), before their final Softmax was removed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lfx_engine.catalogue import STUDY_PREFIX

#: The classifiers' first commit, whose files still ended in Linear + Softmax.
FIRST_CLASSIFIER_COMMIT = "6dcbc1ca63e9b684fc39984b56687eefb61f1ce2"
FIRST_CLASSIFIER_FOLDER = "TrainedModels-2023-01-19"

PRETEXT_TASKS = {"Reconstruction-ae": "reconstruction", "Denoising-ae": "denoising",
                 "Inpainting-ae": "inpainting", "Classifier": "classification"}
VAE_LOSSES = {"Beta-vae": "betavae", "TC-vae": "btcvae"}
#: dataset → (folder under results/, AE arch, classifier arch, VAE arch, VAE latent size)
DATASETS: dict[str, tuple[str, str, str, str, int]] = {
    "mnist": ("results/mnist", "mnist_ae", "mnist_classifier", "vae_mnist32", 3),
    "dsprites": ("results/dsprites", "", "", "vae_dsprites", 6),
    "ecg5000": ("results/ecg5000", "ecg_lstm_ae", "", "", 0),
    "cifar10": ("results/cifar_vs_mnist/cifar10", "cifar_ae", "cifar_classifier", "vae_cifar", 16),
    "cifar100": ("results/cifar_vs_mnist/cifar100", "cifar_ae", "cifar_classifier", "vae_cifar", 16),
}
LATENT = {"mnist": 4, "ecg5000": 64, "cifar10": 16, "cifar100": 16}
N_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100}


@dataclass(frozen=True)
class StudyFile:
    """One model file of the study's layout and the zoo record it becomes."""

    path: str                       # relative to the repository root, POSIX
    name: str                       # our catalogue name (study_…)
    arch: str
    dataset: str
    experiment: str                 # consistency | pretext | disvae | encoder_vs_full
    task: str
    run: int
    latent_dim: int
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    beta: float | None = None
    variant: str = ""               # "" or "2023-01-19" (classifiers with the Softmax head)
    json_path: str = ""             # metadata file next to it (TrainedModels classifiers)


def _kwargs(arch: str, dataset: str, task: str, latent: int) -> dict[str, Any]:
    if arch in ("mnist_ae", "cifar_ae"):
        return {"latent_dim": latent, "pretext": task}
    if arch in ("mnist_classifier", "cifar_classifier"):
        return {"latent_dim": latent, "n_classes": N_CLASSES[dataset]}
    return {"latent_dim": latent}


def expected_files() -> list[StudyFile]:
    """Every model file the study's repository holds at HEAD (plus the first classifier commit's folder)."""
    out: list[StudyFile] = []
    for dataset, (folder, ae, clf, vae, vae_d) in DATASETS.items():
        if ae:
            task = "reconstruction" if dataset == "ecg5000" else "denoising"
            for part in ("features", "examples"):
                tag = "lstm_ae" if dataset == "ecg5000" else "dae"
                out.append(StudyFile(f"{folder}/consistency_{part}/model.pt", f"{STUDY_PREFIX}{dataset}_{tag}_consistency_{part}",
                                     ae, dataset, "consistency", task, 1, LATENT[dataset],
                                     _kwargs(ae, dataset, task, LATENT[dataset])))
        if clf:
            for prefix, task in PRETEXT_TASKS.items():
                arch = clf if task == "classification" else ae
                for run in range(5):
                    out.append(StudyFile(f"{folder}/pretext/{prefix}_run{run}.pt",
                                         f"{STUDY_PREFIX}{dataset}_pretext_{task}_run{run}", arch, dataset, "pretext", task,
                                         run, LATENT[dataset], _kwargs(arch, dataset, task, LATENT[dataset])))
        if vae:
            for prefix, loss in VAE_LOSSES.items():
                for beta in (1, 5, 10):
                    for run in range(1, 6):
                        out.append(StudyFile(f"{folder}/vae/{prefix}_beta{beta}_run{run}.pt",
                                             f"{STUDY_PREFIX}{dataset}_{loss}_b{beta}_run{run}", vae, dataset, "disvae", loss,
                                             run, vae_d, {"latent_dim": vae_d}, beta=float(beta)))
    for folder, variant, suffix in (("TrainedModels", "", ""), (FIRST_CLASSIFIER_FOLDER, "2023-01-19", "_20230119")):
        for run in range(5):
            out.append(StudyFile(f"{folder}/MNIST/Classifier_run{run}.pt", f"{STUDY_PREFIX}mnist_evf_classifier{suffix}_run{run}",
                                 "mnist_classifier", "mnist", "encoder_vs_full", "classification", run, 4,
                                 {"latent_dim": 4, "n_classes": 10}, variant=variant,
                                 json_path=f"{folder}/MNIST/Classifier_run{run}.json"))
    return out
