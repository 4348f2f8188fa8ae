"""The application built on the library: what the `tfkd` command and the
recipes run, apart from the distillation toolkit itself.

- `tfkd.app.demo`: the demo (`tfkd demo`);
- `tfkd.app.experiment`: the steps the demo and the recipes share (data
  settings, baselines, accuracy, teachers trained once);
- `tfkd.app.runs`: run folders (`tfkd_runs/demo-N`, `--out`, `--overwrite`);
- `tfkd.app.reporting`: run records and their summary tables;
- `tfkd.app.plots`: training curves, feature maps and accuracy charts.

Nothing in the library (`tfkd.distillers`, `tfkd.terms`, `tfkd.losses`,
`tfkd.models`, `tfkd.data`, `tfkd.export`, `tfkd.tuning`) imports these
modules. Each is imported on first use (`tfkd.app.plots`).
"""

from tfkd import _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__)
