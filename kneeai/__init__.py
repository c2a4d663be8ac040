"""Train, evaluate and explain classifiers of knee and musculoskeletal lesions (MRNet MRI, DICOM radiographs) with fastai

Modules:

- `kneeai.all`: Everything public in kneeai in one import, as `fastai.vision.all` does: `from kneeai.all import *`.
- `kneeai.app`: A Streamlit app for a trained kneeai model: upload an MRNet exam, DICOM radiographs or images, and see the per-task probabilities with the model's thresholds, GradCAM overlays and the DICOM metadata; download the result.
- `kneeai.cli`: The `kneeai` command: one entry point whose subcommands (train, predict, preprocess, synth, demo, app) call the same functions a notebook would.
- `kneeai.interpret`: GradCAM and GradCAM++ for MRNet volumes and 2-D radiograph models: a heatmap for every slice, the slices that drive the prediction ranked, overlays, and checks that the maps point at the lesion.
- `kneeai.pretrain`: Metadata pretraining from DICOM tags and self-supervised (SimCLR, BYOL) pretraining on unlabelled images, and the transfer of the pretrained body into kneeai's radiograph and MRNet learners.
- `kneeai.semisup`: MixMatch and FixMatch as fastai callbacks that learn from an unlabelled DataLoader alongside the labelled one, an EMA of the weights for evaluation, and a label-efficiency comparison of kneeai's ways to learn from few labels."""

__version__ = "0.1.0"
