"""Generic building blocks: toy environments, generic policies, MLP/identity models, basic losses.

They let the core (collection, sampler, trainer, probes) be tested end to end in
seconds, and compose with any env whose shapes fit.
"""

from wm_framework import hookimpl


@hookimpl
def register_envs(register):
    """Toy environments with exact ground truth."""
    from wm_plugins.blocks import envs

    register("bouncing_ball", envs.BouncingBallEnv, description="A ball bouncing in a box, drawn in pixels; labels ball_x/y, vx/vy.")
    register("linear_state", envs.LinearStateEnv, description="A linear dynamical system with a state observation and continuous actions.")


@hookimpl
def register_policies(register):
    """Policies that work with any env."""
    from wm_plugins.blocks import policies

    register("random", policies.RandomPolicy, description="Uniform random actions from the env's action space (seeded).")
    register("sticky_random", policies.StickyRandomPolicy, description="Random actions, repeating the previous one with probability p.")


@hookimpl
def register_encoders(register):
    """Identity and MLP encoders."""
    from wm_plugins.blocks import nets

    register("identity", nets.IdentityEncoder)
    register("mlp", nets.MLPEncoder)


@hookimpl
def register_predictors(register):
    """An MLP predictor over (latent, action) per step."""
    from wm_plugins.blocks import nets

    register("mlp", nets.MLPPredictor)


@hookimpl
def register_losses(register):
    """MSE and Huber between prediction and target."""
    from wm_plugins.blocks import losses

    register("mse", losses.MSELoss)
    register("huber", losses.HuberLoss)
