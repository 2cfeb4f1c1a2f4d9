"""GPT ensemble state world model (nanoGPT blocks, K members in one forward) + the ARX5 delta sweep.

Registers: encoder `state_norm`, predictor `gpt_ensemble`, loss `ensemble_mse`, stage
`arx5_sweep_report`. Torch is imported only inside the factories.
"""

from wm_framework import hookimpl, lazy


def make_state_norm(obs_shape: tuple | list = (14,), state_stats: dict | None = None):
    """Normalise the raw state with training-split statistics (out_dim = state dim).

    Args:
        obs_shape: per-frame state shape (D,); passed by the core.
        state_stats: {"mean", "std"} of the training split; passed by the core.
    """
    from wm_plugins.gpt_state.predictor import StateNormEncoder

    return StateNormEncoder(obs_shape=obs_shape, state_stats=state_stats)


def make_gpt_ensemble(
    latent_dim: int = 14,
    action_dim: int = 7,
    n_actions: int = 7,
    history: int = 32,
    n_layer: int = 6,
    n_head: int = 12,
    n_embd: int = 384,
    ensemble_size: int = 2,
    dropout: float = 0.0,
    action_representation: str = "absolute",
    state_prediction_mode: str = "absolute",
    context_noise: float = 0.05,
    context_noise_ramp_steps: int = 50_000,
    state_stats: dict | None = None,
    action_stats: dict | None = None,
):
    """nanoGPT ensemble over (state, action) tokens predicting the next state (or its delta).

    Args:
        latent_dim: state dim (core-passed: the encoder's out_dim).
        action_dim: action block width per frame (core-passed).
        n_actions: joints commanded per raw step (core-passed).
        history: context steps (positional embeddings); 32.
        n_layer: transformer blocks.
        n_head: attention heads.
        n_embd: width.
        ensemble_size: members K, one batched forward; output [B, T, K, D].
        dropout: dropout probability.
        action_representation: "absolute" (a_t) or "delta" (a_t - q_t).
        state_prediction_mode: "absolute" (s_{t+1}) or "delta" (s_{t+1} - s_t).
        context_noise: final std of the input noise while training (normalised units).
        context_noise_ramp_steps: linear ramp length of that noise, in steps.
        state_stats: training-split state statistics (core-passed).
        action_stats: training-split action statistics (core-passed).
    """
    from wm_plugins.gpt_state.predictor import GPTEnsemblePredictor

    return GPTEnsemblePredictor(
        latent_dim=latent_dim, action_dim=action_dim, n_actions=n_actions, history=history, n_layer=n_layer,
        n_head=n_head, n_embd=n_embd, ensemble_size=ensemble_size, dropout=dropout,
        action_representation=action_representation, state_prediction_mode=state_prediction_mode,
        context_noise=context_noise, context_noise_ramp_steps=context_noise_ramp_steps,
        state_stats=state_stats, action_stats=action_stats)


def make_ensemble_mse():
    """MSE averaged over members: pred [B,T,K,D] vs target [B,T,D] or [B,T,K,D]."""
    from wm_plugins.gpt_state.predictor import ensemble_mse

    return ensemble_mse


@hookimpl
def register_encoders(register):
    """State normaliser."""
    register("state_norm", make_state_norm)


@hookimpl
def register_predictors(register):
    """GPT ensemble."""
    register("gpt_ensemble", make_gpt_ensemble)


@hookimpl
def register_losses(register):
    """Ensemble MSE."""
    register("ensemble_mse", make_ensemble_mse)


@hookimpl
def register_stages(register):
    """ARX5 sweep report."""
    register("arx5_sweep_report", lazy("wm_plugins.gpt_state.report:make_sweep_report"), config=lazy("wm_plugins.gpt_state.report:SweepReportConfig"),
             description="export, fingerprint and compare the ARX5 delta-sweep configs in one common space")
