"""edgetune: run a frozen int8 backbone and train small adapters beside it.

A thin layer over the Rust library's ``edgetune::Session``. What an example ``x`` is:

- ``os.PathLike`` (``pathlib.Path``): a file of the plan's kind (image, 16 kHz WAV, text);
- ``str``: a file path on image and audio plans, the text itself on text plans;
- ``numpy.uint8`` array ``HxW``, ``HxWx1`` or ``HxWx3``: a grey or RGB image;
  ``HxWx4``: RGBA;
- 1-D ``numpy.int16`` array: 16 kHz mono audio; 1-D ``numpy.float32``: the same in -1..1;
- list or tuple of ``numpy.float32`` arrays: the plan's input tensors, already prepared;
- ``StreamExample``: what ``Session.listen`` made of a stream.
"""

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str
METHODS: List[str]
"""ncm, linear, moment, ladder, query, tail, bias, lora."""

class StreamExample:
    """An example made from a stream by ``Session.listen`` (its taps, computed once)."""

Example = Union[str, "os.PathLike[str]", npt.NDArray[np.uint8], npt.NDArray[np.int16],
                npt.NDArray[np.float32], Sequence[npt.NDArray[np.float32]], StreamExample]

class EdgetuneError(ValueError):
    """Every error of the library; the message is the library's."""

class Session:
    def __init__(
        self,
        plan: Union[str, "os.PathLike[str]"],
        adapter: Optional[Union[str, "os.PathLike[str]"]] = None,
        method: Optional[str] = None,
        *,
        seed: int = 0,
        augment: int = 0,
        serve: str = "float",
        max_memory: Optional[int] = None,
    ) -> None:
        """Opens a plan (method ``linear`` unless ``method`` is given); ``adapter`` loads a
        trained adapter, whose method and classes take over. ``serve="int8"`` serves
        trained tails re-quantised to int8; ``max_memory`` refuses fits whose peak would
        pass it (bytes)."""
    def set_method(self, name: str) -> None: ...
    @property
    def method(self) -> str: ...
    def set_seed(self, seed: int) -> None: ...
    def listen(self, pcm: Union[npt.NDArray[np.int16], npt.NDArray[np.float32]]) -> List[StreamExample]:
        """Streaming audio (plans compiled with ``preprocess="audio:oww:FRAMES:CONTEXT"``):
        feeds 16 kHz samples (int16, or float32 in -1..1), any length, and returns the
        examples completed, one every 80 ms once CONTEXT windows are in."""
    def listen_reset(self) -> None:
        """Forgets the stream being listened to."""
    def enrol(self, x: Example, label: str) -> None:
        """Runs x through the backbone and caches what the method reads, under label."""
    def enrol_many(self, xs: list[Example], labels: list[str]) -> None:
        """enrol for many examples at once, xs[i] under labels[i]: one per thread through
        the backbone, cached in their order; all or nothing."""
    def add_unlabeled(self, x: Example) -> None:
        """Runs x through the backbone and caches what the method reads, without a label:
        at the next fit ncm refines its prototypes, linear and moment self-train; the other
        methods refuse to fit while unlabeled examples are kept."""
    @property
    def unlabeled(self) -> int:
        """Unlabeled examples kept for the next fit."""
    def clear_unlabeled(self) -> None:
        """Forgets every unlabeled example."""
    def choose_method(
        self,
        candidates: Optional[Sequence[str]] = None,
        folds: int = 5,
        budget_s: Optional[float] = None,
        max_memory: Optional[int] = None,
    ) -> dict:
        """Chooses the method and its C on the enrolled examples alone (leave-one-example-out
        folds) and makes it the method of the next fit, the lowest held-out log-loss: method,
        c, unlabeled, accuracy and log_loss (held out), why, trials [(name, accuracy or
        None, log-loss or None, note)]."""
    def fit(
        self,
        method: Optional[str] = None,
        steps: Optional[int] = None,
        progress: Optional[Callable[[int, int, float, float], Optional[bool]]] = None,
    ) -> Dict[str, object]:
        """Trains on everything enrolled. progress(step, steps, loss, accuracy) returning
        False cancels (EdgetuneError "training cancelled at step N"); an exception it
        raises cancels and is raised again. Returns method, params, steps, examples,
        cache_bytes, adapter_bytes, peak_bytes, loss, accuracy."""
    def predict(self, x: Example, top: int = 3) -> List[Tuple[str, float]]:
        """The top best classes of x, best first."""
    def scores(self, x: Example) -> npt.NDArray[np.float32]:
        """Every class's score, in the order of classes."""
    def save(self, path: Union[str, "os.PathLike[str]"]) -> None: ...
    def export_onnx(
        self, onnx_path: Union[str, "os.PathLike[str]"], out_path: Union[str, "os.PathLike[str]"]
    ) -> None: ...
    def load_adapter(self, path: Union[str, "os.PathLike[str]"]) -> None: ...
    def add_class(self, name: str, examples: Sequence[Example]) -> None: ...
    def remove_class(self, name: str) -> None: ...
    @property
    def classes(self) -> List[str]: ...
    @property
    def examples(self) -> int: ...
    @property
    def cached(self) -> int: ...
    @property
    def taps(self) -> List[str]: ...
    @property
    def serves_int8(self) -> bool: ...
    def memory(self, rows: Optional[int] = None) -> Dict[str, int]:
        """cache_bytes, arena_bytes, peak_bytes of a fit, before anything is allocated."""

def compile(
    onnx_path: Union[str, "os.PathLike[str]"],
    out_path: Union[str, "os.PathLike[str]"],
    inputs: Optional[Dict[str, List[int]]] = None,
    taps: Union[None, str, List[str]] = None,
    preprocess: Optional[str] = None,
    mel_filters: Optional[Union[str, "os.PathLike[str]"]] = None,
    tokenizer: Optional[Union[str, "os.PathLike[str]"]] = None,
) -> Dict[str, object]:
    """Compiles an ONNX model into a plan; returns path, ops, bytes, taps."""

def eval(
    plan_path: Union[str, "os.PathLike[str]"],
    data_dir: Union[str, "os.PathLike[str]"],
    ways: int,
    shots: int,
    episodes: int,
    methods: Optional[List[str]] = None,
    seed: int = 0,
) -> List[Dict[str, object]]:
    """Few-shot episodes on data_dir/<class>/*: per method, accuracy, std, episodes, ..."""
