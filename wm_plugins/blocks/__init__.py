"""Generic building blocks: toy environments, generic policies, MLP/identity models, basic losses.

They let the core (collection, sampler, trainer, probes) be tested end to end in
seconds, and compose with any env whose shapes fit.
"""

from wm_framework import hookimpl, lazy


@hookimpl
def register_envs(register):
    """Toy environments with exact ground truth."""
    register("bouncing_ball", lazy("wm_plugins.blocks.envs:BouncingBallEnv"), description="A ball bouncing in a box with a paddle, drawn in pixels; labels ball_x/y, ball_vx/vy, paddle_x.")
    register("linear_state", lazy("wm_plugins.blocks.envs:LinearStateEnv"), description="A linear dynamical system with a state observation and continuous actions.")


@hookimpl
def register_policies(register):
    """Policies that work with any env."""
    register("random", lazy("wm_plugins.blocks.policies:RandomPolicy"), description="Uniform random actions from the env's action space (seeded).")
    register("sticky_random", lazy("wm_plugins.blocks.policies:StickyRandomPolicy"), description="Random actions, repeating the previous one with probability p.")


@hookimpl
def register_encoders(register):
    """Identity and MLP encoders."""
    register("identity", lazy("wm_plugins.blocks.nets:IdentityEncoder"), example={"obs_shape": (6,)})
    register("mlp", lazy("wm_plugins.blocks.nets:MLPEncoder"), example={"obs_shape": (6,), "latent_dim": 8})


@hookimpl
def register_predictors(register):
    """An MLP predictor over (latent, action) per step."""
    register("mlp", lazy("wm_plugins.blocks.nets:MLPPredictor"), example={"latent_dim": 8, "action_dim": 2})


@hookimpl
def register_losses(register):
    """MSE and Huber between prediction and target."""
    register("mse", lazy("wm_plugins.blocks.losses:MSELoss"))
    register("huber", lazy("wm_plugins.blocks.losses:HuberLoss"))
