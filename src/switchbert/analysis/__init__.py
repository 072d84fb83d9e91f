"""Looking inside a trained model: routes (paper Fig. 4), FLOPs along routes (Table 7), training dynamics.

Modules, one concept each:
    routes   RouteCollector / collect_routes -> RouteStats; route_probability_log for training logs
    flops    analytic FLOPs of one sample along its route (paper-style and fused), baselines, run totals
    plots    the route diagram, frequency bars, training-dynamics curves (matplotlib, Agg)
    report   routes.md + routes.json + PNGs for one or several tasks
    params   parameter counts of a preset, with and without pretraining heads, beside the paper's
    cli      `switchbert routes`, `switchbert flops`, `switchbert route-dynamics` (the only part that
             knows about datasets)

``plots`` and ``report`` import matplotlib; import them only when drawing.
"""

from switchbert.analysis.flops import (FlopsAccumulator, FlopsBreakdown, FlopsTally, RunFlops, default_baselines,
                                       expected_flops, fixed_flops, flops_over_run, route_flops)
from switchbert.analysis.routes import (Architecture, LayerChoice, LayerRouteStats, RouteCollector, RouteStats,
                                        collect_routes, route_probability_log)

__all__ = [
    "Architecture", "FlopsAccumulator", "FlopsBreakdown", "FlopsTally", "LayerChoice", "LayerRouteStats",
    "RouteCollector", "RouteStats", "RunFlops", "collect_routes", "default_baselines", "expected_flops",
    "fixed_flops", "flops_over_run", "route_flops", "route_probability_log",
]
