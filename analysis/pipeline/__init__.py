"""The map-level analysis pipeline: reduced frames of a map → results → experiment products.

One code path for live and offline analysis::

    params = AnalysisParameters(families=load_families("families.toml"))
    reduction = compile_reduction(params.reduction_plan(), geometry)  # once per geometry
    experiment = ExperimentAnalysis(layout, params, metadata={"run_uid": uid})
    for index, frames in enumerate(maps):                         # in time order
        result = analyze_map(reduction.reduce(frames), layout, params,
                             map_index=index, time_s=mid_map_time_s)
        experiment.add_map(result, electrochem={"potential_v": 4.1})
    products = experiment.products()                              # → write_products / Tiled

`analyze_files` does the same from HDF5 files with dask (see ``opmap analyze``), reducing
each map's frames with a `FrameReducer` (threads or a ``dask.distributed`` cluster).
"""

from ._experiment import ExperimentAnalysis
from ._files import analyze_files, default_output_path, read_map_times_s
from ._inputs import check_output_path, load_map_times_s, load_mask_file
from ._layout import MapLayout
from ._map import MapAnalysis, MapResult, analyze_map
from ._params import AnalysisParameters, CalibrationTable, load_parameters
from ._reducer import FrameReducer
from ._sampling import SamplingCorrection, sampling_correction

__all__ = [
    "AnalysisParameters",
    "CalibrationTable",
    "ExperimentAnalysis",
    "FrameReducer",
    "MapAnalysis",
    "MapLayout",
    "MapResult",
    "SamplingCorrection",
    "analyze_files",
    "analyze_map",
    "check_output_path",
    "default_output_path",
    "load_map_times_s",
    "load_mask_file",
    "load_parameters",
    "read_map_times_s",
    "sampling_correction",
]
