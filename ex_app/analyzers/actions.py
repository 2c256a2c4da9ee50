"""Human actions in a video: MoViNet (Kinetics-600, TFLite) over short clips of its frames.

MoViNet's stream models (TF Hub's ``movinet/a0/stream/kinetics-600/classification/tflite``) take
one frame per call: ``image`` [1, 1, H, W, 3] float32 RGB in [0, 1], plus every state tensor the
previous call returned (zeros to begin with); the ``logits`` [1, 600] after the clip's last
frame judge the whole clip. Base models take the clip at once, [1, T, H, W, 3]. Everything but
these names is read from the model's signature: the frame size, how many frames a call takes,
the state tensors with their shapes and types, and whether the image input is quantized.
Frames are centre-cropped to the input's aspect ratio and resized (the model was trained on
centre crops). Clips are judged separately, from fresh states, and their probabilities averaged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ex_app.analyzers.pipeline import Media, Pipeline
from ex_app.analyzers.results import Label
from ex_app.config import ACTIONS_PATH
from ex_app.media.video import clip_starts, read_clip
from ex_app.models.quantization import dequantize, quantize, softmax
from ex_app.tagging.rules import LabelIdFormat, TagRules

KINETICS_LABEL_IDS = LabelIdFormat(
    re.compile(r"k600:\S.*"), "a Kinetics-600 class with its prefix, like k600:playing guitar")
IMAGE_INPUT = "image"  # the signature's frame input; every other input is a state
LOGITS_OUTPUT = "logits"


def load_kinetics_labels(path: Path) -> list[str]:
    """Class names, one a line, in the model's output order (kinetics_600_labels.txt)."""
    labels = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [label for label in labels if label]


def prepare_frame(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """An RGB uint8 frame as the model's input: the centred crop of the input's aspect ratio,
    resized to height × width, float32 in [0, 1]."""
    frame_height, frame_width = pixels.shape[:2]
    crop_width = min(frame_width, round(frame_height * width / height))
    crop_height = min(frame_height, round(frame_width * height / width))
    left, top = (frame_width - crop_width) // 2, (frame_height - crop_height) // 2
    image = Image.fromarray(pixels[top:top + crop_height, left:left + crop_width])
    resized = image.resize((width, height), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(resized, dtype=np.float32) / 255.0


class ActionRecognizer:
    """A MoViNet TFLite model and its labels: frames of clips in, Kinetics actions out."""

    def __init__(self, model_path: Path, labels: list[str], threads: int = 1, top_k: int = 5,
                 min_score: float = 0.0):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
        signatures = interpreter.get_signature_list()
        if not signatures:
            raise ValueError(f"{Path(model_path).name}: no signature; not a MoViNet TFLite model")
        self._run = interpreter.get_signature_runner(next(iter(signatures)))
        inputs = self._run.get_input_details()
        outputs = self._run.get_output_details()
        if IMAGE_INPUT not in inputs or LOGITS_OUTPUT not in outputs:
            raise ValueError(f"{Path(model_path).name}: expected inputs with {IMAGE_INPUT!r} and "
                             f"outputs with {LOGITS_OUTPUT!r}, got {sorted(inputs)} and "
                             f"{sorted(outputs)}")
        self._image = inputs[IMAGE_INPUT]
        shape = [int(side) for side in self._image["shape"]]
        if len(shape) != 5 or shape[0] != 1 or shape[4] != 3:
            raise ValueError(f"image input {shape}: expected [1, frames, height, width, 3]")
        self.frames_per_call, self.height, self.width = shape[1], shape[2], shape[3]
        self._states = {name: detail for name, detail in inputs.items() if name != IMAGE_INPUT}
        missing = sorted(set(self._states) - set(outputs))
        if missing:
            raise ValueError(f"state inputs without a matching output: {missing}")
        classes = int(np.prod(outputs[LOGITS_OUTPUT]["shape"]))
        if classes != len(labels):
            raise ValueError(f"the model has {classes} classes, the label file {len(labels)}")
        self._logits = outputs[LOGITS_OUTPUT]
        self.labels, self.top_k, self.min_score = labels, top_k, min_score

    @property
    def streaming(self) -> bool:
        """Whether the model carries state from call to call (a stream model)."""
        return bool(self._states)

    def clip_inputs(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """The image tensors fed for one clip, call by call, as the model's input type."""
        prepared = np.stack([prepare_frame(frame, self.height, self.width) for frame in frames])
        if not self.streaming:  # one call: the clip resampled to the frames the model takes
            pick = np.linspace(0, len(prepared) - 1, self.frames_per_call).round().astype(int)
            prepared = prepared[pick]
        step = self.frames_per_call
        return [quantize(prepared[start:start + step][None], self._image)
                for start in range(0, len(prepared) - step + 1, step)]

    def clip_probabilities(self, frames: list[np.ndarray]) -> np.ndarray:
        """Softmax over the classes after streaming the clip's frames through the model."""
        if not frames:
            raise ValueError("a clip needs at least one frame")
        states = {name: np.zeros(d["shape"], dtype=d["dtype"]) for name, d in self._states.items()}
        logits = None
        for image in self.clip_inputs(frames):
            outputs = self._run(**states, **{IMAGE_INPUT: image})
            logits = outputs[LOGITS_OUTPUT]
            states = {name: outputs[name] for name in self._states}
        return softmax(dequantize(np.asarray(logits).reshape(-1), self._logits))

    def recognize(self, clips: list[list[np.ndarray]]) -> list[Label]:
        """The top actions over the clips (probabilities averaged), best first."""
        clips = [clip for clip in clips if clip]
        if not clips:
            return []
        probabilities = np.mean([self.clip_probabilities(clip) for clip in clips], axis=0)
        best = np.argsort(probabilities)[::-1][: self.top_k]
        return [Label(f"k600:{self.labels[i]}", self.labels[i], float(probabilities[i]))
                for i in best if probabilities[i] >= self.min_score]


def build(pipeline: Pipeline) -> Callable:
    s = pipeline.settings.actions
    labels = load_kinetics_labels(pipeline.models.path("kinetics600_labels"))
    recognizer = ActionRecognizer(pipeline.models.path("movinet_a0_stream"), labels,
                                  pipeline.settings.inference.threads, s.top_k, s.min_score)
    rules = TagRules.load(ACTIONS_PATH, KINETICS_LABEL_IDS)
    timeout = pipeline.settings.video.decode_timeout_seconds

    def analyze(media: Media, result) -> list[str]:
        info = media.video_info
        clips = [[frame.pixels for frame in read_clip(media.path, info, start, s.clip_seconds,
                                                      s.fps, s.max_side, timeout)]
                 for start in clip_starts(info.duration, s.clips, s.clip_seconds)]
        return rules.tags_for((label.id, label.score) for label in recognizer.recognize(clips))

    return analyze
