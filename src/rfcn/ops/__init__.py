"""Box and RoI operations: IoU, box coding, position-sensitive RoI pooling (paper Eq. 1) and its
deformable form (Deformable ConvNets), deformable convolution.

As in ``torchvision.ops``, the pooling operators import as functions:
``from rfcn.ops import ps_roi_pool, ps_roi_vote, deform_ps_roi_pool``. Their modules stay
reachable as ``sys.modules["rfcn.ops.ps_roi_pool"]`` (``importlib.import_module``), and ``from
rfcn.ops.ps_roi_pool import ...`` works as before.
"""

from rfcn.ops.deform_ps_roi_pool import deform_ps_roi_pool
from rfcn.ops.ps_roi_pool import ps_roi_pool, ps_roi_vote

__all__ = ["deform_ps_roi_pool", "ps_roi_pool", "ps_roi_vote"]
