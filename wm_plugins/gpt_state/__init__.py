"""GPT ensemble state world model (nanoGPT blocks, K members in one forward) + the ARX5 delta sweep.

Registers: encoder `state_norm`, predictor `gpt_ensemble`, loss `ensemble_mse`, stage
`arx5_sweep_report`. Torch is imported only inside the factories.
"""

from wm_framework import hookimpl, lazy


@hookimpl
def register_encoders(register):
    """State normaliser."""
    register("state_norm", lazy("wm_plugins.gpt_state.predictor:StateNormEncoder"), example={"obs_shape": (14,)})


@hookimpl
def register_predictors(register):
    """GPT ensemble."""
    register("gpt_ensemble", lazy("wm_plugins.gpt_state.predictor:GPTEnsemblePredictor"),
             example={"latent_dim": 14, "action_dim": 7, "n_layer": 1, "n_head": 2, "n_embd": 32, "history": 8})


@hookimpl
def register_losses(register):
    """Ensemble MSE."""
    register("ensemble_mse", lazy("wm_plugins.gpt_state.predictor:make_ensemble_mse"))


@hookimpl
def register_stages(register):
    """ARX5 sweep report."""
    register("arx5_sweep_report", lazy("wm_plugins.gpt_state.report:make_sweep_report"), config=lazy("wm_plugins.gpt_state.report:SweepReportConfig"),
             description="export, fingerprint and compare the ARX5 delta-sweep configs in one common space")
