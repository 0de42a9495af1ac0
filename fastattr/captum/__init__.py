"""captum-compatible attribution on fastattr's engine: change the import, keep the code.

    from fastattr.captum import IntegratedGradients, NoiseTunnel, Saliency  # was: from captum.attr import ...

Constructors, `attribute(...)` signatures and defaults, return values (tensor or tuple, deltas) and
exception types follow captum 0.9. See the README section "Switching from captum".
"""
from fastattr.captum.gradient_shap import GradientShap
from fastattr.captum.guided_backprop import GuidedBackprop
from fastattr.captum.input_x_gradient import InputXGradient
from fastattr.captum.integrated_gradients import IntegratedGradients
from fastattr.captum.noise_tunnel import NoiseTunnel
from fastattr.captum.saliency import Saliency

__all__ = ["GradientShap", "GuidedBackprop", "InputXGradient", "IntegratedGradients", "NoiseTunnel", "Saliency"]
