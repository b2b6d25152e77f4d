"""Home: what label-free explainability is, what is available here, and how to get the rest.

The title, the introduction and the page links need no engine: they are drawn first, then the engine loads
under a spinner (seconds on the first visit after the server starts; nothing on later visits), then the tables.
"""
from __future__ import annotations

import streamlit as st

from lfx_ui import router

router.ensure_routed()

st.title("LFX Explorer")
st.markdown(
    """
**Label-free explainability** explains encoders, whose output is a latent vector with no label.
For an input *x*, it explains the scalar *g*ₓ(x̃) = ⟨f(x), f(x̃)⟩ with any attribution method (captum), so
pixels or time steps get an importance score without a class to explain.
Training examples are ranked the same way: by distances in latent space (DKNN, cosine, SimplEx) or by the
encoder's pretext-loss gradients (TracIn, Influence Functions).
Method: Crabbé & van der Schaar, ICML 2022; reproduction: Papp, Wagenbach, Jans de Vries & Mather, MLRC 2022.
"""
)
st.subheader("Start exploring")
links = st.columns(3)
links[0].page_link("pages/saliency.py", label="Saliency: which pixels or time steps matter",
                   icon=":material/local_fire_department:")
links[1].page_link("pages/masking.py", label="Masking shift: do the maps find what moves f(x)?",
                   icon=":material/trending_down:")
links[2].page_link("pages/examples.py", label="Top examples: which training inputs matter", icon=":material/extension:")
st.page_link("pages/glossary.py", label="Glossary: every method, control and metric in plain words",
             icon=":material/menu_book:")

with st.spinner("Loading the engine and the model catalogue: a few seconds on the first visit after the server "
                "starts…"):
    import pandas as pd
    import torch

    from lfx_engine.config import checkpoint_dir, data_dir, study_dir
    from lfx_engine.data.fetch import fetch
    from lfx_ui.engine import get_explorer, user_errors
    from lfx_ui.tables import fill_missing

    explorer = get_explorer()
    models = explorer.models()
if not models:
    st.warning("No trained model was found, so the views have nothing to explain yet. Train the first one "
               "(a few minutes on a CPU, CUDA is used when present):")
    st.code("python -m lfx_engine train mnist_dae_consistency", language="bash")

device = explorer.device
where = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
st.info(f"Running on **{device.type.upper()}**{where} · torch threads: {torch.get_num_threads()}",
        icon=":material/memory:")

st.subheader("Datasets")
rows = explorer.dataset_status()
per_dataset = pd.Series([m.dataset for m in models], dtype=object).value_counts()
table = pd.DataFrame([{"dataset": r["title"], "status": r["status"], "input shape": "×".join(map(str, r["input_shape"])) if r["input_shape"] else "—",
                       "classes": r["classes"], "trained models": int(per_dataset.get(r["dataset"], 0)),
                       "problem": r["problem"]} for r in rows])
st.dataframe(fill_missing(table), hide_index=True, width="stretch")
st.caption(f"Data folder: `{data_dir()}` (set `LFX_DATA_DIR` to change it).")
missing = [r for r in rows if r["status"] != "present"]
for row in missing:
    with st.expander(f"How to get {row['title']}", expanded=len(missing) == len(rows)):
        st.markdown(f"Looked for: `{'`, `'.join(row['paths'])}`. Download it (needs internet) with:")
        st.code(row["fetch_command"], language="bash")
        st.caption("or point `LFX_DATA_DIR` at a folder that holds the files.")
        st.button(f"Fetch {row['title']} now", key=f"fetch_{row['dataset']}",
                  on_click=lambda name=row["dataset"]: st.session_state.update(home_fetch=name))
        if st.session_state.get("home_fetch") == row["dataset"]:
            st.session_state.pop("home_fetch")
            with user_errors(), st.spinner(f"Downloading {row['title']}…"):
                fetch(row["dataset"])
                st.success(f"{row['title']} downloaded.")

user_models = [m for m in models if m.source not in ("zoo", "study")]
study_models = [m for m in models if m.source == "study"]
problems = explorer.model_problems()
if user_models or problems or explorer.catalogue.projects:
    st.subheader("Your models")
    if user_models:
        st.dataframe(fill_missing(pd.DataFrame([{"model": m.name, "title": m.title, "dataset": m.dataset,
                                                 "kind": m.task, "latent dim": m.latent_dim,
                                                 "from": m.record.get("project", m.source)}
                                                for m in user_models])), hide_index=True, width="stretch")
    if problems:
        st.error(f"{len(problems)} entr{'y' if len(problems) == 1 else 'ies'} of your project cannot be used; the "
                 "rest work. What to fix:", icon=":material/error:")
        st.dataframe(fill_missing(pd.DataFrame(problems)), hide_index=True, width="stretch")
    st.caption("Project files come from `LFX_PROJECT` (`lfx serve lfx.toml` sets it); `lfx check lfx.toml` "
               "validates one.")

st.subheader("Pretrained models")
models = [m for m in models if m.source == "zoo"]
if models:
    model_rows = []
    for m in models:
        rec = m.record
        model_rows.append({"model": m.name, "dataset": m.dataset, "experiment": m.experiment, "task": m.task,
                           "β": m.beta, "latent dim": m.latent_dim, "epochs": rec.get("epochs_trained"),
                           "held-out loss": rec.get("best_val_loss"), "test loss": rec.get("test_loss"),
                           "accuracy": rec.get("test_accuracy"),
                           "TracIn checkpoints": len(rec.get("tracin_checkpoints", []) or []),
                           "full recipe": rec.get("full_recipe", True)})
    st.dataframe(fill_missing(pd.DataFrame(model_rows)), hide_index=True, width="stretch")
else:
    st.warning("No trained model found in the checkpoint folder.")
st.caption(f"Checkpoint folder: `{checkpoint_dir()}` (set `LFX_CHECKPOINT_DIR` to change it).")
if study_models:
    st.subheader("The reproduction study's models")
    st.dataframe(pd.DataFrame([{"model": m.name, "dataset": m.dataset, "experiment": m.experiment, "task": m.task,
                                "β": m.beta, "run": m.run, "latent dim": m.latent_dim,
                                "original file": (m.record.get("study") or {}).get("path", "")}
                               for m in study_models]).pipe(fill_missing), hide_index=True, width="stretch")
    st.caption(f"Imported from the study's repository with `lfx zoo import-study` into `{study_dir()}` "
               "(`LFX_STUDY_DIR`); every page offers them beside ours, named `study_…`.")
else:
    st.caption("The reproduction study's own GPU-trained models can be added: clone "
               "https://github.com/jwagenbach/FACT and run `lfx zoo import-study PATH`.")
todo = explorer.untrained()
if todo:
    with st.expander(f"{len(todo)} zoo entries are not trained here — how to train them"):
        st.markdown("Train one entry, a group (glob, quoted) or every shipped entry (CUDA is used when present):")
        first = todo[0]
        st.code(f"python -m lfx_engine train {first}\n"
                f"python -m lfx_engine train '{first.split('_')[0]}_*'\n"
                "python -m lfx_engine train all --skip-existing", language="bash")
        st.write(", ".join(todo))
