"""Train, evaluate and explain classifiers of knee and musculoskeletal lesions (MRNet MRI, DICOM radiographs) with fastai

Modules:

- `kneeai.cli`: The `kneeai` command: one entry point whose subcommands (train, predict, preprocess, synth, demo, app) call the same functions a notebook would."""

__version__ = "0.1.0"
