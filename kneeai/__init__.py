"""Train, evaluate and explain classifiers of knee and musculoskeletal lesions (MRNet MRI, DICOM radiographs) with fastai

Modules:

- `kneeai.cli`: The `kneeai` command: one entry point whose subcommands (train, predict, preprocess, synth, demo, app) call the same functions a notebook would.
- `kneeai.train`: Learner factories and training recipes for MRNet models, threshold tuning on held-out exams, fast head training on cached features, and saving models as safetensors with a JSON config that loads without unpickling."""

__version__ = "0.1.0"
