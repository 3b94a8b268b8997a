"""Training callbacks, one per file, each configurable from YAML with its state saved in checkpoints."""

from callbacks.animator_export import AnimatorExport
from callbacks.clip_writer import ClipWriter
from callbacks.evaluation_report import EvaluationReport
from callbacks.gradient_clipping import GradientNormClipping
from callbacks.lr_schedule import LRSchedule
from callbacks.memory_monitor import MemoryMonitor
from callbacks.random_state import RandomState
from callbacks.run_progress import RunProgress
from callbacks.sample_grid import SampleGrid

__all__ = ["AnimatorExport", "ClipWriter", "EvaluationReport", "GradientNormClipping", "LRSchedule", "MemoryMonitor", "RandomState", "RunProgress", "SampleGrid"]
