"""The MobileNetV2-class int8 DSP network of ``superopt.kernels.dsp_models`` as a lazy Tensor
graph (``dsp_models.lazy``), realized once and checked against the numpy reference, for
``superopt capture``. ``python dsp_mobilenetv2.py small`` runs the tests' 16x16 network;
``openpilot`` the openpilot-style stack."""
import sys

import numpy as np

from superopt.kernels import dsp_models as dm

args = sys.argv[1:]
NET = dm.NETS["openpilot_stack" if "openpilot" in args else "mobilenet_v2"](small="small" in args)
X = dm.image(NET)
RESULT = dm.lazy(NET, X).numpy().reshape(NET.shape(len(NET.layers) - 1))
print(NET.name, RESULT.shape, "exact", bool(np.array_equal(RESULT, dm.forward(NET, X)[-1])))
